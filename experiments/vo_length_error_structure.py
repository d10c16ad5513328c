"""Probe: what goes with the slow part of the ground lengths' error (the part that drifts), and does levelling the
top view to the step's own direction of travel remove it?

The shipped step length (plane and top view fused) drifts on KITTI although its per-frame error is small: its
error persists over frames. On the training ranges (KITTI 03 frames 0-549, KITTI 00 frames 0-99, synthetic worlds
1-3; the dense-flow steps cached under --cache as in vo_ground_diagnosis.py) this prints, per length source:

- the correlation of its log error, per frame and smoothed over --smooth frames, with the ground truth's speed,
  yaw per frame, change of speed, and the pitch of the direction of travel in the camera (the camera's pitch
  against the road, as a car pitches when it brakes or accelerates), and with the estimated step's pitch;
- the ATE with its slow error (a centred moving average) taken out, and with only the slow error left, to say
  which part drifts.

Then the top view with its mounting levelled per step so that the base's forward axis follows the step's
direction of travel in pitch (``--pitch-frames N``: the median of the last N estimated steps' pitch; causal),
alone and fused with the plane as shipped; ``--package N`` runs the package's own path
(``GroundTopView(pitch_frames=N)``, fused by ``GroundPlaneScale``).

    .venv/bin/python experiments/vo_length_error_structure.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from deep_vision.estimators.ground_scale import GroundPlaneScale
from deep_vision.geometry.transforms import invert_transform
from deep_vision.params import DEFAULT_CAMERA_POSE
from deep_vision.pipeline.build import camera_pose_transform

sys.path.insert(0, str(Path(__file__).parent))
from vo_ground_diagnosis import report_lengths, training_steps  # noqa: E402
from vo_topview_fusion import fused, topview_lengths  # noqa: E402


def smooth(x: np.ndarray, n: int) -> np.ndarray:
    """Centred moving average over ``n`` frames, ignoring NaN."""
    ok = np.isfinite(x)
    k = np.ones(n)
    num = np.convolve(np.where(ok, x, 0.0), k, "same")
    den = np.convolve(ok.astype(float), k, "same")
    return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() > 5 and np.std(b[ok]) > 0 else float("nan")


def pitched_up(X: np.ndarray, a: float) -> np.ndarray:
    """The road's up axis in the camera if the base's forward axis points ``a`` radians above the mounting's."""
    fwd0, up0 = X[:3, :3].T @ np.array([1.0, 0.0, 0.0]), X[:3, :3].T @ np.array([0.0, 0.0, 1.0])
    return -np.sin(a) * fwd0 + np.cos(a) * up0


def step_pitch(X: np.ndarray, t: np.ndarray) -> float:
    """The unit step's angle above the base's forward axis (degrees)."""
    fwd0, up0 = X[:3, :3].T @ np.array([1.0, 0.0, 0.0]), X[:3, :3].T @ np.array([0.0, 0.0, 1.0])
    return float(np.degrees(np.arctan2(t @ up0, t @ fwd0)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--cache", default="/tmp/gdiag")
    ap.add_argument("--smooth", type=int, default=21, help="frames in the moving average of the slow error")
    ap.add_argument("--pitch-frames", default="1,5,15", help="levelled top views: median pitch of the last N steps")
    ap.add_argument("--gains", default="1", help="levelled top views: the step's pitch times each gain")
    ap.add_argument("--relative", default="", help="levelled top views: the median pitch of the last N steps less "
                    "that of the last M steps, for each M given (comma-separated): the slow change of pitch only")
    ap.add_argument("--deadbands", default="0", help="levelled top views: each angle moved towards 0 by this many "
                    "degrees (comma-separated; 0 where smaller): a steady camera is left as mounted")
    ap.add_argument("--only", default="", help="comma-separated sequence names (default: all training ranges)")
    ap.add_argument("--dump", default="", help="folder: per sequence, the lengths and features as .npz")
    ap.add_argument("--package", default="", help="also the package's own path (GroundPlaneScale.from_extrinsic, "
                    "topview_pitch_frames N, or N/M: less the last M steps' median, or N/M/B: with a dead band of B "
                    "degrees), for each given (comma-separated; 0: not levelled)")
    ap.add_argument("--package-only", action="store_true", help="only the package's path")
    ap.add_argument("--oracle", action="store_true", help="levelled top views: the ground truth's directions of travel "
                    "instead of the estimated steps' (how far levelling could go with a perfect pitch)")
    args = ap.parse_args()
    for seq, rec, gt, steps in training_steps(args.data, args.cache):
        if args.only and seq.name not in args.only.split(","):
            continue
        X = camera_pose_transform([0.0, 0.0, seq.camera_height_m, *DEFAULT_CAMERA_POSE[3:]])
        for spec in (x for x in args.package.split(",") if x):
            n, m, band = (spec.split("/") + ["0", "0"])[:3]
            n, m, band = int(n), int(m), float(band)
            shipped = GroundPlaneScale.from_extrinsic(X, topview_cell_m=0.03, topview_pitch_frames=n,
                                                      topview_pitch_reference_frames=m, topview_pitch_deadband_deg=band)
            lengths, prev = np.full(len(rec), np.nan), None
            for k, frame in enumerate(seq.frames()):
                r = rec[k - 1] if k > 0 else None
                if r is not None:
                    e = shipped.estimate(r[0], r[1], seq.camera.K, r[2], r[3], images=(prev, frame))
                    lengths[k - 1] = np.nan if e is None else e.scale_m
                prev = frame
            print(f"{seq.name}:", flush=True)
            report_lengths(seq, steps, f"package, topview_pitch_frames {n}" + (f" less {m}" if m else "")
                           + (f", dead band {band:g} deg" if band else ""), lengths, gt)
        if args.package_only:
            continue
        ground = GroundPlaneScale(seq.camera_height_m)
        plane = np.array([np.nan if r is None or (e := ground.estimate(r[0], r[1], seq.camera.K, r[2], r[3])) is None
                          else e.scale_m for r in rec])
        top, ms = topview_lengths(seq, rec, 8.0, 0.03)
        fuse = fused(plane, top, "mean", 0.2)
        rel = [invert_transform(seq.poses_gt[k]) @ seq.poses_gt[k + 1] for k in range(len(rec))]
        dt = np.diff(seq.stamps_ns[:len(rec) + 1]) / 1e9
        feats = {
            "speed": gt / dt,
            "dspeed": np.r_[0.0, np.diff(gt / dt)],
            "yaw deg": np.array([np.degrees(np.arccos(np.clip((np.trace(T[:3, :3]) - 1) / 2, -1, 1))) for T in rel]),
            "gt pitch deg": np.array([step_pitch(X, T[:3, 3] / max(np.linalg.norm(T[:3, 3]), 1e-9)) for T in rel]),
            "est pitch deg": np.array([np.nan if r is None else step_pitch(X, r[1]) for r in rec]),
        }
        ok = gt > 0.1
        print(f"{seq.name} (top view {ms:.1f} ms p50); gt pitch deg: mean {np.mean(feats['gt pitch deg'][ok]):+.2f}"
              f" std {np.std(feats['gt pitch deg'][ok]):.2f}; est - gt pitch: std "
              f"{np.nanstd((feats['est pitch deg'] - feats['gt pitch deg'])[ok]):.2f} deg", flush=True)
        for name, est in (("plane", plane), ("top", top), ("fused", fuse)):
            e = np.where(ok, np.log(est / np.where(ok, gt, 1.0)), np.nan)
            e = np.where(np.abs(e) < 0.3, e, np.nan)  # outliers beyond exp(0.3) left out of the correlations
            slow = smooth(e, args.smooth)
            cs = "  ".join(f"{f} {corr(e, v):+.2f}/{corr(slow, smooth(v, args.smooth)):+.2f}" for f, v in feats.items())
            print(f"  {name:6s} corr raw/slow: {cs}  (slow error std {np.nanstd(slow):.3f})")
            report_lengths(seq, steps, f"{name} with its slow error removed", est * np.exp(-np.nan_to_num(slow)), gt)
            report_lengths(seq, steps, f"{name}: ground truth x slow error", gt * np.exp(np.nan_to_num(slow)), gt)
        report_lengths(seq, steps, "plane", plane, gt)
        report_lengths(seq, steps, "fused (shipped)", fuse, gt)
        dump = {"plane": plane, "top": top, "gt": gt, **{k.replace(" ", "_"): v for k, v in feats.items()}}
        levels = [(int(x), float(g), 0, float(b)) for x in args.pitch_frames.split(",") if x
                  for g in args.gains.split(",") for b in args.deadbands.split(",")]
        levels += [(int(x), 1.0, int(m), float(b)) for x in args.pitch_frames.split(",") if x
                   for m in args.relative.split(",") if m for b in args.deadbands.split(",")]
        for n, gain, m, band in levels:
            ups = []
            dirs = [r[1] if r is not None else None for r in rec]
            if args.oracle:
                dirs = [T[:3, 3] / np.linalg.norm(T[:3, 3]) if np.linalg.norm(T[:3, 3]) > 0.1 else None for T in rel]
            for k in range(len(rec)):
                ts = [t for t in dirs[max(0, k - n + 1):k + 1] if t is not None]
                if not ts:
                    ups.append(None)
                    continue
                a = gain * np.radians(np.median([step_pitch(X, t) for t in ts]))
                if m:
                    a -= np.radians(np.median([step_pitch(X, t) for t in dirs[max(0, k - m + 1):k + 1]
                                               if t is not None]))
                a = np.sign(a) * max(abs(a) - np.radians(band), 0.0)
                ups.append(pitched_up(X, a))
            top_l, _ = topview_lengths(seq, rec, 8.0, 0.03, ups=ups)
            tag = ("oracle " if args.oracle else "") + f"{n}, x{gain}" + (f", less the last {m}" if m else "") + (f", dead band {band} deg" if band else "")
            dump[f"top_levelled_{n}_{gain}_{m}_{band}"] = top_l
            e = np.where(ok, np.log(top_l / np.where(ok, gt, 1.0)), np.nan)
            e = np.where(np.abs(e) < 0.3, e, np.nan)
            print(f"  levelled ({tag}): corr raw/slow with est pitch "
                  f"{corr(e, feats['est pitch deg']):+.2f}/"
                  f"{corr(smooth(e, args.smooth), smooth(feats['est pitch deg'], args.smooth)):+.2f}")
            report_lengths(seq, steps, f"top levelled to the step's pitch ({tag})", top_l, gt)
            report_lengths(seq, steps, f"fused, top levelled ({tag})", fused(plane, top_l, "mean", 0.2), gt)
        if args.dump:
            Path(args.dump).mkdir(parents=True, exist_ok=True)
            np.savez(Path(args.dump) / f"{seq.name}.npz", **dump)
        report_lengths(seq, steps, "ground truth", gt, gt)


if __name__ == "__main__":
    main()
