"""Probe: how many of the VO's top-view cells a camera sees, and what one step's top-view length costs.

The top view (3-8 m ahead, 4 m to either side, 3 cm cells: 44,589 cells) is aligned over the cells the camera
sees. KITTI's cameras see the road only from about 6 m; a camera with a taller field of view sees nearly all of
it. Per camera (KITTI 00 / 03's first frame; the small rendered world at KITTI's size, at 640 x 480 with a 400 px
focal length, at 1280 x 720 with 640 px): the seen cells, and per step (true rotation) the time of
``GroundTopView.length`` and its length over the true one, with the shipped bound on the cells used
(``--max-points``, 0: none); and the shipped VO's other parts per step: the tracker (dense flow at
``track_width``, essential matrix) and the ground plane.

    .venv/bin/python experiments/topview_camera_cost.py [--max-points 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from deep_vision.estimators.ground_scale import GroundTopView
from deep_vision.geometry.transforms import invert_transform
from deep_vision.io.kitti import read_calib
from deep_vision.params import DEFAULT_CAMERA_POSE
from deep_vision.pipeline.build import build_odometry, camera_pose_transform

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from conftest import small_world_config  # noqa: E402

CAMERAS = {"KITTI size": (1241, 376, None, None), "640 x 480": (640, 480, 400.0, 240.0),
           "1280 x 720": (1280, 720, 640.0, 360.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--max-points", type=int, default=GroundTopView.max_points, help="0: no bound")
    ap.add_argument("--frames", type=int, default=8)
    args = ap.parse_args()
    from deep_vision.synthetic import SyntheticSequence

    X = camera_pose_transform([0.0, 0.0, 1.65, *DEFAULT_CAMERA_POSE[3:]])
    top = GroundTopView(X)
    for s in ("00", "03"):
        root = Path(args.data) / "kitti" / "sequences" / s
        frames = sorted((root / "image_0").glob("*"))
        if not frames:
            print(f"KITTI {s}: not in {root}")
            continue
        K = read_calib(root / "calib.txt")["P0"][:, :3]
        print(f"KITTI {s}: {int((top.view.render(cv2.imread(str(frames[0]), 0), K) > 0).sum())} of "
              f"{top.view.shape[0] * top.view.shape[1]} cells seen")
    for name, (w, h, f, cy) in CAMERAS.items():
        config = small_world_config(frames=args.frames, width=w, height=h)
        camera = replace(config.camera, fx=f, fy=f, cx=None if f is None else w / 2, cy=cy)
        seq = SyntheticSequence(replace(config, camera=camera))
        images, P, K = [seq.image(k) for k in range(len(seq))], seq.kitti_poses, seq.camera.K
        top = GroundTopView(X, max_points=args.max_points or None)
        ms, ratio = [], []
        for k in range(len(seq) - 1):
            T = invert_transform(P[k]) @ P[k + 1]
            t0 = time.perf_counter()
            length = top.length(T[:3, :3], K, images[k], images[k + 1])
            ms.append((time.perf_counter() - t0) * 1e3)
            ratio.append(np.nan if length is None else length / np.linalg.norm(T[:3, 3]))
        print(f"{name}: {int((top.view.render(images[0], K) > 0).sum())} cells seen; length {np.median(ms[1:]):.1f} "
              f"ms p50 (first {ms[0]:.1f}); length / true: median {np.nanmedian(ratio):.3f}, "
              f"{np.isfinite(ratio).sum()}/{len(ratio)} found")
        vo = build_odometry({}, seq.camera)
        vo.ground.topview = None  # the plane alone: the top view is timed above
        tracker_ms, plane_ms = [], []
        for k in range(len(seq) - 1):
            t0 = time.perf_counter()
            tv = vo.tracker.motion(images[k], images[k + 1], K)
            t1 = time.perf_counter()
            vo.ground.estimate(tv.R, tv.t_dir, K, tv.p0, tv.p1)
            tracker_ms.append((t1 - t0) * 1e3)
            plane_ms.append((time.perf_counter() - t1) * 1e3)
        print(f"  the VO's tracker {np.median(tracker_ms[1:]):.1f} ms p50, plane {np.median(plane_ms[1:]):.1f} ms p50")


if __name__ == "__main__":
    main()
