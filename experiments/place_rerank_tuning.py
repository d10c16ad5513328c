"""Choose SpatialReranker's settings on the training configs' validation sets (never on the held-out benchmarks).

For every validation source of ``training/configs/place_street_indoor_grid.yaml`` (synthetic world 8001,
indoor worlds 8002 and 8003, Nordland places 1600-1787) the shipped model describes up to 600 images; each
image with a positive queries the others as ``train_place.validate`` does (same positives, grey zone and
same-traversal rule), and Recall@1 is measured before and after re-ranking the top ``k`` with each setting:

- ``k``: candidates re-ranked (5, 10, 20);
- ``weight``: score = global similarity + weight x spatial score; ``only`` orders by the spatial score alone
  (ties by similarity);
- ``--score``: the spatial score (``homography``, the default since session 17, or ``shift``, which the
  earlier outputs used);
- ``--stride 8``: the local features taken from the backbone's stride-8 map instead of the last (stride 16);
- ``--extra-val FILE``: more validation sources (a YAML with a ``val`` list), e.g.
  ``training/configs/place_val_wide_corridors.yaml`` (session 16: corridors with laps 0.75 m apart).

Usage (repository root; on 2 cores about 1 min at stride 16, 8 min at stride 8, plus rendering new sources once):
    .venv/bin/python experiments/place_rerank_tuning.py [--model models/place.pt] [--stride 16] [--extra-val FILE]
        [--score homography|shift]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deep_vision.estimators.place import LocalMap, SpatialReranker
from deep_vision.models.place_net import PlaceNet, preprocess

from training import train_place as tp
from training.common import load_config

KS = (5, 10, 20)
WEIGHTS: tuple[float | str, ...] = (0.5, 1.0, 2.0, 4.0, "only")


def backbone_depth(model: PlaceNet, stride: int) -> int:
    """Number of backbone modules (conv, BN, ReLU per layer) up to the last layer at total ``stride``."""
    depth, total = 0, 1
    for k, s in enumerate(model.conf["strides"]):
        total *= s
        if total == stride:
            depth = 3 * (k + 1)
    if not depth:
        raise SystemExit(f"the backbone has no layer at total stride {stride} (strides {model.conf['strides']})")
    return depth


@torch.no_grad()
def describe(model: PlaceNet, images: list[np.ndarray], depth: int) -> tuple[np.ndarray, list[LocalMap]]:
    descs, maps = [], []
    for k in range(0, len(images), 64):
        x = torch.from_numpy(np.concatenate([preprocess(im, model.conf["image_size"], model.conf["in_channels"])
                                             for im in images[k : k + 64]]))
        descs.append(model(x).numpy())
        local = F.normalize(model.backbone[:depth](x), dim=1).numpy()
        maps += [LocalMap.from_output(local[i : i + 1]) for i in range(len(local))]
    return np.concatenate(descs), maps


def add_source_args(parser: argparse.ArgumentParser) -> None:
    """The arguments that choose the model and the validation sources (also read by place_rerank_variants.py,
    now in git history)."""
    parser.add_argument("--model", default=str(ROOT / "models" / "place.pt"))
    parser.add_argument("--config", default=str(ROOT / "training" / "configs" / "place_street_indoor_grid.yaml"))
    parser.add_argument("--stride", type=int, default=16, help="total stride of the local features' layer")
    parser.add_argument("--max-per-source", type=int, default=600)
    parser.add_argument("--extra-val", help="YAML with a 'val' list of more validation sources")


def validation_data(args: argparse.Namespace) -> list[tuple[str, np.ndarray, np.ndarray, list[LocalMap]]]:
    """Per validation source: (name, similarities [queries x images], positives [queries x images], local maps),
    with the shipped model (``args.model``), at most ``args.max_per_source`` images drawn as train_place.validate
    draws them."""
    torch.set_num_threads(2)
    state = torch.load(args.model, map_location="cpu", weights_only=True)
    model = PlaceNet({**state["conf"], "local_features": False})
    model.load_state_dict(state["model"])
    model.eval()
    depth = backbone_depth(model, args.stride)
    cfg = load_config(args.config, [])
    dcfg = cfg["data"]
    extra = load_config(args.extra_val, [])["val"] if args.extra_val else []
    places = tp.build_set(dcfg["val"] + extra, dcfg, True, "data.val")
    store = tp.ImageStore(places, dcfg["store_size"], model.conf["in_channels"] == 3)
    rng = np.random.default_rng(12345)  # the same draw as train_place.validate
    out = []
    for src, name in enumerate(places.source_names):
        idx = np.flatnonzero(places.source == src)
        if len(idx) > args.max_per_source:
            idx = np.sort(rng.choice(idx, args.max_per_source, replace=False))
        desc, maps = describe(model, [store[int(i)] for i in idx], depth)
        sims, pos = tp.validation_search(places, idx, desc)
        out.append((name, sims, pos, maps))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_source_args(parser)
    parser.add_argument("--score", choices=SpatialReranker.SCORES, default="homography",
                        help="SpatialReranker's spatial score (shift: the score until session 17)")
    args = parser.parse_args(argv)
    print(f"model {args.model}, local features at stride {args.stride}, {args.score} score; Recall@1 in %")
    header = ["source", "queries", "retrieval"] + [f"k={k} w={w}" for k in KS for w in WEIGHTS]
    rows = []
    for name, sims, pos, maps in validation_data(args):
        queries = np.flatnonzero(pos.any(axis=1))
        row = [name, str(len(queries)), f"{100 * pos[queries, np.argmax(sims[queries], axis=1)].mean():.1f}"]
        for k in KS:
            for w in WEIGHTS:
                rr = SpatialReranker(top_k=k, weight=1e6 if w == "only" else float(w), score=args.score)
                hits = []
                for q in queries:
                    top = [int(c) for c in np.argsort(-sims[q], kind="stable")[:k] if math.isfinite(sims[q, c])]
                    order, _ = rr.rerank(sims[q, top], maps[q], [maps[c] for c in top])
                    hits.append(pos[q, top[order[0]]])
                row.append(f"{100 * np.mean(hits):.1f}")
        rows.append(row)
        print(" | ".join(row), flush=True)
    print()
    names = [r[0] for r in rows]
    print("| setting | " + " | ".join(f"{n} ({r[1]} queries)" for n, r in zip(names, rows)) + " | mean |")
    print("|---|" + "---|" * (len(rows) + 1))
    for col in range(2, len(header)):
        values = [float(r[col]) for r in rows]
        print(f"| {header[col]} | " + " | ".join(r[col] for r in rows) + f" | {np.mean(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
