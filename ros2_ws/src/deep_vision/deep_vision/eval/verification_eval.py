"""Geometric verification of loop-closure candidates: local features compared on the same image pairs.

The loop-closure :class:`~deep_vision.estimators.loop_closure.GeometricVerifier` is built from
``place_recognition_node``'s shipped parameters (``config/perception.yaml``) plus each variant's overrides
(``{"features": "orb"}``, ``{"features": "learned", "patch_model_path": "models/patch.onnx"}``, ...) and run on
the same pairs of every data set:

- **synthetic**: the world of a held-out seed (:data:`~deep_vision.eval.place_eval.SYNTHETIC_EVAL_SEEDS`,
  never trained on), its default closed route (600 frames, 450 with ``--quick``) at 620 x 188. Positives: true revisits
  (:attr:`SyntheticSequence.revisits <deep_vision.synthetic.SyntheticSequence.revisits>`: passes at least
  20 s apart, camera centres within 4 m, headings within 30°), drawn at random; negatives: frames whose
  camera centres lie more than 50 m apart, :attr:`Settings.negative_ratio` (2) times as many as positives.
- **kitti**: odometry sequences 00 (frames 100-159, PNG) and 03 (frames 550-800, JPEG re-encodes).
  Positives: frames 5, 10 and 15 apart in one sequence (forward driving, overlapping views: median 2.5 / 5 /
  7.5 m in 00, 4 / 8 / 12 m in 03, down to 0.3 m where 03 slows at its end); negatives: frames of 03 more
  than 100 m apart and frames of different sequences, half each (2x the positives).
- **euroc**: the EuRoC V1_01 loop pairs of :data:`~deep_vision.eval.place_eval.EUROC_PAIRS` (left camera,
  keypoints undistorted with its radial-tangential coefficients): two same-place pairs, one wrong place. Only the
  revisit's rotation angle is known, so its rotation error is the angle's (a lower bound).

Per data set and variant: precision and recall of ``verified``; the precision-recall curve over the inlier
count of verified pairs (a pair is accepted at threshold t when verified with at least t inliers), its recall
at 100 % precision; the fewest inliers of a verified positive and the most of any negative (where
``min_inliers`` may go); the relative-pose error of verified positives against
the ground truth (rotation angle of ``R_est^T R_true``, angle between the estimated and true translation
directions; the direction only for baselines of at least 0.5 m, shorter ones are not observable at these
resolutions); median time to extract one image's features and to verify one pair.

The camera's pose on the robot (``camera_pose``) is dropped: the ground-plane (metric) constraint is not
measured here and its top-view rendering would blur the feature timings.

Writes ``<out>/verification.md``, ``<out>/metrics.json`` and ``<out>/pr-<data set>.png``.

.. code-block:: bash

    .venv/bin/python -m deep_vision.eval.verification_eval --out reports/verification --quick \\
        --patch-model models/patch.onnx
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from deep_vision.errors import ModelError
from deep_vision.eval.place_eval import (
    EUROC_PAIRS,
    SYNTHETIC_EVAL_FIRST_SEED,
    read_euroc_camera,
    route_config,
)
from deep_vision.eval.progress import Progress

logger = logging.getLogger(__name__)

#: The comparison the package's default is chosen by; sift for reference.
DEFAULT_VARIANTS: dict[str, dict[str, Any]] = {
    "orb": {"features": "orb"},
    "sift": {"features": "sift"},
    "learned": {"features": "learned", "patch_model_path": "models/patch.onnx"},
}
#: KITTI sequences and frame ranges (inclusive) of the benchmark: (sequence, first, last).
KITTI_RANGES = (("00", 100, 159), ("03", 550, 800))
MIN_DIRECTION_BASELINE_M = 0.5


# ============================================================================ pairs
@dataclass
class Pair:
    """Two images to verify; the query is the later one (as in loop closure)."""

    query: str  # image key of the query
    match: str  # image key of the match
    positive: bool  # same place: the verifier should accept it
    kind: str  # how the pair was drawn ("revisit 2.3 m", "gap 10", "far 73 m", "other sequence", ...)
    T_mq: np.ndarray | None = None  # [4 x 4] true pose of the query camera in the match camera's frame
    true_angle_deg: float | None = None  # the true rotation angle, where only that is known (EuRoC)


@dataclass
class PairSet:
    """The pairs of one data set and how to read their images and cameras."""

    name: str
    description: str
    pairs: list[Pair]
    load: Callable[[str], np.ndarray]  # image key -> [H x W] uint8 grey image
    camera: Callable[[str], tuple[np.ndarray, np.ndarray | None]]  # image key -> (K [3 x 3], distortion or None)

    @property
    def keys(self) -> list[str]:
        """The images the pairs use, each once, in first-use order."""
        return list(dict.fromkeys(k for p in self.pairs for k in (p.query, p.match)))

    @property
    def positives(self) -> int:
        return sum(p.positive for p in self.pairs)


@dataclass
class Settings:
    """How many pairs each data set gets; :data:`QUICK` runs orb, sift and learned in a few minutes on 2 cores."""

    synthetic_frames: int = 600  # the default route: 2.4 laps
    synthetic_size: tuple[int, int] = (620, 188)
    synthetic_positives: int = 150
    synthetic_far_m: float = 50.0
    negative_ratio: int = 2  # negatives per positive (synthetic and KITTI)
    kitti_gaps: tuple[int, ...] = (5, 10, 15)
    kitti_stride: int = 5  # a positive pair starts every this many frames
    kitti_far_m: float = 100.0
    euroc: bool = True
    sample_seed: int = 0  # the random draw of pairs (the same for every variant)


FULL = Settings()
QUICK = Settings(synthetic_frames=450, synthetic_positives=30, kitti_stride=15)


def _relative(T_world_a: np.ndarray, T_world_b: np.ndarray) -> np.ndarray:
    """Pose of camera b in camera a's frame: T_ab = T_world_a⁻¹ T_world_b."""
    from deep_vision.geometry.transforms import invert_transform

    return invert_transform(T_world_a) @ T_world_b


def _far_pairs(centres: dict[str, np.ndarray], keys: Sequence[str], far_m: float, n: int,
               rng: np.random.Generator, allowed: Callable[[str, str], bool] = lambda a, b: True) -> list[Pair]:
    """``n`` pairs (at most) among ``keys`` whose camera centres lie more than ``far_m`` apart, drawn at random."""
    keys = list(keys)
    candidates = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1:]
                  if allowed(a, b) and np.linalg.norm(centres[a] - centres[b]) > far_m]
    if not candidates:
        return []
    chosen = rng.choice(len(candidates), min(n, len(candidates)), replace=False)
    out = []
    for k in sorted(chosen):
        a, b = candidates[k]
        out.append(Pair(b, a, False, f"far {np.linalg.norm(centres[a] - centres[b]):.0f} m"))
    return out


def synthetic_pairs(seeds: Sequence[int], settings: Settings = FULL, config_for: Callable[[int], Any] | None = None
                    ) -> PairSet:
    """Revisits (positives) and far frames (negatives) of the held-out worlds ``seeds``.

    ``config_for(seed)`` gives the world's config (default: :func:`~deep_vision.eval.place_eval.route_config`
    at ``settings``' frames and size).
    """
    from deep_vision.synthetic import SyntheticSequence

    if any(s < SYNTHETIC_EVAL_FIRST_SEED for s in seeds):
        logger.warning("synthetic seeds %s are below %d: they may have been trained on", list(seeds),
                       SYNTHETIC_EVAL_FIRST_SEED)
    w, h = settings.synthetic_size
    config_for = config_for or (lambda s: route_config(s, settings.synthetic_frames, w, h))
    rng = np.random.default_rng(settings.sample_seed)
    sequences: dict[int, Any] = {}
    pairs: list[Pair] = []
    for seed in seeds:
        seq = sequences[seed] = SyntheticSequence(config_for(seed))
        T = seq.T_world_cam
        revisits = seq.revisits
        if not revisits:
            logger.warning("synthetic world %d: no revisits on its route; no pairs from it", seed)
            continue
        picked = sorted(rng.choice(len(revisits), min(settings.synthetic_positives, len(revisits)), replace=False))
        positives = [Pair(f"{seed}/{revisits[k].query}", f"{seed}/{revisits[k].match}", True,
                          f"revisit {revisits[k].distance_m:.1f} m",
                          _relative(T[revisits[k].match], T[revisits[k].query])) for k in picked]
        # Negatives among the positives' frames first (no more images to describe), then any frame.
        used = list(dict.fromkeys(k for p in positives for k in (p.match, p.query)))
        centres = {f"{seed}/{i}": T[i, :3, 3] for i in range(len(seq))}
        want = settings.negative_ratio * len(positives)
        negatives = _far_pairs(centres, used, settings.synthetic_far_m, want, rng)
        if len(negatives) < want:
            taken = set(used)
            spare = [k for k in centres if k not in taken][::max(1, len(seq) // 100)]
            more = _far_pairs(centres, used + spare, settings.synthetic_far_m, 4 * want, rng)
            have = {(p.query, p.match) for p in negatives}
            negatives += [p for p in more if (p.query, p.match) not in have][:want - len(negatives)]
        for p in negatives:
            a, b = (int(k.split("/")[1]) for k in (p.query, p.match))
            p.T_mq = _relative(T[b], T[a])
        pairs += positives + negatives

    def load(key: str) -> np.ndarray:
        seed, i = (int(v) for v in key.split("/"))
        return sequences[seed].image(i)

    def camera(key: str) -> tuple[np.ndarray, None]:
        return sequences[int(key.split("/")[0])].camera.K, None

    n_pos = sum(p.positive for p in pairs)
    first = next(iter(sequences.values()), None)
    if first is not None:
        w, h = first.camera.width, first.camera.height
    frames = "/".join(sorted({str(len(s)) for s in sequences.values()})) or "0"
    description = (f"world seed(s) {', '.join(map(str, seeds))}, {frames} frames at {w}x{h}; "
                   f"{n_pos} revisits (≤ 4 m, ≤ 30°, ≥ 20 s apart) drawn at random, {len(pairs) - n_pos} pairs "
                   f"> {settings.synthetic_far_m:g} m apart ({settings.negative_ratio}x)")
    return PairSet("synthetic", description, pairs, load, camera)


def kitti_available(data_root: Path) -> list[str]:
    """Problems that keep the KITTI pairs from being built (empty: every sequence, pose and frame present)."""
    from deep_vision.errors import DatasetError
    from deep_vision.io.kitti import KittiSequence

    root = Path(data_root) / "kitti"
    missing = []
    for name, _, last in KITTI_RANGES:
        try:
            seq = KittiSequence(root / "sequences" / name)
        except (DatasetError, OSError) as exc:
            missing.append(str(exc))
            continue
        if seq.poses is None:
            missing.append(str(root / "poses" / f"{name}.txt"))
        elif len(seq) <= last:
            missing.append(f"{seq.image_dir}: {len(seq)} frames, frame {last} needed")
    return missing


def kitti_pairs(data_root: Path, settings: Settings = FULL) -> PairSet:
    """Same-sequence frames ``kitti_gaps`` apart (positives); frames > ``kitti_far_m`` apart or of different
    sequences (negatives, half each where both kinds exist)."""
    from deep_vision.io.kitti import KittiSequence

    root = Path(data_root) / "kitti"
    rng = np.random.default_rng(settings.sample_seed)
    sequences = {name: KittiSequence(root / "sequences" / name) for name, _, _ in KITTI_RANGES}
    poses: dict[str, np.ndarray] = {name: seq.poses for name, seq in sequences.items()}
    Ks: dict[str, np.ndarray] = {name: seq.camera.K for name, seq in sequences.items()}
    positives: list[Pair] = []
    for name, first, last in KITTI_RANGES:
        for start in range(first, last - min(settings.kitti_gaps) + 1, settings.kitti_stride):
            for gap in settings.kitti_gaps:
                if start + gap <= last:
                    positives.append(Pair(f"{name}/{start + gap}", f"{name}/{start}", True, f"gap {gap}",
                                          _relative(poses[name][start], poses[name][start + gap])))

    def seq_of(key: str) -> str:
        return key.split("/")[0]

    def pose(key: str) -> np.ndarray:
        name, i = key.split("/")
        return poses[name][int(i)]

    used = list(dict.fromkeys(k for p in positives for k in (p.match, p.query)))
    centres = {k: pose(k)[:3, 3] for k in used}
    want = settings.negative_ratio * len(positives)
    far = _far_pairs(centres, used, settings.kitti_far_m, want // 2, rng, lambda a, b: seq_of(a) == seq_of(b))
    # Different sequences: different places (different cities' streets), whatever the coordinates say.
    other = _far_pairs(centres, used, -1.0, want - len(far), rng, lambda a, b: seq_of(a) != seq_of(b))
    for p in other:
        p.kind = "other sequence"
    for p in far:
        p.T_mq = _relative(pose(p.match), pose(p.query))
    pairs = positives + far + other

    def load(key: str) -> np.ndarray:
        name, i = key.split("/")
        return sequences[name].image(int(i))

    def camera(key: str) -> tuple[np.ndarray, None]:
        return Ks[seq_of(key)], None

    ranges = ", ".join(f"{n} frames {a}-{b}" for n, a, b in KITTI_RANGES)
    description = (f"KITTI odometry {ranges}, left grey camera; {len(positives)} same-sequence pairs "
                   f"{'/'.join(map(str, settings.kitti_gaps))} frames apart (a pair starting every "
                   f"{settings.kitti_stride} frames); {len(far)} pairs > {settings.kitti_far_m:g} m apart in one "
                   f"sequence and {len(other)} of different sequences")
    return PairSet("kitti", description, pairs, load, camera)


def euroc_pairs(data_root: Path) -> PairSet:
    """The EuRoC V1_01 loop pairs (:data:`~deep_vision.eval.place_eval.EUROC_PAIRS`), left camera."""
    from deep_vision.io.vpr import read_image

    folder = Path(data_root) / "euroc_loop_pairs"
    K, D = read_euroc_camera(folder / "sensorLeft.yaml")
    pairs = [Pair(f"left_img_{q}", f"left_img_{m}", same, f"img_{q} of img_{m} ({name})", None, true_deg)
             for name, q, m, true_deg, _, same in EUROC_PAIRS]
    n_pos = sum(p.positive for p in pairs)
    return PairSet("euroc", f"EuRoC V1_01 loop pairs, left camera (distorted): {n_pos} same place, "
                            f"{len(pairs) - n_pos} wrong place; only the revisit's rotation angle is known",
                   pairs, lambda key: read_image(folder / f"{key}.png"), lambda key: (K, D))


def pair_sets(data_root: Path, synthetic_seeds: Sequence[int], settings: Settings = FULL) -> list[PairSet]:
    """The data sets present: synthetic (when seeds are given), KITTI and EuRoC when their files are there."""
    out = []
    if synthetic_seeds:
        out.append(synthetic_pairs(synthetic_seeds, settings))
    missing = kitti_available(data_root)
    if missing:
        logger.warning("KITTI skipped: %d file(s) absent under %s, e.g. %s", len(missing), data_root, missing[0])
    else:
        out.append(kitti_pairs(data_root, settings))
    if settings.euroc:
        folder = Path(data_root) / "euroc_loop_pairs"
        needed = [folder / "sensorLeft.yaml"] + [folder / f"left_img_{i}.png" for i in range(4)]
        absent = [p for p in needed if not p.is_file()]
        if absent:
            logger.warning("EuRoC loop pairs skipped: %s is absent", absent[0])
        else:
            out.append(euroc_pairs(data_root))
    return out


# ============================================================================ metrics
def rotation_error_deg(R_est: np.ndarray, R_true: np.ndarray) -> float:
    """Angle (degrees) of the rotation between two [3 x 3] rotations: ∠(R_estᵀ R_true)."""
    from deep_vision.geometry.transforms import rotation_angle

    return math.degrees(rotation_angle(np.asarray(R_est, float).T @ np.asarray(R_true, float)))


def direction_error_deg(t_est: np.ndarray, t_true: np.ndarray) -> float:
    """Angle (degrees) between two [3] translation directions (any lengths, neither zero)."""
    a, b = np.asarray(t_est, float).ravel(), np.asarray(t_true, float).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise ValueError("direction_error_deg: a translation has zero length")
    return math.degrees(math.acos(float(np.clip(a @ b / (na * nb), -1.0, 1.0))))


def verification_pr(verified: np.ndarray, inliers: np.ndarray, positive: np.ndarray) -> dict[str, Any]:
    """Precision and recall of ``verified`` and the precision-recall curve over the inlier count.

    At threshold t a pair is accepted when verified with at least t inliers; thresholds are the verified pairs'
    inlier counts, highest first (ties accept together: place_eval.precision_recall steps through tied
    detections one by one, which no threshold can do). Recall counts accepted positives over all positives.

    Returns ``precision``, ``recall`` (of ``verified``; precision NaN when nothing is verified),
    ``recall_at_100_precision`` (0 when no threshold gives precision 1), ``threshold_at_100_precision``
    (the lowest of the thresholds reaching it; None when none does), ``weakest_positive_inliers`` (fewest
    inliers of a verified positive) and ``strongest_negative_inliers`` (most inliers of any negative, verified
    or not): a ``min_inliers`` between the two separates them. ``curve``: {threshold, precision, recall}.
    """
    verified, positive = np.asarray(verified, bool), np.asarray(positive, bool)
    inliers = np.asarray(inliers, float)
    if not verified.shape == inliers.shape == positive.shape:
        raise ValueError(f"verification_pr: verified {verified.shape}, inliers {inliers.shape} and "
                         f"positive {positive.shape} must have one shape")
    n_pos = int(positive.sum())
    tp = int((verified & positive).sum())
    n_ver = int(verified.sum())
    thresholds = np.unique(inliers[verified])[::-1]
    curve_p, curve_r = [], []
    for t in thresholds:
        accepted = verified & (inliers >= t)
        hits = int((accepted & positive).sum())
        curve_p.append(hits / int(accepted.sum()))
        curve_r.append(hits / n_pos if n_pos else math.nan)
    best_r, best_t = 0.0, None
    for t, p, r in zip(thresholds, curve_p, curve_r):
        if p >= 1.0 and r >= best_r and r > 0:
            best_r, best_t = r, float(t)
    return {"pairs": int(len(positive)), "positives": n_pos, "negatives": int(len(positive) - n_pos),
            "verified": n_ver, "true_positives": tp, "false_positives": n_ver - tp,
            "precision": tp / n_ver if n_ver else math.nan, "recall": tp / n_pos if n_pos else math.nan,
            "recall_at_100_precision": best_r, "threshold_at_100_precision": best_t,
            "weakest_positive_inliers": int(inliers[verified & positive].min()) if tp else None,
            "strongest_negative_inliers": int(inliers[~positive].max()) if (~positive).any() else None,
            "curve": {"threshold": [float(t) for t in thresholds], "precision": curve_p, "recall": curve_r}}


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 95)) -> dict[str, Any]:
    """{"p50": ..., "p95": ..., "n": ...} of ``values`` (NaN when empty)."""
    v = np.asarray(values, float)
    out: dict[str, Any] = {f"p{q}": float(np.percentile(v, q)) if v.size else math.nan for q in qs}
    out["n"] = int(v.size)
    return out


# ============================================================================ running
def pose_errors(pair: Pair, v: Any) -> dict[str, float | None]:
    """Rotation and direction error (degrees) of a verified pose against ``pair``'s truth; None where unknown."""
    out: dict[str, float | None] = {"rotation_err_deg": None, "direction_err_deg": None, "angle_err_deg": None}
    if not v.verified or not v.has_pose:
        return out
    if pair.T_mq is not None:
        out["rotation_err_deg"] = rotation_error_deg(v.rotation, pair.T_mq[:3, :3])
        baseline = float(np.linalg.norm(pair.T_mq[:3, 3]))
        if baseline >= MIN_DIRECTION_BASELINE_M:
            out["direction_err_deg"] = direction_error_deg(v.translation, pair.T_mq[:3, 3])
    elif pair.true_angle_deg is not None:
        from deep_vision.geometry.transforms import rotation_angle

        out["angle_err_deg"] = abs(math.degrees(rotation_angle(v.rotation)) - pair.true_angle_deg)
    return out


def run_variant(verifier: Any, pair_set: PairSet, images: dict[str, np.ndarray],
                progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Extract every image's features, verify every pair; the metrics and one row per pair."""
    features: dict[str, Any] = {}
    extract_ms: list[float] = []
    step = 0
    for key in pair_set.keys:
        K, D = pair_set.camera(key)
        t0 = time.perf_counter()
        features[key] = verifier.extract(images[key], K, D)
        extract_ms.append(1e3 * (time.perf_counter() - t0))
        step += 1
        if progress:
            progress(step)
    rows, verify_ms = [], []
    for pair in pair_set.pairs:
        Kq, Km = pair_set.camera(pair.query)[0], pair_set.camera(pair.match)[0]
        t0 = time.perf_counter()
        v = verifier.verify(features[pair.query], features[pair.match], Kq, Km)
        verify_ms.append(1e3 * (time.perf_counter() - t0))
        rows.append({"query": pair.query, "match": pair.match, "positive": pair.positive, "kind": pair.kind,
                     "verified": bool(v.verified), "inliers": int(v.inliers), "matches": int(v.matches),
                     "has_pose": bool(v.has_pose), **pose_errors(pair, v)})
        step += 1
        if progress:
            progress(step)
    metrics = verification_pr(np.array([r["verified"] for r in rows], bool), np.array([r["inliers"] for r in rows]),
                              np.array([r["positive"] for r in rows], bool))
    good = [r for r in rows if r["positive"] and r["verified"]]
    for key in ("rotation_err_deg", "direction_err_deg", "angle_err_deg"):
        metrics[key] = percentiles([r[key] for r in good if r[key] is not None])
    metrics["verified_positives_without_pose"] = sum(not r["has_pose"] for r in good)
    metrics["features_per_image"] = percentiles([len(f) for f in features.values()])
    metrics["extract_ms"] = percentiles(extract_ms)
    metrics["verify_ms"] = percentiles(verify_ms)
    metrics["rows"] = rows
    return metrics


def build_variant(overrides: dict[str, Any]) -> Any:
    """The verifier of ``place_recognition_node``'s shipped parameters with ``overrides``, without the camera's
    pose on the robot (see the module docstring)."""
    from deep_vision.params import load_params
    from deep_vision.pipeline.build import build_verifier
    from deep_vision.resources import default_params_path

    params = dict(load_params(default_params_path())["place_recognition_node"])
    params.update(overrides)
    params["verify"] = True
    verifier = build_verifier(params)
    verifier.set_camera_pose(None)
    return verifier


def run(variants: dict[str, dict[str, Any]], data_root: Path, *, synthetic_seeds: Sequence[int] = (9001,),
        settings: Settings = FULL, progress: Progress | None = None, command: str = "") -> dict[str, Any]:
    """Every variant on every data set present (same pairs for all); see the module docstring.

    ``variants``: {name: place_recognition_node parameter overrides}. ``progress(total, description)`` returns
    a callback taking the number of steps done (tqdm bars from :func:`main`). Returns
    {"header": ..., "datasets": {name: {"description", "positives", "negatives", "variants": {name: metrics}}},
    "skipped": [...]}, ready for :func:`write_report`.
    """
    if not variants:
        raise ValueError("run: give at least one variant")
    verifiers = {name: build_variant(overrides) for name, overrides in variants.items()}
    first = next(iter(verifiers.values()))
    sets = pair_sets(Path(data_root), tuple(synthetic_seeds), settings)
    datasets: dict[str, Any] = {}
    for ps in sets:
        keys = ps.keys
        bar = progress(len(keys), f"{ps.name}: reading {len(keys)} images") if progress else None
        images = {}
        for step, key in enumerate(keys):
            images[key] = ps.load(key)
            if bar:
                bar(step + 1)
        by_variant = {}
        for name, verifier in verifiers.items():
            bar = progress(len(keys) + len(ps.pairs), f"{ps.name}: {name}") if progress else None
            by_variant[name] = run_variant(verifier, ps, images, bar)
        datasets[ps.name] = {"description": ps.description, "images": len(keys), "positives": ps.positives,
                             "negatives": len(ps.pairs) - ps.positives, "variants": by_variant}
    skipped = [n for n in ("synthetic", "kitti", "euroc") if n not in datasets]
    header = {
        "date": date.today().isoformat(), "command": command, "data": str(data_root),
        "variants": {n: dict(o) for n, o in variants.items()},
        "verifier": {"max_features": first.max_features, "ratio": first.ratio, "ransac_px": first.ransac_px,
                     "min_inliers": first.min_inliers, "min_inlier_ratio": first.min_inlier_ratio,
                     "camera_pose": "none (no ground-plane constraint)"},
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU core(s) visible",
        "min_direction_baseline_m": MIN_DIRECTION_BASELINE_M,
    }
    return {"header": header, "datasets": datasets, "skipped": skipped}


# ============================================================================ report
def pr_png(dataset: dict[str, Any], title: str, path: Path, min_inliers: int | None = None) -> Path:
    """Left: precision-recall curves over the inlier threshold, one per variant, a dot at the verifier's own
    decision (every verified pair accepted). Right: each pair's inlier count by variant, positives and negatives
    apart, with ``min_inliers`` (where the curves alone say little: several variants at precision 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [1.2, 1]})
    rng = np.random.default_rng(0)
    for k, (name, m) in enumerate(dataset["variants"].items()):
        c = m["curve"]
        colour = f"C{k}"
        if c["threshold"]:
            ax.step([0.0, *c["recall"]], [1.0, *c["precision"]], where="post", color=colour, lw=1.8,
                    label=f"{name} (R@100P {100 * m['recall_at_100_precision']:.0f} %)")
            ax.plot([c["recall"][-1]], [c["precision"][-1]], "o", color=colour)
        else:
            ax.plot([], [], color=colour, label=f"{name} (nothing verified)")
        for positive, offset, marker in ((True, -0.17, "o"), (False, 0.17, "x")):
            counts = np.array([r["inliers"] for r in m["rows"] if r["positive"] == positive], float)
            if counts.size:
                ax2.scatter(k + offset + rng.uniform(-0.08, 0.08, counts.size), np.maximum(counts, 1), s=12,
                            marker=marker, color="C2" if positive else "C3", alpha=0.7,
                            label=("positive" if positive else "negative") if k == 0 else None)
    ax.set_xlabel("recall (accepted positives / positives)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"{title}: {dataset['positives']} positive, {dataset['negatives']} negative pairs", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    if min_inliers is not None:
        ax2.axhline(min_inliers, color="0.4", ls=":", label=f"min_inliers {min_inliers}")
    ax2.set_yscale("log")
    ax2.set_xticks(range(len(dataset["variants"])), list(dataset["variants"]))
    ax2.set_ylabel("RANSAC inliers (0 shown as 1)")
    ax2.set_title("inliers per pair", fontsize=10)
    ax2.grid(alpha=0.3, axis="y")
    ax2.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _f(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.1f}"


def _json_ready(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_ready(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def write_report(result: dict[str, Any], out: Path) -> Path:
    """``verification.md``, ``metrics.json`` and ``pr-<data set>.png`` under ``out``; returns the markdown path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    h = result["header"]
    v = h["verifier"]
    lines = [f"# Geometric verification: local features compared ({h['date']})", "",
             f"- command: `{h['command'] or '–'}`", f"- data: {h['data']}",
             f"- machine: {h['machine']}" + (f"; run time {h['run_time_s']} s" if "run_time_s" in h else ""),
             "- variants (place_recognition_node overrides): " +
             "; ".join(f"**{n}** `{json.dumps(o)}`" for n, o in h["variants"].items()),
             f"- verifier (shipped parameters): {v['max_features']} features, ratio {v['ratio']}, RANSAC "
             f"{v['ransac_px']} px, verified with ≥ {v['min_inliers']} inliers forming ≥ "
             f"{100 * v['min_inlier_ratio']:.0f} % of the matches; camera_pose {v['camera_pose']}", ""]
    if result["skipped"]:
        lines += [f"Skipped (files absent or no seeds): {', '.join(result['skipped'])}.", ""]
    lines += ["Accepted at inlier threshold t: verified with ≥ t inliers. R@100P: the highest recall with no wrong "
              "pair accepted. Pose errors over verified positives: rotation "
              "angle of R_estᵀR_true and the angle between the translation directions (baselines ≥ "
              f"{h['min_direction_baseline_m']} m). Inliers: the fewest of a verified positive and the most of any "
              "negative (0 where the ratio test left fewer matches than min_inliers). Times: median per image "
              "(extract) and per pair (verify).", ""]
    for name, ds in result["datasets"].items():
        lines += [f"## {name}", "", ds["description"] + ".", "",
                  "| features | verified (TP / FP) | precision % | recall % | R@100P % | inliers: weakest TP / "
                  "strongest negative | rotation err ° p50 / p95 | direction err ° p50 / p95 | features / image | "
                  "extract ms | verify ms |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for variant, m in ds["variants"].items():
            r, d = m["rotation_err_deg"], m["direction_err_deg"]
            if name == "euroc":  # only the angle is known
                r = m["angle_err_deg"]
            weak, strong = m["weakest_positive_inliers"], m["strongest_negative_inliers"]
            lines.append(
                f"| {variant} | {m['verified']} ({m['true_positives']} / {m['false_positives']}) | "
                f"{_f(m['precision'], True)} | {_f(m['recall'], True)} | {_f(m['recall_at_100_precision'], True)} | "
                f"{'–' if weak is None else weak} / {'–' if strong is None else strong} | "
                f"{_f(r['p50'])} / {_f(r['p95'])} (n={r['n']}) | "
                f"{_f(d['p50'])} / {_f(d['p95'])} (n={d['n']}) | {m['features_per_image']['p50']:.0f} | "
                f"{_f(m['extract_ms']['p50'])} | {_f(m['verify_ms']['p50'])} |")
        if name == "euroc":
            lines += ["", "Rotation error here: |estimated − true rotation angle| of the revisit (a lower bound).",
                      "", "| pair | same place | " + " | ".join(f"{n}: verified, inliers / matches"
                                                             for n in ds["variants"]) + " |",
                      "|---|---|" + "---|" * len(ds["variants"])]
            variants = list(ds["variants"].values())
            for k, row in enumerate(variants[0]["rows"]):
                cells = [f"{'yes' if vr['rows'][k]['verified'] else 'no'}, {vr['rows'][k]['inliers']} / "
                         f"{vr['rows'][k]['matches']}" for vr in variants]
                lines.append(f"| {row['kind']} | {'yes' if row['positive'] else 'no'} | {' | '.join(cells)} |")
        png = pr_png(ds, name, out / f"pr-{name}.png", v["min_inliers"])
        lines += ["", f"![{name} precision-recall]({png.name})", ""]
    md = out / "verification.md"
    md.write_text("\n".join(lines) + "\n")
    (out / "metrics.json").write_text(json.dumps(_json_ready(result), indent=1, allow_nan=False) + "\n")
    return md


# ============================================================================ command line
def evaluate(out: Path, patch_model: str | Path | None, data_root: Path, seeds: Sequence[int], *,
             quick: bool = False, command: str = "") -> int:
    """Run orb, sift and learned (``patch_model``; None or "none": left out) and write the report into ``out``."""
    from deep_vision.errors import DeepVisionError
    from deep_vision.eval.progress import progress_bars

    variants = {k: dict(v) for k, v in DEFAULT_VARIANTS.items()}
    if patch_model is None or str(patch_model).lower() == "none":
        del variants["learned"]
    elif not Path(patch_model).is_file():
        logger.warning("no patch model at %s: the learned variant is left out (--patch-model PATH)", patch_model)
        del variants["learned"]
    else:
        variants["learned"]["patch_model_path"] = str(patch_model)
    start = time.perf_counter()
    try:
        with progress_bars() as progress:
            result = run(variants, data_root, synthetic_seeds=tuple(seeds), settings=QUICK if quick else FULL,
                         progress=progress, command=command)
    except DeepVisionError as exc:
        logger.error("%s", exc)
        return 1
    result["header"]["run_time_s"] = round(time.perf_counter() - start, 1)
    md = write_report(result, out)
    print(md.read_text())
    print(f"report: {md} ({result['header']['run_time_s']} s)")
    return 0


def evaluate_from_cli(args: Any) -> int:
    """``deep-vision evaluate verification`` (args: model, data, out, quick, synthetic_seeds)."""
    from deep_vision.resources import default_model_path

    model = args.model
    if model is None:
        try:
            model = default_model_path("patch")
        except ModelError as exc:
            logger.warning("%s: the learned variant is left out", exc)
    seeds = [int(s) for s in str(args.synthetic_seeds).split(",") if s.strip()]
    out = Path(args.out) if args.out else Path("bench/results") / f"verification-{date.today().isoformat()}"
    from deep_vision.eval.progress import cli_command

    return evaluate(out, model, Path(args.data), seeds, quick=bool(args.quick), command=cli_command())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deep_vision.eval.verification_eval --out DIR [--patch-model PATH] [--quick]``."""
    repo = Path(__file__).resolve().parents[5]
    parser = argparse.ArgumentParser(prog="python -m deep_vision.eval.verification_eval",
                                     description="Compare the loop-closure verifier's local features (orb, sift, "
                                                 "learned) on the same image pairs.")
    parser.add_argument("--out", required=True, type=Path, help="report folder")
    parser.add_argument("--patch-model", default="models/patch.onnx",
                        help="learned patch descriptor (ONNX or .pt) for the 'learned' variant; 'none' leaves it out")
    parser.add_argument("--data", type=Path, default=repo.parent / "shared" / "data",
                        help="real data folder (default ../shared/data beside the repository)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[SYNTHETIC_EVAL_FIRST_SEED],
                        help="held-out synthetic world seeds (none: no synthetic pairs)")
    parser.add_argument("--quick", action="store_true", help="fewer pairs (a few minutes on two cores)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("deep_vision").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    command = "python -m deep_vision.eval.verification_eval " + " ".join(sys.argv[1:] if argv is None else argv)
    return evaluate(args.out, args.patch_model, args.data, args.seeds, quick=args.quick, command=command)


if __name__ == "__main__":
    sys.exit(main())
