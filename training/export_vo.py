"""Export a trained DeepVO to models/<name>.onnx with its model card (+ the state dict).

Usage (repository root):
    .venv/bin/python training/export_vo.py --run runs/vo [--checkpoint PT] [--out models/vo.onnx]

The LSTM state is an explicit input/output of the graph (``h0``, ``c0`` →
``h1``, ``c1``), so the estimator carries it across frames. The parity check
(ONNX Runtime vs PyTorch) uses random inputs and consecutive real frames from
KITTI 00 frames 100-119 (held out from training). Held-out metrics are added by
``deep-vision evaluate vo --model ... --update-card``.
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
from deep_vision.models.deepvo import DeepVO, parameter_count  # noqa: E402

from training.common import load_trained  # noqa: E402


def plot_training(metrics_csv: Path, png: Path) -> Path:
    """Training loss and validation errors against the step, from the run's metrics.csv."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(metrics_csv.open()))
    loss = [(int(r["step"]), float(r["loss"])) for r in rows if r.get("loss")]
    vt = [(int(r["step"]), float(r["val_trans_m"])) for r in rows if r.get("val_trans_m")]
    vr = [(int(r["step"]), float(r["val_rot_deg"])) for r in rows if r.get("val_rot_deg")]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    if loss:
        a.plot(*zip(*loss), lw=0.8)
    a.set_yscale("log")
    a.set_xlabel("step")
    a.set_ylabel("training loss (augmented batches)")
    a.grid(alpha=0.3)
    if vt:
        b.plot(*zip(*vt), "o-", color="C0", label="translation error (m per frame pair)")
    b.set_xlabel("step")
    b.set_ylabel("m per frame pair")
    b.grid(alpha=0.3)
    if vr:
        b2 = b.twinx()
        b2.plot(*zip(*vr), "s-", color="C1", label="rotation error (deg per frame pair)")
        b2.set_ylabel("deg per frame pair")
        b2.legend(loc="upper center", fontsize=8)
    b.legend(loc="upper right", fontsize=8)
    b.set_title("validation (held-out synthetic routes)")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="training output folder (config.yaml, final.pt or checkpoints/)")
    parser.add_argument("--checkpoint", help="state dict to export (default: <run>/final.pt, else checkpoints/last.pt)")
    parser.add_argument("--out", default=str(ROOT / "models" / "vo.onnx"))
    parser.add_argument("--kitti", default=str(ROOT.parent / "shared" / "data" / "kitti" / "sequences" / "00" / "image_0"))
    args = parser.parse_args()
    run = Path(args.run)
    model, state, cfg = load_trained(run, args.checkpoint, DeepVO)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state_path = out.with_suffix(".pt")
    torch.save({"model": model.state_dict(), "conf": model.conf}, state_path)

    kitti = Path(args.kitti)
    real = model.inputs_from_frames([load_grey(p) for p in list_images(kitti, "*.png", first=100, last=119)]) \
        if kitti.is_dir() else None
    spec = model.input_spec()
    metrics = {k: float(state[k]) for k in ("val_trans_m", "val_rot_deg") if k in state}
    card = export_onnx(
        model, model.example_inputs(), out, output_names=[o["name"] for o in spec["outputs"]], real_inputs=real,
        card_fields={
            "name": out.stem,
            "description": (f"DeepVO ({model.conf['preset']} preset, {parameter_count(model)} parameters): "
                            "6-DoF motion between consecutive frames, LSTM state carried across calls."),
            "model_class": "deepvo",
            "model_config": model.conf,
            "checkpoint": state_path.name,
            "training": {"command": cfg.get("command", ""), "data": "; ".join(cfg["data"]["train"]),
                         "steps": int(state.get("step", 0))},
            "metrics": {"validation_per_pair": metrics} if metrics else {},
            "inputs": spec["inputs"], "outputs": spec["outputs"],
        })
    curve = plot_training(run / "metrics.csv", out.with_name(out.stem + "-training.png"))
    print(f"training curve: {curve}")
    print(f"exported {out} ({out.stat().st_size / 1e6:.1f} MB, sha256 {card.sha256[:12]}...) and {state_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
