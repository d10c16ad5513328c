"""Export a trained HomographyNet to models/<name>.onnx with its model card (+ the state dict).

Usage (repository root):
    .venv/bin/python training/export_homography.py --run runs/homography_cpu [--checkpoint PT] [--out models/homography.onnx]

The parity check (ONNX Runtime vs PyTorch) uses random inputs and real frame
pairs from KITTI 00 frames 100-119 (held out from training). Held-out metrics
are added to the card by ``deep-vision evaluate homography --model ... --update-card``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deep_vision.eval.homography_pairs import list_images, load_grey  # noqa: E402
from deep_vision.inference.export import export_onnx  # noqa: E402
from deep_vision.models.homography_net import HomographyNet, parameter_count  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="training output folder (config.yaml, final.pt or checkpoints/)")
    parser.add_argument("--checkpoint", help="state dict to export (default: <run>/final.pt, else checkpoints/last.pt)")
    parser.add_argument("--out", default=str(ROOT / "models" / "homography.onnx"))
    parser.add_argument("--kitti", default=str(ROOT.parent / "shared" / "data" / "kitti" / "sequences" / "00" / "image_0"))
    args = parser.parse_args()
    run = Path(args.run)
    ckpt = Path(args.checkpoint) if args.checkpoint else (run / "final.pt" if (run / "final.pt").is_file()
                                                           else run / "checkpoints" / "last.pt")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    model = HomographyNet(state["conf"])
    model.load_state_dict(state["model"])
    model.eval()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state_path = out.with_suffix(".pt")
    torch.save({"model": model.state_dict(), "conf": model.conf}, state_path)

    frames = [load_grey(p) for p in list_images(Path(args.kitti), "*.png", first=100, last=119)]
    real = model.inputs_from_frames(frames)
    spec = model.input_spec()
    train_data = "; ".join(
        f"{e['path']} ({e.get('pattern', '**/*')}" + (f", frames {e.get('first')}-{e.get('last')}" if "first" in e else "") + ")"
        for e in cfg["data"]["train"])
    card = export_onnx(
        model, model.example_inputs(), out, output_names=["offsets"], real_inputs=real,
        card_fields={
            "name": out.stem,
            "description": (f"HomographyNet ({model.conf['preset']} preset, {parameter_count(model)} parameters): "
                            "4-point homography between two grey 128x128 patches (previous, current)."),
            "model_class": "homography_net",
            "model_config": model.conf,
            "checkpoint": state_path.name,
            "training": {"command": cfg.get("command", ""), "data": train_data, "steps": int(state.get("step", 0))},
            "metrics": {"validation_mace_px": float(state["val_mace"])} if "val_mace" in state else {},
            "inputs": spec["inputs"], "outputs": spec["outputs"],
        })
    print(f"exported {out} ({out.stat().st_size / 1e6:.1f} MB, sha256 {card.sha256[:12]}...) and {state_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
