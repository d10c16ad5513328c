"""Ground-plane scale on KITTI frames: its time per call and its step length against the ground truth's.

The hybrid's front end (``DenseFlowTracker(width=400, refine=True)``, as shipped) computes each frame pair's
motion once; ``GroundPlaneScale()`` (shipped defaults, KITTI's camera 1.65 m up) then estimates every pair's
scale ``--rounds`` times, timed alone. Printed: time per call p50 / p95, how many pairs got a plane, and the
ratio estimate / ground-truth step length (median, and median / 90th percentile of its error).

Usage (repository root, under a minute on 2 cores):
    .venv/bin/python experiments/vo_ground_scale_cost.py [--frames 100:159] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ros2_ws" / "src" / "deep_vision"))

from deep_vision.estimators.ground_scale import GroundPlaneScale
from deep_vision.estimators.two_view import DenseFlowTracker
from deep_vision.eval.vo_eval import kitti_sequence
from deep_vision.geometry.transforms import invert_transform


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--frames", default="100:159", help="first:last KITTI 00 frame")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    first, last = (int(v) for v in args.frames.split(":"))
    seq = kitti_sequence(Path(args.data) / "kitti" / "sequences" / "00", first, last)
    frames = list(seq.frames())
    tracker, ground = DenseFlowTracker(width=400, refine=True), GroundPlaneScale(height_m=seq.camera_height_m)
    motions = [tracker.motion(frames[i - 1], frames[i], seq.camera.K) for i in range(1, len(frames))]
    times, ratios = [], []
    for rnd in range(args.rounds):
        for k, m in enumerate(motions):
            if m is None:
                continue
            t0 = time.perf_counter()
            est = ground.estimate(m.R, m.t_dir, seq.camera.K, m.p0, m.p1)
            times.append((time.perf_counter() - t0) * 1e3)
            if est is not None and rnd == 0:
                gt = np.linalg.norm((invert_transform(seq.poses_gt[k]) @ seq.poses_gt[k + 1])[:3, 3])
                ratios.append(est.scale_m / gt)
    r = np.array(ratios)
    print(f"KITTI 00 frames {first}-{last}: {len(motions)} pairs, a plane on {len(r)}; "
          f"GroundPlaneScale.estimate p50 {np.median(times):.2f} ms, p95 {np.percentile(times, 95):.2f} ms "
          f"({len(times)} calls); step length / GT: median {np.median(r):.3f}, error median "
          f"{100 * np.median(np.abs(r - 1)):.1f} %, 90th percentile {100 * np.percentile(np.abs(r - 1), 90):.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
