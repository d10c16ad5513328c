"""Probe: the VO step length from aligning the road's top views of consecutive frames (the loop closures' ground
alignment, ``deep_vision.estimators.loop_scale.align_ground``) instead of triangulating the ground plane.

On KITTI 03 frames FIRST-LAST (training range), each frame's ground is resampled into a top view (``GroundView``
with the shipped camera_pose, ``--forward`` metres ahead at ``--resolution``), consecutive views are aligned with
the dense-flow step's yaw as the prior, and the aligned translation's length is compared with the ground truth's.
Prints the relative error's RMS, median, bias and lag-1 autocorrelation, and the time per alignment.

    .venv/bin/python experiments/vo_topview_scale.py --first 0 --last 120 --forward 8 --resolution 0.03
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from deep_vision.estimators.loop_scale import GroundView, align_ground
from deep_vision.estimators.two_view import DenseFlowTracker
from deep_vision.eval.vo_eval import kitti_sequence
from deep_vision.geometry.transforms import invert_transform
from deep_vision.pipeline.build import camera_pose_transform
from deep_vision.params import DEFAULT_CAMERA_POSE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--last", type=int, default=120)
    ap.add_argument("--forward", type=float, default=12.0, help="top view from 3 m to this far ahead (m)")
    ap.add_argument("--resolution", type=float, default=0.05, help="top-view cell (m)")
    args = ap.parse_args()
    seq = kitti_sequence(Path(args.data) / "kitti" / "sequences" / "03", args.first, args.last)
    X = camera_pose_transform(DEFAULT_CAMERA_POSE)
    view = GroundView(X, forward_m=(3.0, args.forward), lateral_m=4.0, resolution_m=args.resolution)
    frames, K = list(seq.frames()), seq.camera.K
    tops = [view.render(f, K) for f in frames]
    tracker, errors, times = DenseFlowTracker(width=400, refine=True), [], []
    for k in range(len(frames) - 1):
        gt = invert_transform(seq.poses_gt[k]) @ seq.poses_gt[k + 1]
        length = np.linalg.norm(gt[:3, 3])
        m = tracker.motion(frames[k], frames[k + 1], K)
        if m is None or length < 0.2:
            continue
        R_base = X[:3, :3] @ m.R @ X[:3, :3].T
        t0 = time.perf_counter()
        a = align_ground(tops[k + 1], tops[k], view, float(np.arctan2(R_base[1, 0], R_base[0, 0])), search_m=3.0,
                         yaw_sigma=0.002)
        times.append((time.perf_counter() - t0) * 1e3)
        errors.append(np.nan if a is None else np.linalg.norm(a.t) / length - 1)
    e = np.array(errors)
    ok = e[np.isfinite(e)]
    print(f"forward 3-{args.forward} m, {args.resolution} m cells: {len(ok)} of {len(e)} aligned, error rms "
          f"{np.sqrt(np.mean(ok ** 2)):.3f}, median |error| {np.median(np.abs(ok)):.3f}, bias {np.median(ok):+.3f}, "
          f"lag-1 autocorrelation {np.corrcoef(ok[:-1], ok[1:])[0, 1]:.2f}, {np.median(times):.1f} ms per alignment")


if __name__ == "__main__":
    main()
