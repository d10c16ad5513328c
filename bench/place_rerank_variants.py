"""Other spatial scores for SpatialReranker, on the validation sources only (session 14; none shipped).

Against the shipped score (the largest group of mutual-nearest-neighbour cell matches sharing one grid shift):
the same vote with a +-1 cell tolerance; RANSAC (OpenCV) similarity, affine and homography models on the
matched cells' grid positions (Patch-NetVLAD's RANSAC scoring), which allow what one shift cannot (a scale
change, a shift that grows across the frame as parallax makes it); the match count alone. Each with ``--k``
candidates and weight 0.5 / 1 / 2 / only, on the sources of bench/place_rerank_tuning.py (same arguments, same
draw, same protocol). Results: bench/results/2026-11-22-place-rerank.md, "Other spatial scores" (session 14,
k = 10, the stage-3 model) and bench/results/2026-11-22-place-rerank-stage4-variants.txt (session 17, k = 5
and 10, the stage-4 model, with the wide corridors). The matching is SpatialReranker.mutual_matches.

Usage (repository root, about 3 min on 2 cores per k, plus describing the sources):
    .venv/bin/python bench/place_rerank_variants.py [--model models/place.pt] [--extra-val FILE] [--k 5 10]
"""
import argparse
import math
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import place_rerank_tuning as prt
from deep_vision.estimators.place import SpatialReranker

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
prt.add_source_args(parser)
parser.add_argument("--k", type=int, nargs="+", default=[10], help="candidates re-ranked")
args = parser.parse_args()
data = prt.validation_data(args)


mnn = SpatialReranker.mutual_matches

def shift(q, c, tol=0):
    pa, pb = mnn(q, c); n = len(q.cells)
    if not len(pa): return 0.0
    w, h = q.grid
    d = (pb - pa).astype(int)
    grid = np.zeros((2 * h - 1 + 2 * tol, 2 * w - 1 + 2 * tol))
    np.add.at(grid, (d[:, 1] + h - 1 + tol, d[:, 0] + w - 1 + tol), 1)
    if tol:
        k = 2 * tol + 1
        grid = cv2.boxFilter(grid, -1, (k, k), normalize=False, borderType=cv2.BORDER_CONSTANT)
    return grid.max() / n

def ransac(q, c, kind, thr):
    pa, pb = mnn(q, c); n = len(q.cells)
    if len(pa) < 4: return 0.0
    if kind == "affine":
        _, inl = cv2.estimateAffine2D(pa, pb, method=cv2.RANSAC, ransacReprojThreshold=thr, maxIters=500, confidence=0.99)
    elif kind == "similarity":
        _, inl = cv2.estimateAffinePartial2D(pa, pb, method=cv2.RANSAC, ransacReprojThreshold=thr, maxIters=500, confidence=0.99)
    else:
        _, inl = cv2.findHomography(pa, pb, cv2.RANSAC, thr, maxIters=500, confidence=0.99)
    return 0.0 if inl is None else float(inl.sum()) / n

def mnncount(q, c):
    return len(mnn(q, c)[0]) / len(q.cells)

cv2.setRNGSeed(0)
variants = {"shift": shift, "shift_tol1": lambda q, c: shift(q, c, 1),
            "similarity1": lambda q, c: ransac(q, c, "similarity", 1.0),
            "affine1": lambda q, c: ransac(q, c, "affine", 1.0),
            "affine1.5": lambda q, c: ransac(q, c, "affine", 1.5),
            "homog1.5": lambda q, c: ransac(q, c, "homography", 1.5),
            "mnn": mnncount}
WS = [0.5, 1.0, 2.0, "only"]
print(f"model {args.model}, local features at stride {args.stride}; Recall@1 in %")
res = {}
for name, sims, pos, maps in data:
    queries = np.flatnonzero(pos.any(axis=1))
    base = 100 * pos[queries, np.argmax(sims[queries], axis=1)].mean()
    res[(name, "retrieval")] = base
    K = max(args.k)
    for vn, fn in variants.items():
        tops = {}
        sc = {}
        for q in queries:
            top = [int(c) for c in np.argsort(-sims[q], kind="stable")[:K] if math.isfinite(sims[q, c])]
            tops[q] = top; sc[q] = np.array([fn(maps[q], maps[c]) for c in top])
        for k in args.k:
            for w in WS:
                hits = []
                for q in queries:
                    top = tops[q][:k]; s = sims[q, top] + (1e6 if w == "only" else w) * sc[q][:k]
                    hits.append(pos[q, top[int(np.argmax(s))]])
                res[(name, f"{vn} k={k} w={w}")] = 100 * np.mean(hits)
    print(name, len(queries), flush=True)
names = [d[0] for d in data]
settings = ["retrieval"] + [f"{vn} k={k} w={w}" for vn in variants for k in args.k for w in WS]
print("| setting | " + " | ".join(names) + " | mean |")
print("|---|" + "---|" * (len(names) + 1))
for s in settings:
    v = [res[(n, s)] for n in names]
    print(f"| {s} | " + " | ".join(f"{x:.1f}" for x in v) + f" | {np.mean(v):.2f} |")
