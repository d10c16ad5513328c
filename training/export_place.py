"""Export a trained PlaceNet to models/<name>.onnx with its model card (+ the state dict).

Usage (repository root):
    .venv/bin/python training/export_place.py --run runs/place [--checkpoint PT] [--out models/place.onnx]
        [--description-from models/place.yaml | --description TEXT]

The ONNX graph has two outputs: ``descriptor`` and ``local_features`` (the
backbone map for spatial re-ranking; see ``deep_vision.models.place_net``).
``--description-from`` keeps an earlier card's description (a re-export of the
same weights, e.g. one whose training history was written by hand);
``--description`` gives one (e.g. the stages a fine-tuned model went through),
to which the held-out split is added.

The card records the training command, the training data (from the run's
``config.yaml``) and what is held out. The parity check (ONNX Runtime vs
PyTorch) uses random inputs and KITTI 00 frames 100-119 (not trained on).
Held-out metrics are added by ``deep-vision evaluate place --model ... --update-card``.
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
from deep_vision.inference.modelcard import ModelCard
from deep_vision.models.place_net import PlaceNet, parameter_count  # noqa: E402

from training.common import load_trained  # noqa: E402

HELD_OUT = ("Nordland places 0-899, Corridor places 0-55 and synthetic worlds from seed 9001 on are never "
            "trained on (deep-vision evaluate place)")


def plot_training(metrics_csv: Path, png: Path) -> Path:
    """Training loss and validation Recall@1/5 per validation source against the step (the run's metrics.csv)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(metrics_csv.open()))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    loss = [(int(r["step"]), float(r["loss"])) for r in rows if r.get("loss")]
    if loss:
        a.plot(*zip(*loss), lw=0.8)
    a.set(xlabel="step", ylabel="training loss (augmented batches)")
    a.grid(alpha=0.3)
    columns = [c for c in (rows[0].keys() if rows else []) if c.endswith(("_r1", "_r5"))]
    for k, col in enumerate(sorted(columns)):
        pts = [(int(r["step"]), 100 * float(r[col])) for r in rows if r.get(col)]
        if pts:
            b.plot(*zip(*pts), "o-" if col.endswith("_r1") else "s--", ms=3, color=f"C{k // 2}",
                   label=f"{col[:-3]} Recall@{col[-1]}")
    b.set(xlabel="step", ylabel="%", ylim=(0, 100), title="validation (places and worlds never trained on)")
    b.grid(alpha=0.3)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="training output folder (config.yaml, final.pt or checkpoints/)")
    parser.add_argument("--checkpoint", help="state dict to export (default: <run>/final.pt, else checkpoints/last.pt)")
    parser.add_argument("--out", default=str(ROOT / "models" / "place.onnx"))
    parser.add_argument("--kitti", default=str(ROOT.parent / "shared/data/kitti/sequences/00/image_0"))
    described = parser.add_mutually_exclusive_group()
    described.add_argument("--description-from", help="model card whose description to keep (same weights)")
    described.add_argument("--description", help="the card's description (the held-out split is appended)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    trained, state, cfg = load_trained(run, args.checkpoint, PlaceNet)
    model = PlaceNet({**trained.conf, "local_features": True})
    model.load_state_dict(trained.state_dict())
    model.eval()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "conf": model.conf}, out.with_suffix(".pt"))

    real = None
    if Path(args.kitti).is_dir():
        real = model.inputs_from_frames([load_grey(p) for p in list_images(Path(args.kitti), "*.png", 100, 119)])
    spec = model.input_spec()
    metrics = {f"validation_{k}": round(float(v), 4) for k, v in (state.get("val") or {}).items()}
    if args.description_from:
        description = ModelCard.load(Path(args.description_from)).description
    elif args.description:
        description = f"{args.description.rstrip('. ')}. {HELD_OUT}."
    else:
        description = (f"PlaceNet ({model.conf['preset']} preset, {head_name(model.conf)} head, "
                       f"{parameter_count(model)} parameters): {model.out_dim}-d global place descriptor "
                       f"of a {model.conf['image_size'][0]}x{model.conf['image_size'][1]} "
                       f"{'grey' if model.conf['in_channels'] == 1 else 'RGB'} frame, and its local features "
                       f"for re-ranking. {HELD_OUT}.")
    card = export_onnx(
        model, model.example_inputs(), out, output_names=[o["name"] for o in spec["outputs"]], real_inputs=real,
        dynamic_axes=getattr(model, "dynamic_axes", None),
        card_fields={
            "name": out.stem,
            "description": description,
            "model_class": "place_net",
            "model_config": model.conf,
            "checkpoint": out.with_suffix(".pt").name,
            "inputs": spec["inputs"],
            "outputs": spec["outputs"],
            "metrics": metrics,
            "training": {"command": cfg.get("command", ""), "data": cfg.get("training_data_summary", ""),
                         "steps": int(state.get("step", 0))},
        },
    )
    if (run / "metrics.csv").is_file():
        print(f"training curve: {plot_training(run / 'metrics.csv', out.with_name(out.stem + '-training.png'))}")
    print(f"onnx: {out} (sha256 {card.sha256[:16]}…), card: {out.with_suffix('.yaml')}")
    return 0


def head_name(conf: dict) -> str:
    """'gem', 'netvlad' or, with a GeM grid, e.g. 'gem (1x1 + 2x2 grid)'."""
    grid = conf.get("gem_grid", [1])
    if conf["head"] != "gem" or list(grid) == [1]:
        return conf["head"]
    return f"gem ({' + '.join(f'{g}x{g}' for g in grid)} grid)"


if __name__ == "__main__":
    sys.exit(main())
