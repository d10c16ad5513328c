"""Probe: do top views aligned over wider spans (frame k against k-2, k-3) measure distance with a metric error
that does not grow with the span, so that chaining them drifts less than chaining per-frame lengths?

The shipped fusion (`GroundTopView.fused`: the plane's and the consecutive top views' lengths) still drifts on
KITTI against the ground truth's lengths. Per-frame errors that are independent integrate as a random walk:
over N steps about sigma sqrt(N). A top-view alignment's error is a registration error in metres; if aligning
frame k against frame k-s costs about the same metres, a distance read over spans of s steps drifts about
sqrt(s) times less. Here, per span: how often the views align and the error of the distance they read (relative
and in metres) against the ground truth's; then a causal chain: each step's length from the per-frame fusion and
the span readings less the lengths already published for the span's earlier steps (gated against the plane).
Training ranges only (KITTI 03 frames 0-549, KITTI 00 frames 0-99, synthetic worlds 1-3; the shipped dense-flow
steps cached under --cache as in vo_ground_diagnosis.py).

    .venv/bin/python experiments/vo_topview_spans.py [--spans 1,2,3] [--only kitti_00]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from deep_vision.estimators.ground_scale import GroundPlaneScale, GroundTopView
from deep_vision.estimators.loop_scale import align_ground
from deep_vision.geometry.transforms import invert_transform
from deep_vision.params import DEFAULT_CAMERA_POSE
from deep_vision.pipeline.build import camera_pose_transform

sys.path.insert(0, str(Path(__file__).parent))
from vo_ground_diagnosis import report_lengths, training_steps  # noqa: E402


def span_distances(seq, rec, spans: list[int], search_m: float, forward_m: float = 8.0,
                   resolution_m: float = 0.03) -> dict[int, np.ndarray]:
    """Per span s and frame k >= s: the camera's distance from frame k-s to k read by aligning their top views
    (nan where a step in between has no geometry or the views do not align)."""
    X = camera_pose_transform([0.0, 0.0, seq.camera_height_m, *DEFAULT_CAMERA_POSE[3:]])
    top = GroundTopView(X, forward_m=(3.0, forward_m), resolution_m=resolution_m)
    view, K = top.view, seq.camera.K
    views = [view.render(f, K) for f in seq.frames()]
    out = {s: np.full(len(views), np.nan) for s in spans}
    for s in spans:
        for k in range(s, len(views)):
            steps = rec[k - s:k]
            if any(r is None for r in steps):
                continue
            R = np.eye(3)
            for r in steps:
                R = R @ r[0]
            R_base = X[:3, :3] @ R @ X[:3, :3].T
            a = align_ground(views[k], views[k - s], view, float(np.arctan2(R_base[1, 0], R_base[0, 0])),
                             search_m=search_m * s, yaw_sigma=top.yaw_sigma * np.sqrt(s), max_points=top.max_points)
            if a is None:
                continue
            T = np.eye(4)
            c, si = np.cos(a.theta), np.sin(a.theta)
            T[:2, :2], T[:2, 3] = [[c, -si], [si, c]], a.t
            out[s][k] = float(np.linalg.norm((invert_transform(X) @ T @ X)[:3, 3]))
    return out


def truth_distances(seq, span: int) -> np.ndarray:
    P = seq.poses_gt
    d = np.full(len(P), np.nan)
    for k in range(span, len(P)):
        d[k] = np.linalg.norm((invert_transform(P[k - span]) @ P[k])[:3, 3])
    return d


def chained(fused: np.ndarray, plane: np.ndarray, spans: dict[int, np.ndarray], sigma_m: dict[int, float],
            gate: float) -> np.ndarray:
    """Causal: step k-1 -> k (index k-1) from the per-frame fusion (its noise ``sigma_m[1]``) and, per wider span
    s, the span's reading less the lengths already published for its other s-1 steps (noise ``sigma_m[s]``, plus
    nothing for the published lengths: their errors are what the reading corrects). A candidate more than a
    factor exp(gate) from the plane's length (or the fusion's, where the plane has none) is left out."""
    out = np.full_like(fused, np.nan)
    for j in range(len(fused)):
        ref = plane[j] if np.isfinite(plane[j]) else fused[j]
        if not np.isfinite(ref):
            continue
        cands, weights = [fused[j]], [1.0 / sigma_m[1] ** 2]
        k = j + 1  # the frame this step ends at
        for s, d in spans.items():
            if s == 1 or k >= len(d) or not np.isfinite(d[k]) or j - s + 1 < 0:
                continue
            before = out[j - s + 1:j]
            if not np.isfinite(before).all():
                continue
            c = d[k] - before.sum()
            if c > 0 and abs(np.log(c / ref)) < gate:
                cands.append(c)
                weights.append(1.0 / sigma_m[s] ** 2)
        out[j] = float(np.average(cands, weights=weights))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--cache", default="/tmp/gdiag")
    ap.add_argument("--spans", default="1,2,3")
    ap.add_argument("--search", type=float, default=3.0, help="coarse search reach per step of the span (m)")
    ap.add_argument("--gates", default="0.2,0.3")
    ap.add_argument("--forward", type=float, default=8.0, help="the wider spans' top view: 3 m to this far ahead")
    ap.add_argument("--resolution", type=float, default=0.03, help="the wider spans' top-view cell (m)")
    ap.add_argument("--only", default="", help="sequences whose name contains this")
    args = ap.parse_args()
    spans = [int(s) for s in args.spans.split(",")]
    for seq, rec, gt, steps in training_steps(args.data, args.cache):
        if args.only and args.only not in seq.name:
            continue
        ground = GroundPlaneScale(seq.camera_height_m)
        X = camera_pose_transform([0.0, 0.0, seq.camera_height_m, *DEFAULT_CAMERA_POSE[3:]])
        top = GroundTopView(X)
        plane = np.array([np.nan if r is None or (e := ground.estimate(r[0], r[1], seq.camera.K, r[2], r[3])) is None
                          else e.scale_m for r in rec])
        dists = span_distances(seq, rec, [1], args.search)  # the shipped view
        dists.update(span_distances(seq, rec, [s for s in spans if s > 1], args.search, args.forward, args.resolution))
        print(f"{seq.name}:", flush=True)
        sigma = {}
        for s in spans:
            truth = truth_distances(seq, s)
            ok = np.isfinite(dists[s]) & np.isfinite(truth) & (truth > 0.3 * s)
            e_m = dists[s][ok] - truth[ok]
            e_log = np.log(dists[s][ok] / truth[ok])
            inl = np.abs(e_log) < 0.2
            sigma[s] = float(np.sqrt(np.mean(e_m[inl] ** 2)))
            print(f"  span {s}: aligned {ok.sum()}/{np.sum(np.isfinite(truth) & (truth > 0.3 * s))}, "
                  f"|log err| median {np.median(np.abs(e_log)):.3f}, within 0.2: {inl.mean():.2f}; "
                  f"inliers: metres rms {sigma[s]:.3f} mean {e_m[inl].mean():+.3f}, log rms "
                  f"{np.sqrt(np.mean(e_log[inl] ** 2)):.3f}", flush=True)
        top1 = dists[1][1:] if 1 in dists else np.full(len(rec), np.nan)
        fused = np.array([p if not np.isfinite(p) else top.fused(p, None if not np.isfinite(t) else t)
                          for p, t in zip(plane, top1)])
        report_lengths(seq, steps, "  plane", plane, gt)
        report_lengths(seq, steps, "  fused (shipped)", fused, gt)
        for g in (float(x) for x in args.gates.split(",")):
            for use in [spans[1:i + 1] for i in range(1, len(spans))]:
                sub = {s: dists[s] for s in [1, *use]}
                report_lengths(seq, steps, f"  chained spans {use} gate {g}", chained(fused, plane, sub, sigma, g), gt)
        report_lengths(seq, steps, "  ground truth", gt, gt)


if __name__ == "__main__":
    main()
