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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deep_vision.eval.homography_pairs import list_images, load_grey  # noqa: E402
from deep_vision.inference.export import export_onnx  # noqa: E402
from deep_vision.models.homography_net import HomographyNet, parameter_count  # noqa: E402

from training.common import load_trained  # noqa: E402


def plot_training(metrics_csv: Path, png: Path) -> Path:
    """Loss and validation MACE against the step, from the run's metrics.csv."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(metrics_csv.open()))
    train = [(int(r["step"]), float(r["train_mace"])) for r in rows if r.get("train_mace")]
    val = [(int(r["step"]), float(r["val_mace"])) for r in rows if r.get("val_mace")]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), lw=0.8, alpha=0.6, label="training batch MACE (augmented)")
    if val:
        ax.plot(*zip(*val), "o-", label="validation MACE (synthetic, held-out seeds)")
    ax.set_xlabel("step")
    ax.set_ylabel("mean corner error (px, 128x128 patches)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="training output folder (config.yaml, final.pt or checkpoints/)")
    parser.add_argument("--checkpoint", help="state dict to export (default: <run>/final.pt, else checkpoints/last.pt)")
    parser.add_argument("--out", default=str(ROOT / "models" / "homography.onnx"))
    parser.add_argument("--kitti", default=str(ROOT.parent / "shared" / "data" / "kitti" / "sequences" / "00" / "image_0"))
    args = parser.parse_args()
    run = Path(args.run)
    model, state, cfg = load_trained(run, args.checkpoint, HomographyNet)
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
    curve = plot_training(run / "metrics.csv", out.with_name(out.stem + "-training.png"))
    print(f"training curve: {curve}")
    print(f"exported {out} ({out.stat().st_size / 1e6:.1f} MB, sha256 {card.sha256[:12]}...) and {state_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
