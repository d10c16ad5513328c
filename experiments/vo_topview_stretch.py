"""Probe: the camera's pitch against the road read from the top view itself, and the step length corrected by it.

A top view drawn with the camera pitched by d against the road (the car braking, accelerating, a slope ahead)
reads a ground point at distance Z about Z / (1 - d Z / h) away: it stretches the road more the further ahead it
is. Between two frames, the road near the car then seems to move less than the road further ahead (about
1 + 2 d Z / h times the step). So aligning a near band of the road and a far one separately gives two lengths
(KITTI's camera sees the road from about 6 m: --near 3,9 --far 9,14) whose ratio measures d, from the images alone
(not from the estimated direction of travel, whose bias moved the metric scale in vo_length_error_structure.py's
levelling).

On the training ranges (KITTI 03 frames 0-549, KITTI 00 frames 0-99, synthetic worlds 1-3; the dense-flow steps
cached under --cache as in vo_ground_diagnosis.py): each band's length with the nominal mounting and with it
pitched up by --probe-deg; per step the pitch at which near and far agree; its causal median over the last N
steps (--frames); the whole view's length corrected to that pitch, alone and fused with the plane as shipped.
Printed: how the pitch follows the slow length error, and the ATE of each.

    .venv/bin/python experiments/vo_topview_stretch.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from deep_vision.estimators.ground_scale import GroundPlaneScale
from deep_vision.params import DEFAULT_CAMERA_POSE
from deep_vision.pipeline.build import camera_pose_transform

sys.path.insert(0, str(Path(__file__).parent))
from vo_ground_diagnosis import report_lengths, training_steps  # noqa: E402
from vo_length_error_structure import corr, pitched_up, smooth  # noqa: E402
from vo_topview_fusion import fused, topview_lengths  # noqa: E402



def causal_median(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    for k in range(len(x)):
        w = x[max(0, k - n + 1):k + 1]
        w = w[np.isfinite(w)]
        if len(w):
            out[k] = np.median(w)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--cache", default="/tmp/gdiag")
    ap.add_argument("--probe-deg", type=float, default=0.5, help="the second mounting's pitch (degrees up)")
    ap.add_argument("--frames", default="1,5,15,30,60", help="causal median of the read pitch over N steps")
    ap.add_argument("--max-deg", type=float, default=3.0, help="read pitches further off are left out")
    ap.add_argument("--near", default="3,9", help="the near band (m ahead; KITTI's camera sees the road from 6 m)")
    ap.add_argument("--far", default="9,14", help="the far band (m ahead)")
    ap.add_argument("--only", default="", help="comma-separated sequence names (default: all training ranges)")
    ap.add_argument("--dump", default="", help="folder: per sequence, the band lengths as .npz")
    ap.add_argument("--reuse", action="store_true", help="the band lengths from --dump (not aligned again)")
    ap.add_argument("--relative", default="", help="also the read pitch less its median over the last M steps, for "
                    "each M given (comma-separated): the change of pitch only, the mounting's mean kept")
    args = ap.parse_args()
    da = np.radians(args.probe_deg)
    bands = {"near": tuple(float(x) for x in args.near.split(",")), "far": tuple(float(x) for x in args.far.split(",")),
             "full": (3.0, 8.0)}
    for seq, rec, gt, steps in training_steps(args.data, args.cache):
        if args.only and seq.name not in args.only.split(","):
            continue
        X = camera_pose_transform([0.0, 0.0, seq.camera_height_m, *DEFAULT_CAMERA_POSE[3:]])
        L = {}
        saved = Path(args.dump) / f"{seq.name}.npz"
        for band, (near, far) in bands.items():
            for a in (0.0, da):
                L[band, a] = np.load(saved)[f"{band}_{int(a > 0)}"] if args.reuse else \
                    topview_lengths(seq, rec, far, 0.03, near_m=near, up=pitched_up(X, a))[0]
        ok = gt > 0.1
        with np.errstate(invalid="ignore", divide="ignore"):
            g0 = np.log(L["far", 0.0] / L["near", 0.0])
            g1 = np.log(L["far", da] / L["near", da])
            k_full = np.log(L["full", da] / L["full", 0.0]) / da  # d log length / d pitch (per radian)
        slope = float(np.nanmedian((g1 - g0) / da))
        kf = float(np.nanmedian(k_full))
        read = -g0 / slope  # the pitch (rad, up) at which near and far agree
        read = np.where(np.abs(read) < np.radians(args.max_deg), read, np.nan)
        top = L["full", 0.0]
        e = np.where(ok, np.log(top / np.where(ok, gt, 1.0)), np.nan)
        e = np.where(np.abs(e) < 0.3, e, np.nan)
        slow = smooth(e, 21)
        print(f"{seq.name}: d log(far/near)/d pitch {slope:.2f}/rad, d log(full)/d pitch {kf:.2f}/rad; read pitch "
              f"mean {np.degrees(np.nanmean(read)):+.2f} deg, std {np.degrees(np.nanstd(read)):.2f}, "
              f"{np.isfinite(read).sum()}/{len(read)} read; corr with the full view's log error raw "
              f"{corr(e, read):+.2f}, slow {corr(slow, smooth(read, 21)):+.2f}", flush=True)
        plane = np.array([np.nan if r is None or (x := GroundPlaneScale(seq.camera_height_m).estimate(
            r[0], r[1], seq.camera.K, r[2], r[3])) is None else x.scale_m for r in rec])
        report_lengths(seq, steps, "top view, nominal", top, gt)
        report_lengths(seq, steps, "fused, nominal (shipped)", fused(plane, top, "mean", 0.2), gt)
        for n in (int(x) for x in args.frames.split(",") if x):
            d = np.nan_to_num(causal_median(read, n))
            corrected = top * np.exp(kf * d)
            report_lengths(seq, steps, f"top view at the read pitch, median of {n}", corrected, gt)
            report_lengths(seq, steps, f"fused, top at the read pitch, median of {n}",
                           fused(plane, corrected, "mean", 0.2), gt)
            for m in (int(x) for x in args.relative.split(",") if x):
                d = np.nan_to_num(causal_median(read, n) - causal_median(read, m))
                report_lengths(seq, steps, f"fused, top at the read pitch, median of {n} less of {m}",
                               fused(plane, top * np.exp(kf * d), "mean", 0.2), gt)
        d_all = float(np.nanmedian(read))
        report_lengths(seq, steps, "fused, top at the whole range's median pitch (not causal)",
                       fused(plane, top * np.exp(kf * d_all), "mean", 0.2), gt)
        report_lengths(seq, steps, "ground truth", gt, gt)
        if args.dump and not args.reuse:
            Path(args.dump).mkdir(parents=True, exist_ok=True)
            np.savez(Path(args.dump) / f"{seq.name}.npz", gt=gt, plane=plane, read=read,
                     **{f"{b}_{int(a > 0)}": v for (b, a), v in L.items()})


if __name__ == "__main__":
    main()
