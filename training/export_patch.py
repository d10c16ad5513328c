"""Export a trained PatchNet (L2-Net descriptor, optional denoiser in front) to models/<name>.onnx with its card.

Usage (repository root):
    .venv/bin/python training/export_patch.py --run runs/patch [--denoiser] [--out models/patch.onnx]

``--denoiser`` puts the U-Net in front of the descriptor inside the graph (what ships is decided by the rule in
``training/configs/patch.yaml``). The batch axis is dynamic. The parity check (ONNX Runtime vs PyTorch) uses
random patches and patches around keypoints of KITTI 00 frames 100-109 (not in the training data). Held-out
metrics are added to the card by ``deep-vision evaluate patches --model ... --update-card``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deep_vision.eval.homography_pairs import list_images, load_grey  # noqa: E402
from deep_vision.inference.export import export_onnx  # noqa: E402
from deep_vision.models.patch_net import PatchNet  # noqa: E402

from training.common import load_trained  # noqa: E402


def plot_training(metrics_csv: Path, png: Path) -> Path:
    """Loss, validation FPR95 / nearest-neighbour accuracy and the denoiser's L1 against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(metrics_csv.open()))

    def series(key: str) -> list[tuple[int, float]]:
        return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(*zip(*series("loss")), lw=0.8, label="triplet loss (batch hardest negative)")
    axes[0].set_ylabel("loss")
    axes[1].plot(*zip(*series("val_fpr95")), "o-", label="FPR at 95 % recall")
    axes[1].plot(*zip(*series("val_nn_accuracy")), "s-", label="nearest neighbour correct (of 1000)")
    axes[1].set_ylabel("validation (held-back training sequences)")
    axes[2].plot(*zip(*series("val_denoise_l1")), "o-", label="denoised")
    axes[2].plot(*zip(*series("val_noisy_l1")), "--", label="noisy input (σ 0.05)")
    axes[2].set_ylabel("L1 to the clean patch")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="training output folder (config.yaml, final.pt or checkpoints/)")
    parser.add_argument("--checkpoint", help="state dict to export (default: <run>/final.pt, else checkpoints/last.pt)")
    parser.add_argument("--denoiser", action="store_true", help="the denoising U-Net in front of the descriptor")
    parser.add_argument("--out", default=str(ROOT / "models" / "patch.onnx"))
    parser.add_argument("--kitti", default=str(ROOT.parent / "shared" / "data" / "kitti" / "sequences" / "00" / "image_0"))
    args = parser.parse_args(argv)
    run = Path(args.run)
    model, state, cfg = load_trained(run, args.checkpoint, PatchNet)
    model.conf["use_denoiser"] = bool(args.denoiser)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state_path = out.with_suffix(".pt")
    torch.save({"model": model.state_dict(), "conf": model.conf}, state_path)
    frames = [load_grey(p) for p in list_images(Path(args.kitti), "*.png", first=100, last=109)]
    spec = model.input_spec()
    n_desc = sum(p.numel() for p in model.descriptor.parameters())
    n_den = sum(p.numel() for p in model.denoiser.parameters()) if model.denoiser is not None else 0
    card = export_onnx(
        model, model.example_inputs(), out, output_names=["descriptors"], dynamic_axes=model.dynamic_axes,
        real_inputs=model.inputs_from_frames(frames),
        card_fields={
            "name": out.stem,
            "description": (f"L2-Net patch descriptor ({model.conf['preset']} preset, {n_desc} parameters"
                            + (f"; denoising U-Net in front, {n_den} parameters" if args.denoiser else "")
                            + f"): {model.conf['dim']}-d unit descriptors of 32x32 grey patches around keypoints, "
                            "trained with HardNet's in-batch hardest-negative triplet loss on patches of KITTI 00 "
                            "frames 0-99, KITTI 03 frames 0-549 and Corridor places 61-110 under random homographies, "
                            "and of synthetic worlds 0-5 from other viewpoints and suns. Held out: Oxford graf and "
                            "boat, synthetic seeds 9001 and above, KITTI 00 frames 100-159, KITTI 03 frames 550-800, "
                            "EuRoC, Corridor places 0-60 (Nordland unused: 64x32 thumbnails)."),
            "model_class": "patch_net",
            "model_config": model.conf,
            "checkpoint": state_path.name,
            "training": {"command": cfg.get("command", ""), "data": "; ".join(cfg.get("train_files", [])),
                         "steps": int(state.get("step", 0))},
            "metrics": {k: float(state[k]) for k in ("val_fpr95", "val_nn_accuracy", "val_denoise_l1")
                        if k in state},
            "inputs": spec["inputs"], "outputs": spec["outputs"],
        })
    curve = plot_training(run / "metrics.csv", out.with_name(out.stem + "-training.png"))
    print(f"training curve: {curve}")
    print(f"exported {out} ({out.stat().st_size / 1e6:.2f} MB, sha256 {card.sha256[:12]}...) and {state_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
