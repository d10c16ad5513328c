"""Probe: do the top-view step lengths (errors nearly uncorrelated from frame to frame) and the triangulated ground
plane's (autocorrelated errors) together give a trajectory with less drift than the plane's alone?

vo_topview_scale.py found the top-view alignment of consecutive frames (3-8 m ahead, 0.03 m cells) about as
accurate per frame as the plane (median |error| 3.9 % against 3.5 %) but with a lag-1 autocorrelation near 0
where the plane's is 0.5-0.8, and with large outliers. An autocorrelated error drifts; an uncorrelated one
averages out. On training ranges only (KITTI 03 frames 0-549, KITTI 00 frames 0-99, synthetic worlds 1-3; the
dense-flow steps cached under --cache as in vo_ground_diagnosis.py), per fusion: the per-frame length error and
the ATE of the steps' trajectory with those lengths.

Fusions: ``plane`` (the shipped plane, held where missing), ``top`` (the top view alone), ``gate G`` (the top
view where it is within a factor exp(G) of the plane, else the plane), ``mean G`` (the geometric mean of the two
where they agree within exp(G), else the plane), ``top-gate G`` (the top view where it is within exp(G) of the
last accepted length, else the plane: no plane needed where it agrees with the past).

    .venv/bin/python experiments/vo_topview_fusion.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from deep_vision.estimators.ground_scale import GroundPlaneScale, GroundTopView
from deep_vision.pipeline.build import camera_pose_transform
from deep_vision.params import DEFAULT_CAMERA_POSE

sys.path.insert(0, str(Path(__file__).parent))
from vo_ground_diagnosis import report_lengths, training_steps  # noqa: E402


def levelled(X: np.ndarray, up: np.ndarray) -> np.ndarray:
    """The mounting ``X`` (T_base_cam) turned so that base_link's z axis is ``up`` (camera frame) in the camera."""
    u0 = X[:3, :3].T @ np.array([0.0, 0.0, 1.0])
    axis = np.cross(u0, up)
    s, c = np.linalg.norm(axis), float(u0 @ up)
    Q = np.eye(3) if s < 1e-12 else cv2.Rodrigues(axis / s * np.arctan2(s, c))[0]
    out = X.copy()
    out[:3, :3] = X[:3, :3] @ Q.T
    return out


def topview_lengths(seq, rec, forward_m: float, resolution_m: float, up: np.ndarray | None = None,
                    near_m: float = 3.0, lateral_m: float = 4.0, ups: list | None = None) -> tuple[np.ndarray, float]:
    """Per step: the top views' length (``GroundTopView.length``; nan where they do not align); ms per step p50.
    ``up``: the mounting levelled to it; ``ups``: per step (None: the nominal mounting)."""
    X = camera_pose_transform([0.0, 0.0, seq.camera_height_m, *DEFAULT_CAMERA_POSE[3:]])
    top = GroundTopView(X if up is None else levelled(X, up), forward_m=(near_m, forward_m), lateral_m=lateral_m,
                        resolution_m=resolution_m)
    K, out, times, prev = seq.camera.K, np.full(len(rec), np.nan), [], None
    for k, frame in enumerate(seq.frames()):
        if k > 0 and rec[k - 1] is not None:
            t0 = time.perf_counter()
            if ups is not None:
                top = GroundTopView(X if ups[k - 1] is None else levelled(X, ups[k - 1]), forward_m=(near_m, forward_m),
                                    lateral_m=lateral_m, resolution_m=resolution_m)
            length = top.length(rec[k - 1][0], K, prev, frame)
            times.append((time.perf_counter() - t0) * 1e3)
            out[k - 1] = np.nan if length is None else length
        prev = frame
    return out, float(np.median(times))


def fused(plane: np.ndarray, top: np.ndarray, kind: str, g: float, w: float = 0.5) -> np.ndarray:
    """``w``: the top view's weight in the ``mean`` (log-space) where the two agree."""
    out, last = np.full_like(plane, np.nan), None
    for k, (p, t) in enumerate(zip(plane, top)):
        ref = p if kind != "top-gate" else (last if last is not None else p)
        agree = np.isfinite(t) and ref is not None and np.isfinite(ref) and abs(np.log(t / ref)) < g
        if agree:
            out[k] = np.exp(w * np.log(t) + (1 - w) * np.log(p)) if kind == "mean" and np.isfinite(p) else t
        elif np.isfinite(p):
            out[k] = p
        if np.isfinite(out[k]):
            last = out[k]
    return out


def bias_kalman(plane: np.ndarray, top: np.ndarray, rho: float, bias_sigma: float, plane_sigma: float = 0.04,
                top_sigma: float = 0.045, q: float = 0.02, huber: float = 2.0) -> np.ndarray:
    """Causal Kalman filter on (log length, the plane's persistent error): the plane measures their sum, the top
    view the length alone; the plane's error is AR(1) (``rho`` per frame, stationary std ``bias_sigma``), the
    length a random walk (``q`` per frame). Huber weights beyond ``huber`` sigma. Steps of equal duration assumed."""
    out = np.full_like(plane, np.nan)
    x = P = None
    F = np.diag([1.0, rho])
    Q = np.diag([q ** 2, bias_sigma ** 2 * (1 - rho ** 2)])
    for k, (p, t) in enumerate(zip(plane, top)):
        if x is None:
            if not np.isfinite(p):
                continue
            x, P = np.array([np.log(p), 0.0]), np.diag([plane_sigma ** 2 + bias_sigma ** 2, bias_sigma ** 2])
        else:
            x, P = F @ x, F @ P @ F.T + Q
        for z, H, r in ((p, np.array([1.0, 1.0]), plane_sigma), (t, np.array([1.0, 0.0]), top_sigma)):
            if not (np.isfinite(z) and z > 0):
                continue
            R = r ** 2
            nu = np.log(z) - H @ x
            S = H @ P @ H + R
            if abs(nu) / np.sqrt(S) > huber:
                R *= abs(nu) / np.sqrt(S) / huber
                S = H @ P @ H + R
            G = P @ H / S
            x, P = x + G * nu, P - np.outer(G, H @ P)
        out[k] = np.exp(x[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--cache", default="/tmp/gdiag")
    ap.add_argument("--forward", type=float, default=8.0, help="top view from 3 m to this far ahead (m)")
    ap.add_argument("--resolution", type=float, default=0.03, help="top-view cell (m)")
    ap.add_argument("--near", type=float, default=3.0, help="top view from this far ahead (m)")
    ap.add_argument("--lateral", type=float, default=4.0, help="top view this far to either side (m)")
    ap.add_argument("--gates", default="0.05,0.1,0.2", help="G values (log ratio) for the gated fusions")
    ap.add_argument("--weights", default="0.5", help="the top view's weights in the mean fusions")
    ap.add_argument("--kinds", default="gate,mean,top-gate", help="also: kalman (bias_kalman over --rhos)")
    ap.add_argument("--rhos", default="0.6,0.8", help="kalman: the plane error's lag-1 correlation")
    ap.add_argument("--bias-sigmas", default="0.03,0.05", help="kalman: the plane error's persistent part (log)")
    ap.add_argument("--level", action="store_true",
                    help="the top view's mounting levelled to the median ground-plane normal over the sequence")
    ap.add_argument("--level-frames", type=int, default=0,
                    help="levelled per step to the median normal of the last N ground planes (causal; 0: off)")
    args = ap.parse_args()
    for seq, rec, gt, steps in training_steps(args.data, args.cache):
        ground = GroundPlaneScale(seq.camera_height_m)  # the shipped settings
        found = [None if r is None else ground.estimate(r[0], r[1], seq.camera.K, r[2], r[3]) for r in rec]
        plane = np.array([np.nan if e is None else e.scale_m for e in found])
        up = None
        if args.level:
            up = -np.median([e.normal for e in found if e is not None], axis=0)
            up /= np.linalg.norm(up)
            pitch = np.degrees(np.arctan2(-up[2], -up[1]))
            print(f"{seq.name}: median ground normal {-up.round(4)} (pitch {pitch:+.2f}"
                  f" deg, roll {np.degrees(np.arctan2(up[0], -up[1])):+.2f} deg)")
        ups = None
        if args.level_frames:
            normals = [None if e is None else e.normal for e in found]
            ups = []
            for k in range(len(found)):
                last = [n for n in normals[max(0, k - args.level_frames + 1):k + 1] if n is not None]
                u = -np.median(last, axis=0) if last else None
                ups.append(None if u is None else u / np.linalg.norm(u))
        top, ms = topview_lengths(seq, rec, args.forward, args.resolution, up, args.near, args.lateral, ups)
        print(f"{seq.name} (top view {ms:.1f} ms per step p50):", flush=True)
        report_lengths(seq, steps, "plane", plane, gt)
        report_lengths(seq, steps, "top", top, gt)
        for kind in args.kinds.split(","):
            if kind == "kalman":
                for rho in (float(x) for x in args.rhos.split(",")):
                    for bs in (float(x) for x in args.bias_sigmas.split(",")):
                        report_lengths(seq, steps, f"kalman rho {rho} bias {bs}", bias_kalman(plane, top, rho, bs), gt)
                continue
            for g in (float(x) for x in args.gates.split(",")):
                for w in (float(x) for x in args.weights.split(",")) if kind == "mean" else (1.0,):
                    name = f"{kind} {g}" + (f" w {w}" if kind == "mean" else "")
                    report_lengths(seq, steps, name, fused(plane, top, kind, g, w), gt)
        report_lengths(seq, steps, "ground truth", gt, gt)


if __name__ == "__main__":
    main()
