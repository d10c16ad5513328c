"""``deep-vision evaluate patches``: the learned patch descriptor against SIFT, ORB and raw pixels on held-out data.

HPatches' protocol (Balntas et al., CVPR 2017) on patch sets in its layout (:mod:`deep_vision.eval.patch_sets`):

- held-out sets: Oxford graf (img1 the reference, img2..6 the targets through their ground-truth homographies;
  viewpoint) and the synthetic worlds of seeds 9001 and 9002 (:func:`deep_vision.synthetic.patches.depth_sequences`,
  viewpoint and illumination sequences; correspondences from depth). Training never sees these seeds or graf.
- splits: viewpoint / illumination × easy / hard (the jitter level of the target patches); graf alone is reported
  as well (real images, a part of the viewpoint splits).
- tasks, every descriptor on the same patches and the same pairs:
  * verification: average precision of positive pairs (reference k vs target t, row k) ranked by distance among
    negatives (reference k vs a row j ≠ k) drawn from the same sequence (intra) or from another sequence of the
    split (inter), ``negatives`` per positive each (HPatches' imbalanced ratio 1:5); mAP = mean of intra and inter.
  * matching: per sequence and target, the nearest target patch of each reference patch, correct when it is row k;
    the K nearest neighbours ranked by distance, AP with recall over all K (HPatches); mean over sequence-target
    pairs.
  * retrieval: each reference patch (at most ``queries`` per split, fixed draw) queries a pool of every target
    patch of every sequence of the split; AP over its T positives; mean over the queries.

and at image level, on graf: one detector (the DoG keypoints of ``patch_sets.detect``, up to 2000), every descriptor
on the same keypoints, mutual nearest neighbours, ``cv2.findHomography`` RANSAC (3 px) and the mean corner error of
the estimate against the ground truth; correct at 1 / 3 / 5 px. Plus the time to describe 1000 keypoints of graf img1.

The classical descriptors on a 32×32 patch (S = 32 pixels spanning 6 × KeyPoint.size, ``patch_input.MAGNIFICATION``):

- SIFT: ``sift.compute`` at the patch centre with KeyPoint.size = S / 6 (SIFT's 4×4 cells of 3σ, σ = size / 2, span
  6 × size = the patch), upright, on the DoG layer of that size (as SIFT describes its own keypoints); the patch sits
  in a 64×64 cell of a mosaic with replicated borders, so that SIFT's Gaussian and its trilinear spill past the
  window never reach another patch.
- ORB: ``orb.compute`` at the centre of the patch resized to 31×31 (ORB's window: its BRIEF tests lie within ±13 px,
  smoothed by a 7×7 Gaussian), upright, level 0, in a 64×64 replicated-border cell (beyond ORB's 31 px edge
  threshold); Hamming distance.
- raw pixels: the patch's 1024 grey levels, zero mean and unit norm; Euclidean distance.

Float descriptors are scaled to unit norm and compared by Euclidean distance. At image level SIFT and ORB get the
keypoint's own scale: SIFT the DoG layer of its size, ORB the pyramid level whose 31-px window is nearest to 6 ×
size (scale factor 1.2); all descriptors upright, as the learned one.

Writes ``report.md``, ``metrics.json`` and two PNGs into the output folder.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deep_vision.errors import DatasetError, ModelError
from deep_vision.eval.patch_sets import LEVELS, PatchSequence, detect, homography_sequence
from deep_vision.eval.progress import Progress
from deep_vision.geometry.homography import corner_error, patch_corners
from deep_vision.models.patch_input import MAGNIFICATION, PATCH_SIZE, extract_patches, keypoint_affines

logger = logging.getLogger(__name__)

#: Mosaic cell of the classical descriptors on patches (the patch in the middle, replicated borders).
CELL = 64
#: Corner error thresholds (px) of the image-level homography.
THRESHOLDS_PX = (1.0, 3.0, 5.0)
#: ORB's pyramid scale factor (OpenCV's default); the image-level level of a keypoint follows from its size.
ORB_SCALE = 1.2
ORB_WINDOW = 31


@dataclass(frozen=True)
class PatchEvalSettings:
    keypoints: int = 1000  # patches per reference image at most (graf and each synthetic sequence)
    sequences: int = 3  # synthetic sequences per seed and kind
    seeds: tuple[int, ...] = (9001, 9002)  # held-out synthetic worlds
    targets: int = 5  # target views per synthetic sequence (graf has 5)
    negatives: int = 5  # verification negatives per positive, intra and inter each (HPatches' imbalanced 1:5)
    queries: int = 1000  # retrieval queries per split at most
    image_keypoints: int = 2000  # image level: keypoints per graf image
    timing_keypoints: int = 1000
    timing_runs: int = 5
    seed: int = 0  # all random draws (patch jitter, sequences, pairs, queries)


FULL = PatchEvalSettings()
QUICK = PatchEvalSettings(keypoints=300, sequences=1, queries=300)


# -- average precision ----------------------------------------------------------------------------------------
def average_precision(distances: np.ndarray, labels: np.ndarray, n_positives: int | None = None) -> float:
    """AP of the positives (``labels``) when items are ranked by ascending distance.

    AP = 1/P · Σ over positives p of precision at p's distance, precision = positives / items with distance ≤ d_p
    (tied items share one rank, as scikit-learn's ``average_precision_score``). ``n_positives`` (default: the
    labelled positives) is P, larger where some positives were never retrieved (HPatches' matching task).
    """
    d = np.asarray(distances, np.float64).reshape(-1)
    lab = np.asarray(labels, bool).reshape(-1)
    if d.shape != lab.shape:
        raise ValueError(f"distances {list(d.shape)} and labels {list(lab.shape)} differ in shape")
    P = int(lab.sum()) if n_positives is None else int(n_positives)
    if P <= 0:
        return float("nan")
    dp = d[lab]
    items = np.searchsorted(np.sort(d), dp, side="right")
    hits = np.searchsorted(np.sort(dp), dp, side="right")
    return float((hits / items).sum() / P)


def mean_average_precision(aps: Sequence[float]) -> float:
    a = np.asarray(aps, np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


# -- distances ------------------------------------------------------------------------------------------------
def _bits(d: np.ndarray) -> np.ndarray:
    return np.unpackbits(np.ascontiguousarray(d, np.uint8), axis=1).astype(np.float32)


def distance_matrix(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """[N x M] distances of descriptors [N x D] and [M x D]: Euclidean ("l2") or Hamming (packed uint8 bits)."""
    if metric == "hamming":
        a, b = _bits(a), _bits(b)
        return np.maximum(a.sum(1)[:, None] + b.sum(1)[None] - 2.0 * (a @ b.T), 0.0)
    if metric != "l2":
        raise ValueError(f"metric must be l2 or hamming, got {metric!r}")
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0))


def row_distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """[N] distances of corresponding rows of [N x D] descriptors."""
    if metric == "hamming":
        return np.unpackbits(np.bitwise_xor(np.asarray(a, np.uint8), np.asarray(b, np.uint8)), axis=1).sum(1)
    return np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32), axis=1)


# -- descriptors ----------------------------------------------------------------------------------------------
@dataclass
class PatchMethod:
    """A descriptor of patches and of image keypoints."""

    name: str
    metric: str  # "l2" | "hamming"
    patches: Callable[[np.ndarray], np.ndarray]  # [N x S x S] uint8 -> [N x D]
    keypoints: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    # (grey, [N x 2] x y, [N] sizes) -> ([M] indices of the keypoints described, [M x D])
    label: str = ""  # what it runs on (the learned model's backend)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def raw_descriptors(patches: np.ndarray) -> np.ndarray:
    """[N x S²] float32: each patch's grey levels, zero mean, unit norm."""
    x = np.asarray(patches, np.float32).reshape(len(patches), -1)
    return unit_rows(x - x.mean(axis=1, keepdims=True))


def sift_keypoints(points: np.ndarray, sizes: np.ndarray) -> list[cv2.KeyPoint]:
    """Upright OpenCV KeyPoints for SIFT's descriptor: ``class_id`` = row, ``octave`` packed with the octave and
    layer where SIFT's detector would have found a keypoint of that size (size = 2 · 1.6 · 2^(octave + layer / 3),
    layers 1..3; OpenCV's ``unpackOctave``), so that ``compute`` samples the DoG pyramid as for its own keypoints."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    n = np.round(3.0 * np.log2(np.maximum(np.asarray(sizes, np.float64).reshape(-1), 0.5) / 3.2)).astype(int)
    octave = np.floor_divide(n - 1, 3)
    layer = n - 3 * octave
    return [cv2.KeyPoint(float(x), float(y), float(s), 0.0, 0.0, int((o & 255) | (la << 8)), i)
            for i, ((x, y), s, o, la) in enumerate(zip(pts, np.asarray(sizes).reshape(-1), octave, layer))]


def orb_keypoints(points: np.ndarray, sizes: np.ndarray, magnification: float = MAGNIFICATION) -> list[cv2.KeyPoint]:
    """Upright KeyPoints for ORB's descriptor: ``class_id`` = row, ``octave`` = the pyramid level (factor 1.2) whose
    31-px window is nearest to ``magnification`` × size (ORB picks its level from ``octave`` alone)."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    sizes = np.asarray(sizes, np.float64).reshape(-1)
    level = np.maximum(np.round(np.log(magnification * sizes / ORB_WINDOW) / np.log(ORB_SCALE)), 0).astype(int)
    return [cv2.KeyPoint(float(x), float(y), float(ORB_WINDOW * ORB_SCALE ** lv), 0.0, 0.0, int(lv), i)
            for i, ((x, y), lv) in enumerate(zip(pts, level))]


def _described(kps: Sequence[cv2.KeyPoint], desc: np.ndarray | None, dim: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(rows kept, descriptors) of an OpenCV ``compute``, which may drop keypoints (ORB near the border)."""
    if desc is None or not len(kps):
        return np.zeros(0, int), np.zeros((0, dim), dtype)
    return np.array([k.class_id for k in kps], int), desc


def _mosaic(patches: np.ndarray, side: int, cells_per_row: int = 32) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Patches resized to ``side`` and set in the middle of CELL×CELL cells with replicated borders, as mosaics
    of up to cells_per_row² cells: (mosaics, [n x 2] patch centres per mosaic)."""
    per = cells_per_row * cells_per_row
    pad0 = (CELL - side) // 2
    pad1 = CELL - side - pad0
    mosaics, centres = [], []
    for start in range(0, len(patches), per):
        chunk = patches[start:start + per]
        if side != chunk.shape[-1]:
            chunk = np.stack([cv2.resize(p, (side, side), interpolation=cv2.INTER_AREA) for p in chunk])
        cells = np.pad(chunk, ((0, 0), (pad0, pad1), (pad0, pad1)), mode="edge")
        rows = -(-len(cells) // cells_per_row)
        cols = min(len(cells), cells_per_row)
        grid = np.zeros((rows * cols, CELL, CELL), np.uint8)
        grid[:len(cells)] = cells
        mosaics.append(np.ascontiguousarray(grid.reshape(rows, cols, CELL, CELL).transpose(0, 2, 1, 3)
                                            .reshape(rows * CELL, cols * CELL)))
        i = np.arange(len(cells))
        centres.append(np.c_[(i % cols) * CELL + pad0 + (side - 1) / 2.0, (i // cols) * CELL + pad0 + (side - 1) / 2.0])
    return mosaics, centres


def sift_method() -> PatchMethod:
    sift = cv2.SIFT_create()
    size = PATCH_SIZE / MAGNIFICATION

    def patches(p: np.ndarray) -> np.ndarray:
        out = np.zeros((len(p), 128), np.float32)
        done = 0
        for mosaic, centres in zip(*_mosaic(np.asarray(p, np.uint8), PATCH_SIZE)):
            kps, desc = sift.compute(mosaic, sift_keypoints(centres, np.full(len(centres), size)))
            idx, desc = _described(kps, desc, 128, np.float32)
            if len(idx) != len(centres):
                raise RuntimeError(f"SIFT described {len(idx)} of {len(centres)} patch centres")
            out[done + idx] = desc
            done += len(centres)
        return unit_rows(out)

    def keypoints(grey: np.ndarray, pts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kps, desc = sift.compute(grey, sift_keypoints(pts, sizes))
        idx, desc = _described(kps, desc, 128, np.float32)
        return idx, unit_rows(desc)

    return PatchMethod("SIFT", "l2", patches, keypoints, "OpenCV SIFT descriptor, upright")


def orb_method() -> PatchMethod:
    orb = cv2.ORB_create(edgeThreshold=ORB_WINDOW, patchSize=ORB_WINDOW, scaleFactor=ORB_SCALE)

    def patches(p: np.ndarray) -> np.ndarray:
        out = np.zeros((len(p), 32), np.uint8)
        done = 0
        for mosaic, centres in zip(*_mosaic(np.asarray(p, np.uint8), ORB_WINDOW)):
            kps = [cv2.KeyPoint(float(x), float(y), float(ORB_WINDOW), 0.0, 0.0, 0, i)
                   for i, (x, y) in enumerate(centres)]
            kps, desc = orb.compute(mosaic, kps)
            idx, desc = _described(kps, desc, 32, np.uint8)
            if len(idx) != len(centres):
                raise RuntimeError(f"ORB described {len(idx)} of {len(centres)} patch centres")
            out[done + idx] = desc
            done += len(centres)
        return out

    def keypoints(grey: np.ndarray, pts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kps, desc = orb.compute(grey, orb_keypoints(pts, sizes))
        return _described(kps, desc, 32, np.uint8)

    return PatchMethod("ORB", "hamming", patches, keypoints, "OpenCV ORB descriptor, upright")


def raw_method() -> PatchMethod:
    def keypoints(grey: np.ndarray, pts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(len(pts)), raw_descriptors(extract_patches(grey, keypoint_affines(pts, sizes)))

    return PatchMethod("raw pixels", "l2", raw_descriptors, keypoints, "32x32 grey levels, zero mean, unit norm")


def learned_method(name: str, descriptor) -> PatchMethod:
    """A :class:`deep_vision.estimators.PatchDescriptor` (its own magnification at image level)."""

    def keypoints(grey: np.ndarray, pts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(len(pts)), unit_rows(descriptor.describe(grey, pts, sizes))

    return PatchMethod(name, "l2", lambda p: unit_rows(descriptor.describe_patches(p)), keypoints,
                       descriptor.label)


def classical_methods() -> list[PatchMethod]:
    return [sift_method(), orb_method(), raw_method()]


def load_learned(name: str, path: str | Path, option: str, backend: str = "auto",
                 threads: int | None = None) -> PatchMethod:
    """A learned method from a model file; any fault becomes one :class:`ModelError` naming ``option``."""
    from deep_vision.estimators.patch import PatchDescriptor

    try:
        desc = PatchDescriptor.from_model(path, backend=backend, threads=threads)
        desc.describe_patches(np.zeros((2, PATCH_SIZE, PATCH_SIZE), np.uint8))
    except Exception as exc:  # noqa: BLE001 - backends raise their own errors for broken files; one line for all
        raise ModelError(f"{option} {path}: cannot load a patch descriptor: {exc}".replace("\n", " ")) from exc
    if abs(desc.magnification - MAGNIFICATION) > 1e-6:
        logger.warning("%s: magnification %.2f, but the patch sets are cut at %.2f", path, desc.magnification,
                       MAGNIFICATION)
    method = learned_method(name, desc)
    method.label = f"{path} ({desc.label})"
    return method


# -- patch sets -----------------------------------------------------------------------------------------------
def graf_images(data_root: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(label, img1, imgN, H 1→N) for N = 2..6 of Oxford graf."""
    from deep_vision.eval.homography_eval import graf_pairs

    return graf_pairs(data_root)


def held_out_sequences(data_root: Path, settings: PatchEvalSettings,
                       progress: Callable[[int], None] | None = None) -> tuple[list[PatchSequence], dict[str, str]]:
    """The held-out patch sequences (graf, then the synthetic worlds) and {set: reason} for those skipped."""
    rng = np.random.default_rng(settings.seed)
    seqs: list[PatchSequence] = []
    skipped: dict[str, str] = {}
    done = 0
    if (Path(data_root) / "oxford_graf").is_dir():
        pairs = graf_images(Path(data_root))
        seqs.append(homography_sequence("oxford-graf", "viewpoint", pairs[0][1], [(b, H) for _, _, b, H in pairs],
                                        settings.keypoints, rng))
    else:
        skipped["oxford-graf"] = f"no {Path(data_root) / 'oxford_graf'} (the shared data folder is absent)"
    done += 1
    if progress:
        progress(done)
    if settings.seeds:
        from deep_vision.synthetic.patches import depth_sequences

        for seed in settings.seeds:
            for kind in ("viewpoint", "illumination"):
                seqs += depth_sequences(seed, kind, settings.sequences, settings.keypoints, rng,
                                        targets=settings.targets)
                done += 1
                if progress:
                    progress(done)
    if not seqs:
        raise DatasetError(f"no held-out patch set: {skipped} and no synthetic seeds")
    return seqs, skipped


# -- HPatches tasks -------------------------------------------------------------------------------------------
@dataclass
class SplitIndex:
    """Flat indices of one split's patches: references R (concatenated) and targets P (sequence, target, row)."""

    ref_start: np.ndarray  # [S + 1] offsets of each sequence's references in R
    tgt_start: np.ndarray  # [S + 1] offsets of each sequence's targets in P
    rows: np.ndarray  # [S] K per sequence
    targets: np.ndarray  # [S] T per sequence

    @classmethod
    def of(cls, seqs: Sequence[tuple[int, int]]) -> SplitIndex:
        """From [(K, T)] per sequence."""
        K = np.array([k for k, _ in seqs], int)
        T = np.array([t for _, t in seqs], int)
        return cls(np.r_[0, np.cumsum(K)], np.r_[0, np.cumsum(K * T)], K, T)

    def ref(self, s, k):
        return self.ref_start[s] + k

    def tgt(self, s, t, k):
        return self.tgt_start[s] + t * self.rows[s] + k


@dataclass
class TaskPlan:
    """The pairs and queries of one split, drawn once and used for every descriptor."""

    index: SplitIndex
    positives: np.ndarray  # [n x 2] (R index, P index)
    intra: np.ndarray  # [m x 2]
    inter: np.ndarray  # [m' x 2] (empty with one sequence)
    queries: np.ndarray  # [Q] R indices
    query_positives: np.ndarray  # [Q x Tmax] P indices, -1 padding

    def sizes(self) -> dict[str, int]:
        return {"sequences": len(self.index.rows), "reference_patches": int(self.index.ref_start[-1]),
                "target_patches": int(self.index.tgt_start[-1]), "positive_pairs": len(self.positives),
                "intra_negative_pairs": len(self.intra), "inter_negative_pairs": len(self.inter),
                "retrieval_queries": len(self.queries), "retrieval_pool": int(self.index.tgt_start[-1])}


def plan_tasks(shapes: Sequence[tuple[int, int]], rng: np.random.Generator, negatives: int = 5,
               queries: int = 1000) -> TaskPlan:
    """Pairs and queries for sequences of shapes [(K, T)]: every positive (s, t, k); per positive ``negatives``
    intra pairs (same s, random t and row j ≠ k) and as many inter pairs (random other sequence, target, row);
    at most ``queries`` retrieval queries (random reference patches)."""
    idx = SplitIndex.of(shapes)
    pos, intra, inter = [], [], []
    S = len(shapes)
    for s, (K, T) in enumerate(shapes):
        if K == 0 or T == 0:
            continue
        t, k = np.meshgrid(np.arange(T), np.arange(K), indexing="ij")
        t, k = t.ravel(), k.ravel()
        pos.append(np.c_[idx.ref(s, k), idx.tgt(s, t, k)])
        kk = np.repeat(k, negatives)
        if K > 1:
            j = (kk + rng.integers(1, K, len(kk))) % K  # any row but k
            intra.append(np.c_[idx.ref(s, kk), idx.tgt(s, rng.integers(0, T, len(kk)), j)])
        others = [o for o in range(S) if o != s and shapes[o][0] > 0 and shapes[o][1] > 0]
        if others:
            o = np.asarray(others)[rng.integers(0, len(others), len(kk))]
            to = (rng.random(len(kk)) * idx.targets[o]).astype(int)
            jo = (rng.random(len(kk)) * idx.rows[o]).astype(int)
            inter.append(np.c_[idx.ref(s, kk), idx.tgt(o, to, jo)])
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros((0, 2), int)  # noqa: E731
    n_ref = int(idx.ref_start[-1])
    q = np.sort(rng.choice(n_ref, min(queries, n_ref), replace=False)) if n_ref else np.zeros(0, int)
    seq_of = np.searchsorted(idx.ref_start, q, side="right") - 1
    Tmax = int(idx.targets.max()) if S else 0
    qp = np.full((len(q), Tmax), -1, int)
    for i, (r, s) in enumerate(zip(q, seq_of)):
        qp[i, :idx.targets[s]] = idx.tgt(s, np.arange(idx.targets[s]), r - idx.ref_start[s])
    return TaskPlan(idx, cat(pos), cat(intra), cat(inter), q, qp)


def verification_ap(R: np.ndarray, P: np.ndarray, positives: np.ndarray, negatives: np.ndarray, metric: str) -> float:
    """AP of the positive pairs among the negative ones, ranked by distance (pairs: [n x 2] (R index, P index))."""
    if not len(positives) or not len(negatives):
        return float("nan")
    pairs = np.concatenate([positives, negatives])
    d = row_distances(R[pairs[:, 0]], P[pairs[:, 1]], metric)
    return average_precision(d, np.r_[np.ones(len(positives), bool), np.zeros(len(negatives), bool)])


def matching_map(refs: Sequence[np.ndarray], targets: Sequence[np.ndarray], metric: str) -> float:
    """Mean over sequences s and targets t of the AP of the nearest neighbours of ref[s] ([K x D]) among
    targets[s][t] ([T x K x D]): correct when the neighbour is the same row, ranked by its distance, recall over
    all K references."""
    aps = []
    for R, Ts in zip(refs, targets):
        if not len(R):
            continue
        for Tt in Ts:
            D = distance_matrix(R, Tt, metric)
            nn = D.argmin(axis=1)
            aps.append(average_precision(D[np.arange(len(R)), nn], nn == np.arange(len(R)), len(R)))
    return mean_average_precision(aps)


def retrieval_map(R: np.ndarray, P: np.ndarray, queries: np.ndarray, query_positives: np.ndarray, metric: str,
                  chunk: int = 64) -> float:
    """Mean AP of queries (R indices) over their positives ([Q x T] P indices, -1 padding) in the pool P."""
    aps = []
    for a in range(0, len(queries), chunk):
        q, qp = queries[a:a + chunk], query_positives[a:a + chunk]
        D = distance_matrix(R[q], P, metric)  # [c x M]
        valid = qp >= 0
        dpos = np.take_along_axis(D, np.where(valid, qp, 0), axis=1)  # [c x T]
        items = (D[:, None, :] <= dpos[:, :, None]).sum(-1)
        hits = ((dpos[:, None, :] <= dpos[:, :, None]) & valid[:, None, :]).sum(-1)
        ap = np.where(valid, hits / np.maximum(items, 1), 0.0).sum(1) / np.maximum(valid.sum(1), 1)
        aps.extend(ap[valid.any(1)].tolist())
    return mean_average_precision(aps)


def split_name(kind: str, level: str) -> str:
    return f"{kind}-{level}"


def run_patch_tasks(methods: Sequence[PatchMethod], seqs: Sequence[PatchSequence], settings: PatchEvalSettings,
                    progress_factory: Progress | None = None) -> tuple[dict[str, dict[str, dict]], dict[str, dict]]:
    """({split: {method: {task: mAP}}}, {split: sizes}) for the splits kind-level of ``seqs`` and graf alone."""
    groups: dict[str, list[PatchSequence]] = {}
    for kind in ("viewpoint", "illumination"):
        if any(s.kind == kind for s in seqs):
            groups[kind] = [s for s in seqs if s.kind == kind]
    graf = [s for s in seqs if s.name == "oxford-graf"]
    if graf and len(groups.get("viewpoint", [])) > 1:
        groups["graf"] = graf
    plans: dict[str, TaskPlan] = {}
    rng = np.random.default_rng(settings.seed + 1)
    for g, members in groups.items():
        for level in LEVELS:
            shapes = [(len(s), len(s.targets[level])) for s in members]
            plans[split_name(g, level)] = plan_tasks(shapes, rng, settings.negatives, settings.queries)
    results: dict[str, dict[str, dict]] = {name: {} for name in plans}
    prog = progress_factory(len(methods) * len(plans), "HPatches tasks") if progress_factory else None
    step = 0
    for m in methods:
        described: dict[str, np.ndarray] = {}  # (sequence name, "ref" | level) -> descriptors, once per method

        def desc(s: PatchSequence, what: str) -> np.ndarray:
            key = f"{s.name}/{what}"
            if key not in described:
                if what == "ref":
                    described[key] = m.patches(s.ref)
                else:
                    t = s.targets[what]
                    d = m.patches(t.reshape(-1, *t.shape[2:]))
                    described[key] = d.reshape(t.shape[0], t.shape[1], -1)
            return described[key]

        # graf right after viewpoint (its sequence is one of theirs); each sequence's descriptors dropped after the
        # last group that uses it (raw pixels of every patch would take 4 KB each)
        order = sorted(groups, key=lambda g: ("viewpoint", "graf", "illumination").index(g))
        for gi, g in enumerate(order):
            members = groups[g]
            for level in LEVELS:
                plan = plans[split_name(g, level)]
                refs = [desc(s, "ref") for s in members]
                tgts = [desc(s, level) for s in members]
                R = np.concatenate(refs)
                P = np.concatenate([t.reshape(-1, t.shape[-1]) for t in tgts])
                intra = verification_ap(R, P, plan.positives, plan.intra, m.metric)
                inter = verification_ap(R, P, plan.positives, plan.inter, m.metric)
                results[split_name(g, level)][m.name] = {
                    "verification": mean_average_precision([intra, inter]),
                    "verification_intra": intra, "verification_inter": inter,
                    "matching": matching_map(refs, tgts, m.metric),
                    "retrieval": retrieval_map(R, P, plan.queries, plan.query_positives, m.metric),
                }
                step += 1
                if prog:
                    prog(step)
            later = {s.name for g2 in order[gi + 1:] for s in groups[g2]}
            for key in [k for k in described if k.rsplit("/", 1)[0] not in later]:
                del described[key]
    return results, {name: plan.sizes() for name, plan in plans.items()}


# -- image level (graf) ---------------------------------------------------------------------------------------
def mutual_nearest(d1: np.ndarray, d2: np.ndarray, metric: str) -> np.ndarray:
    """[n x 2] rows (i, j) that are each other's nearest neighbour."""
    if not len(d1) or not len(d2):
        return np.zeros((0, 2), int)
    D = distance_matrix(d1, d2, metric)
    a, b = D.argmin(axis=1), D.argmin(axis=0)
    i = np.flatnonzero(b[a] == np.arange(len(d1)))
    return np.c_[i, a[i]]


def homography_from_matches(p1: np.ndarray, d1: np.ndarray, p2: np.ndarray, d2: np.ndarray, metric: str,
                            H_true: np.ndarray, shape: tuple[int, int]) -> dict[str, Any]:
    """Mutual nearest neighbours of keypoints p1 ([N x 2], descriptors d1) and p2, RANSAC (3 px), and the mean
    corner error (px) of the estimate against ``H_true`` over the corners of an image of ``shape`` (rows, cols)."""
    m = mutual_nearest(d1, d2, metric)
    a, b = p1[m[:, 0]].astype(np.float32), p2[m[:, 1]].astype(np.float32)
    correct = 0
    if len(a):
        proj = cv2.perspectiveTransform(a.reshape(-1, 1, 2), np.asarray(H_true, np.float64)).reshape(-1, 2)
        correct = int((np.linalg.norm(proj - b, axis=1) <= 3.0).sum())
    out = {"keypoints": [len(p1), len(p2)], "matches": len(m), "correct_matches_3px": correct, "inliers": 0,
           "error_px": None}
    if len(m) >= 4:
        H, mask = cv2.findHomography(a, b, cv2.RANSAC, 3.0)
        if H is not None and np.all(np.isfinite(H)):
            out["inliers"] = int(mask.sum())
            out["error_px"] = float(corner_error(H, H_true, patch_corners(shape[1], shape[0])))
    return out


def match_homography(method: PatchMethod, img1: np.ndarray, img2: np.ndarray, H_true: np.ndarray,
                     keypoints: int) -> dict[str, Any]:
    """The DoG keypoints of both images (``patch_sets.detect``) described by ``method``; see
    :func:`homography_from_matches`. "keypoints" counts those described (ORB drops some near the border)."""
    p1, s1 = detect(img1, keypoints)
    p2, s2 = detect(img2, keypoints)
    i1, d1 = method.keypoints(img1, p1, s1)
    i2, d2 = method.keypoints(img2, p2, s2)
    return {**homography_from_matches(p1[i1], d1, p2[i2], d2, method.metric, H_true, img1.shape[:2]),
            "detected": [len(p1), len(p2)]}


#: Image-level reference: SIFT as usually run (its own keypoints, with their dominant orientations).
SIFT_ORIENTED = "SIFT (oriented, own keypoints)"


def sift_oriented_homography(img1: np.ndarray, img2: np.ndarray, H_true: np.ndarray, keypoints: int) -> dict[str, Any]:
    sift = cv2.SIFT_create(nfeatures=keypoints)
    k1, d1 = sift.detectAndCompute(img1, None)
    k2, d2 = sift.detectAndCompute(img2, None)
    pts = lambda kps: np.array([k.pt for k in kps], np.float64).reshape(-1, 2)  # noqa: E731
    return homography_from_matches(pts(k1), unit_rows(d1), pts(k2), unit_rows(d2), "l2", H_true, img1.shape[:2])


def run_graf_homographies(methods: Sequence[PatchMethod], data_root: Path, keypoints: int = 2000,
                          progress_factory: Progress | None = None) -> dict[str, Any]:
    """{"pairs": [labels], "methods": {name: {"pairs": [per-pair dicts], "correct_<t>px": share}}} on graf
    img1 → img2..6; the last entry is SIFT as usually run (``SIFT_ORIENTED``), a reference on other keypoints."""
    pairs = graf_images(Path(data_root))
    runs: list[tuple[str, Callable]] = [(m.name, lambda a, b, H, m=m: match_homography(m, a, b, H, keypoints))
                                        for m in methods]
    runs.append((SIFT_ORIENTED, lambda a, b, H: sift_oriented_homography(a, b, H, keypoints)))
    prog = progress_factory(len(runs) * len(pairs), "graf homographies") if progress_factory else None
    out: dict[str, Any] = {"pairs": [p[0] for p in pairs], "methods": {}}
    for ri, (name, run) in enumerate(runs):
        rows = []
        for pi, (_, a, b, H) in enumerate(pairs):
            rows.append(run(a, b, H))
            if prog:
                prog(ri * len(pairs) + pi + 1)
        errs = np.array([np.inf if r["error_px"] is None else r["error_px"] for r in rows])
        out["methods"][name] = {"pairs": rows, **{f"correct_{t:g}px": float((errs <= t).mean())
                                                  for t in THRESHOLDS_PX}}
    return out


# -- timing ---------------------------------------------------------------------------------------------------
def time_methods(methods: Sequence[PatchMethod], grey: np.ndarray, keypoints: int = 1000,
                 runs: int = 5) -> dict[str, Any]:
    """Median milliseconds (of ``runs``, after one warm-up) to describe the strongest ``keypoints`` DoG keypoints
    of ``grey`` (cutting the patches included), and each method's time / SIFT's."""
    pts, sizes = detect(grey, keypoints)
    ms: dict[str, float] = {}
    for m in methods:
        m.keypoints(grey, pts, sizes)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            m.keypoints(grey, pts, sizes)
            times.append((time.perf_counter() - t0) * 1e3)
        ms[m.name] = float(np.median(times))
    sift = ms.get("SIFT")
    return {"keypoints": len(pts), "runs": runs, "median_ms": ms,
            "ratio_to_sift": {k: v / sift for k, v in ms.items()} if sift else {}}


# -- report ---------------------------------------------------------------------------------------------------
TASKS = ("verification", "matching", "retrieval")


def map_png(tasks: dict[str, dict[str, dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(tasks)
    methods = list(tasks[splits[0]]) if splits else []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(splits))
    for ax, task in zip(axes, TASKS):
        for i, m in enumerate(methods):
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, [tasks[s][m][task] for s in splits], width, label=m)
        ax.set_xticks(x, splits, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{task} mAP")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=max(len(methods), 1), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def homography_png(graf: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(graf["methods"])
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(THRESHOLDS_PX)
    x = np.arange(len(methods))
    for i, t in enumerate(THRESHOLDS_PX):
        ax.bar(x + (i - (len(THRESHOLDS_PX) - 1) / 2) * width,
               [graf["methods"][m][f"correct_{t:g}px"] for m in methods], width, label=f"≤ {t:g} px")
    ax.set_xticks(x, methods, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"share of the {len(graf['pairs'])} graf pairs")
    ax.set_title("Homography from mutual NN + RANSAC: mean corner error within")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _f(v: float | None, fmt: str = "{:.3f}") -> str:
    return "–" if v is None or not np.isfinite(v) else fmt.format(v)


def report_lines(metrics: dict[str, Any]) -> list[str]:
    h = metrics["header"]
    lines = [f"# Patch descriptor evaluation ({h['date']})", ""]
    lines += [f"- command: `{h['command']}`" if h.get("command") else "- command: (library call)",
              f"- run time: {h['seconds']:.0f} s"]
    lines += [f"- {name}: {label}" for name, label in h["methods"].items()]
    lines += [f"- choices: {c}" for c in h["choices"]]
    for name, reason in h["skipped"].items():
        lines.append(f"- skipped {name}: {reason}")
    lines += ["", "## Held-out patch sets", "", "| sequence | kind | patches | targets |", "|---|---|---|---|"]
    lines += [f"| {s['name']} | {s['kind']} | {s['patches']} | {s['targets']} |" for s in h["sequences"]]
    tasks, sizes = metrics["patch_tasks"], metrics["split_sizes"]
    splits = list(tasks)
    methods = list(tasks[splits[0]]) if splits else []
    lines += ["", "## HPatches tasks (mAP)", "",
              "Verification: intra / inter (negatives from the same / other sequences, 1:"
              f"{h['settings']['negatives']} each); the table's value is their mean. "
              "graf-* are the real-image part of viewpoint-*.", ""]
    for task in TASKS:
        lines += [f"### {task}", "", "| descriptor | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
        for m in methods:
            cells = []
            for s in splits:
                r = tasks[s][m]
                cell = _f(r[task])
                if task == "verification":
                    cell += f" ({_f(r['verification_intra'])} / {_f(r['verification_inter'])})"
                cells.append(cell)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Split sizes:", "", "| split | sequences | ref. patches | positives | intra neg. | inter neg. | "
              "queries | retrieval pool |", "|---|---|---|---|---|---|---|---|"]
    for s, z in sizes.items():
        lines.append(f"| {s} | {z['sequences']} | {z['reference_patches']} | {z['positive_pairs']} | "
                     f"{z['intra_negative_pairs']} | {z['inter_negative_pairs']} | {z['retrieval_queries']} | "
                     f"{z['retrieval_pool']} |")
    lines += ["", "![mAP per split](map.png)", ""]
    graf = metrics.get("graf_homography")
    lines += ["## Image level: Oxford graf, homography from matched keypoints", ""]
    if graf is None:
        lines += [f"Skipped: {h['skipped'].get('oxford-graf', 'no graf')}", ""]
    else:
        lines += [f"DoG keypoints (up to {h['settings']['image_keypoints']} per image), each descriptor on the same "
                  "keypoints, mutual nearest neighbours, RANSAC 3 px; cell: mean corner error px (inliers / "
                  f"mutual matches; * no homography). {SIFT_ORIENTED}: SIFT as usually run (its detector's "
                  "keypoints, with their dominant orientations; the others are upright), for reference.", "",
                  "| descriptor | " + " | ".join(graf["pairs"]) + " | ≤1 px | ≤3 px | ≤5 px |",
                  "|---|" + "---|" * (len(graf["pairs"]) + 3)]
        for m, r in graf["methods"].items():
            cells = [(_f(p["error_px"], "{:.1f}") if p["error_px"] is not None else "*")
                     + f" ({p['inliers']}/{p['matches']})" for p in r["pairs"]]
            lines.append(f"| {m} | " + " | ".join(cells) + " | "
                         + " | ".join(f"{r[f'correct_{t:g}px']:.0%}" for t in THRESHOLDS_PX) + " |")
        lines += ["", "![homography correctness](homography.png)", ""]
    t = metrics.get("timing")
    lines += ["## Time to describe keypoints", ""]
    if t:
        lines += [f"{t['keypoints']} DoG keypoints of {t['image']}, median of {t['runs']} runs (patch cutting "
                  "included), this machine's CPU unless the label says otherwise.", "",
                  "| descriptor | ms | × SIFT |", "|---|---|---|"]
        for m, ms in t["median_ms"].items():
            lines.append(f"| {m} | {ms:.1f} | {_f(t['ratio_to_sift'].get(m), '{:.2f}')} |")
    lines.append("")
    return lines


def write_report(out: Path, metrics: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    if metrics["patch_tasks"]:
        map_png(metrics["patch_tasks"], out / "map.png")
    if metrics.get("graf_homography"):
        homography_png(metrics["graf_homography"], out / "homography.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    md = out / "report.md"
    md.write_text("\n".join(report_lines(metrics)) + "\n")
    return md


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(o: Any) -> Any:
    """NaN → None, so that metrics.json is strict JSON."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_clean(v) for v in o]
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o


CHOICES = (
    "SIFT on patches: sift.compute at the patch centre, KeyPoint.size = 32/6 (SIFT's window, 4x4 cells of "
    "3 sigma = 6 x size, spans the patch), upright, DoG layer of that size; patch centred in a 64x64 "
    "replicated-border cell",
    "ORB on patches: the patch resized to 31x31 (ORB's window), orb.compute at its centre, upright, level 0, "
    "in a 64x64 replicated-border cell; Hamming distance",
    "raw pixels: 1024 grey levels, zero mean, unit norm; float descriptors scaled to unit norm, Euclidean "
    "distance",
    "image level: SIFT on the DoG layer of each keypoint's size, ORB on the pyramid level (x1.2) whose 31-px "
    "window is nearest to 6 x size; all upright",
)


def evaluate(methods: Sequence[PatchMethod], data_root: Path, out: Path,
             settings: PatchEvalSettings = FULL, *, command: str = "",
             progress_factory: Progress | None = None) -> Path:
    """Build the held-out sets, run every task for every method, write the report; returns ``report.md``."""
    start = time.perf_counter()
    data_root = Path(data_root)
    n_sets = 1 + 2 * len(settings.seeds)
    prog = progress_factory(n_sets, "held-out patch sets") if progress_factory else None
    seqs, skipped = held_out_sequences(data_root, settings, prog)
    tasks, sizes = run_patch_tasks(methods, seqs, settings, progress_factory)
    graf = timing = None
    if (data_root / "oxford_graf").is_dir():
        graf = run_graf_homographies(methods, data_root, settings.image_keypoints, progress_factory)
        grey, image = graf_images(data_root)[0][1], "Oxford graf img1"
    else:
        from deep_vision.synthetic import SyntheticSequence
        from deep_vision.synthetic.config import SyntheticWorldConfig

        seed = settings.seeds[0] if settings.seeds else 9001
        grey, image = SyntheticSequence(SyntheticWorldConfig(seed=seed, frames=2)).image(0), f"synthetic {seed} frame 0"
    timing = {"image": image, **time_methods(methods, grey, settings.timing_keypoints, settings.timing_runs)}
    header = {
        "date": date.today().isoformat(), "command": command, "seconds": time.perf_counter() - start,
        "data": str(data_root), "methods": {m.name: m.label for m in methods}, "settings": asdict(settings),
        "choices": list(CHOICES), "skipped": skipped,
        "sequences": [{"name": s.name, "kind": s.kind, "patches": len(s),
                       "targets": len(next(iter(s.targets.values())))} for s in seqs],
    }
    metrics = _clean({"header": header, "patch_tasks": tasks, "split_sizes": sizes, "graf_homography": graf,
                      "timing": timing})
    return write_report(Path(out), metrics)


def update_card(model_path: Path, metrics_json: Path, method: str = "learned") -> Path:
    """Copy the held-out figures of ``method`` (and SIFT's, for reference) into the card beside ``model_path``."""
    from deep_vision.inference.modelcard import ModelCard, card_path_for

    card_path = card_path_for(Path(model_path))
    card = ModelCard.load(card_path)
    report = json.loads(Path(metrics_json).read_text())
    r4 = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
    metrics = dict(card.metrics or {})
    for name, key in ((method, "held_out_patches"), ("SIFT", "held_out_patches_sift")):
        metrics[key] = {split: {task: r4(by_method[name][task]) for task in TASKS}
                        for split, by_method in report["patch_tasks"].items() if name in by_method}
    st = report["header"]["settings"]
    sets = (["Oxford graf"] if any(q["name"] == "oxford-graf" for q in report["header"]["sequences"]) else []) + [
        f"synthetic seeds {', '.join(map(str, st['seeds']))} ({st['sequences']} viewpoint + {st['sequences']} "
        "illumination sequences each)"] * bool(st["seeds"])
    metrics["held_out_patches_description"] = (
        f"HPatches mAP (verification 1:{st['negatives']} intra + inter, matching, retrieval) on "
        f"{' and '.join(sets)}, up to {st['keypoints']} patches per reference, seed {st['seed']}")
    graf = report.get("graf_homography")
    if graf and method in graf["methods"]:
        metrics["held_out_graf_homography_correct"] = {
            name: {f"{t:g}px": r4(graf["methods"][name][f"correct_{t:g}px"]) for t in THRESHOLDS_PX}
            for name in (method, "SIFT", SIFT_ORIENTED) if name in graf["methods"]}
    timing = report.get("timing") or {}
    if method in timing.get("ratio_to_sift", {}):
        metrics["describe_time_vs_sift"] = {"keypoints": timing["keypoints"], "image": timing["image"],
                                            "ratio": r4(timing["ratio_to_sift"][method]),
                                            "median_ms": r4(timing["median_ms"][method])}
    metrics["report"] = f"{Path(metrics_json).resolve().parent.name}/report.md"
    card.metrics = metrics
    card.save(card_path)
    return card_path


def evaluate_from_cli(args: Any) -> int:
    """``deep-vision evaluate patches`` (args: model, compare, backend, threads, data, out, quick, seed, keypoints,
    synthetic_seeds, update_card)."""
    from deep_vision.errors import ConfigError
    from deep_vision.eval.progress import cli_command, progress_bars

    model = args.model
    if model is None:
        from deep_vision.resources import default_model_path

        try:
            model = default_model_path("patch")
        except ModelError as exc:
            raise ModelError(f"--model: {exc} (or pass --model PATH)") from exc
    threads = getattr(args, "threads", 0) or None
    methods = [load_learned("learned", model, "--model", args.backend, threads)]
    for spec in getattr(args, "compare", None) or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--compare {spec!r}: expected NAME=PATH")
        if name in {m.name for m in methods} | {"SIFT", "ORB", "raw pixels"}:
            raise ConfigError(f"--compare {spec!r}: the name {name!r} is taken")
        methods.append(load_learned(name, path, f"--compare {name}=", args.backend, threads))
    if getattr(args, "update_card", False):
        from deep_vision.inference.modelcard import ModelCard, card_path_for

        try:
            ModelCard.load(card_path_for(Path(model)))
        except ModelError as exc:
            raise ModelError(f"--update-card: {exc}") from exc
    methods += classical_methods()
    base = QUICK if getattr(args, "quick", False) else FULL
    seeds = tuple(int(s) for s in str(getattr(args, "synthetic_seeds", "9001,9002")).split(",") if s.strip())
    settings = PatchEvalSettings(**{**asdict(base), "seeds": seeds, "seed": int(getattr(args, "seed", 0) or 0),
                                    **({"keypoints": int(args.keypoints)} if getattr(args, "keypoints", None) else {})})
    out = Path(args.out) if args.out else Path("bench/results") / f"patches-{date.today().isoformat()}"
    with progress_bars() as progress:
        md = evaluate(methods, Path(args.data), out, settings, command=cli_command(), progress_factory=progress)
    print(md.read_text())
    print(f"report:  {md}")
    print(f"metrics: {md.parent / 'metrics.json'}")
    if getattr(args, "update_card", False):
        print(f"model card updated: {update_card(Path(model), md.parent / 'metrics.json')}")
    return 0
