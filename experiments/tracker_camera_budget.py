"""Probe: the VO tracker's time and accuracy per camera, by flow size, DIS preset and cell size.

With a camera taller than KITTI's (640 x 480, 1280 x 720) the dense-flow tracker at ``track_width`` 400 px works on
2.5 / 1.9 times KITTI's pixels and the VO drops frames at 10 Hz on 2 cores
(bench/results/vo-camera-geometry-2026-12-07/). Per camera (the tests' small rendered world, ``--frames`` frames,
the same cameras as topview_camera_cost.py) and per tracker setting: ms p50 of ``DenseFlowTracker.motion`` (as
the shipped VO builds it: refined geometry), the points it keeps, and the step's rotation and direction error
against the ground truth (median and 90th percentile, degrees).

    .venv/bin/python experiments/tracker_camera_budget.py [--frames 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from deep_vision.estimators.two_view import DenseFlowTracker
from deep_vision.geometry.transforms import invert_transform
from deep_vision.synthetic import SyntheticSequence

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from conftest import small_world_config  # noqa: E402

CAMERAS = {"KITTI size": (1241, 376, None), "640 x 480": (640, 480, 400.0), "1280 x 720": (1280, 720, 640.0)}
# (flow width, DIS preset, cell px)
SETTINGS = [(400, "medium", 10), (400, "fast", 10), (300, "medium", 10), (300, "medium", 8), (256, "medium", 10),
            (256, "medium", 7), (256, "fast", 7)]


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    c = float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=40)
    args = ap.parse_args()
    for name, (w, h, f) in CAMERAS.items():
        config = small_world_config(frames=args.frames, width=w, height=h)
        camera = config.camera if f is None else replace(config.camera, fx=f, fy=f, cx=w / 2, cy=h / 2)
        seq = SyntheticSequence(replace(config, camera=camera))
        images, P, K = [seq.image(k) for k in range(len(seq))], seq.kitti_poses, seq.camera.K
        images = [x if x.ndim == 2 else np.ascontiguousarray(x.mean(axis=2).astype(np.uint8)) for x in images]
        truth = [invert_transform(P[k]) @ P[k + 1] for k in range(len(images) - 1)]
        print(f"{name}:", flush=True)
        for width, preset, cell in SETTINGS:
            tracker = DenseFlowTracker(width=width, flow_preset=preset, cell_px=cell, refine=True)
            ms, pts, rot, dirn, failed = [], [], [], [], 0
            for k in range(len(images) - 1):
                t0 = time.perf_counter()
                m = tracker.motion(images[k], images[k + 1], K)
                ms.append((time.perf_counter() - t0) * 1e3)
                if m is None:
                    failed += 1
                    continue
                T = truth[k]
                pts.append(len(m.p0))
                rot.append(np.degrees(np.linalg.norm(cv2.Rodrigues(m.R.T @ T[:3, :3])[0])))
                t = m.t_dir if m.t_dir @ T[:3, 3] >= 0 else -m.t_dir
                dirn.append(angle_deg(t, T[:3, 3]))
            h_small = round(h * min(width, w) / w)
            print(f"  flow {min(width, w)} x {h_small} ({min(width, w) * h_small / 1e3:.0f} k px), {preset}, cell "
                  f"{cell}: {np.median(ms[1:]):.1f} ms p50, {np.median(pts):.0f} points, rotation error "
                  f"{np.median(rot):.3f} / {np.percentile(rot, 90):.3f} deg, direction {np.median(dirn):.2f} / "
                  f"{np.percentile(dirn, 90):.2f} deg (p50 / p90), no motion {failed}", flush=True)


if __name__ == "__main__":
    main()
