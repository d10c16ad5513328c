"""Other spatial scores for SpatialReranker, on the validation sources only (session 14; none shipped).

Against the shipped score (the largest group of mutual-nearest-neighbour cell matches sharing one grid shift):
the same vote with a +-1 cell tolerance; RANSAC (OpenCV) similarity, affine and homography models on the
matched cells' grid positions (Patch-NetVLAD's RANSAC scoring); the match count alone. Each with k = 10
candidates and weight 0.5 / 1 / 2 / only, as bench/place_rerank_tuning.py (same sources, same draw, same
protocol). Results: bench/results/2026-11-22-place-rerank.md, "Other spatial scores".

Usage (repository root, about 3 min on 2 cores; the descriptions are cached in /tmp/place_rerank_variants.pkl):
    .venv/bin/python bench/place_rerank_variants.py
"""
import math
import pickle
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import place_rerank_tuning as prt
from deep_vision.models.place_net import PlaceNet

from training import train_place as tp
from training.common import load_config

cache = Path("/tmp/place_rerank_variants.pkl")
if cache.exists():
    data = pickle.loads(cache.read_bytes())
else:
    torch.set_num_threads(2)
    state = torch.load(ROOT / "models/place.pt", map_location="cpu", weights_only=True)
    model = PlaceNet({**state["conf"], "local_features": False}); model.load_state_dict(state["model"]); model.eval()
    depth = prt.backbone_depth(model, 16)
    cfg = load_config(str(ROOT / "training/configs/place_street_indoor_grid.yaml"), [])
    dcfg = cfg["data"]
    places = tp.build_set(dcfg["val"], dcfg, True, "data.val")
    store = tp.ImageStore(places, dcfg["store_size"], False)
    rng = np.random.default_rng(12345)
    data = []
    for src, name in enumerate(places.source_names):
        idx = np.flatnonzero(places.source == src)
        if len(idx) > 600:
            idx = np.sort(rng.choice(idx, 600, replace=False))
        desc, maps = prt.describe(model, [store[int(i)] for i in idx], depth)
        sims, pos = tp.validation_search(places, idx, desc)
        data.append((name, sims, pos, maps))
    cache.write_bytes(pickle.dumps(data))

def mnn(q, c):
    s = q.cells @ c.cells.T
    nn = s.argmax(1); mutual = np.flatnonzero(s.argmax(0)[nn] == np.arange(len(nn)))
    w = q.grid[0]
    a, b = mutual, nn[mutual]
    return np.stack([a % w, a // w], 1).astype(np.float32), np.stack([b % w, b // w], 1).astype(np.float32)

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
K = 10; WS = [0.5, 1.0, 2.0, "only"]
res = {}
for name, sims, pos, maps in data:
    queries = np.flatnonzero(pos.any(axis=1))
    base = 100 * pos[queries, np.argmax(sims[queries], axis=1)].mean()
    res[(name, "retrieval")] = base
    for vn, fn in variants.items():
        tops = {}
        sc = {}
        for q in queries:
            top = [int(c) for c in np.argsort(-sims[q], kind="stable")[:K] if math.isfinite(sims[q, c])]
            tops[q] = top; sc[q] = np.array([fn(maps[q], maps[c]) for c in top])
        for w in WS:
            hits = []
            for q in queries:
                top = tops[q]; s = sims[q, top] + (1e6 if w == "only" else w) * sc[q]
                hits.append(pos[q, top[int(np.argmax(s))]])
            res[(name, f"{vn} w={w}")] = 100 * np.mean(hits)
    print(name, len(queries), flush=True)
names = [d[0] for d in data]
settings = ["retrieval"] + [f"{vn} w={w}" for vn in variants for w in WS]
print("| setting | " + " | ".join(names) + " | mean | mean non-synthetic |")
for s in settings:
    v = [res[(n, s)] for n in names]
    print(f"| {s} | " + " | ".join(f"{x:.1f}" for x in v) + f" | {np.mean(v):.2f} | {np.mean(v[1:]):.2f} |")
