"""Probe: the VO top view's lengths and time per step, saved to compare a change of ``align_ground`` against.

``GroundTopView.length`` (the shipped view) on KITTI 00 frames 0-99 (the dense-flow steps cached under --cache as
in vo_ground_diagnosis.py: their rotations) and on the tests' small rendered world at 640 x 480 (400 px focal
length, true rotations). Prints the p50 time per step; ``--save`` writes the lengths, ``--compare`` prints the
largest |log ratio| against a saved run and whether the same steps have no length. Run it with
``PYTHONPATH=<worktree>/ros2_ws/src/deep_vision`` to time another commit's code.

    .venv/bin/python experiments/topview_length_check.py --save /tmp/before.npz
    .venv/bin/python experiments/topview_length_check.py --compare /tmp/before.npz
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from deep_vision.estimators.ground_scale import GroundTopView
from deep_vision.geometry.transforms import invert_transform
from deep_vision.params import DEFAULT_CAMERA_POSE
from deep_vision.pipeline.build import camera_pose_transform
from deep_vision.synthetic import SyntheticSequence

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from conftest import small_world_config  # noqa: E402
from vo_ground_diagnosis import training_steps  # noqa: E402


def timed_lengths(top: GroundTopView, steps) -> tuple[np.ndarray, float]:
    """Lengths (nan: none) and p50 ms over (R, K, previous frame, frame) steps."""
    lengths, ms = [], []
    for R, K, prev, frame in steps:
        t0 = time.perf_counter()
        length = top.length(R, K, prev, frame)
        ms.append((time.perf_counter() - t0) * 1e3)
        lengths.append(np.nan if length is None else length)
    return np.array(lengths), float(np.median(ms))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--cache", default="/tmp/gdiag")
    ap.add_argument("--save", default="", help="write the lengths here (.npz)")
    ap.add_argument("--compare", default="", help="a saved run (.npz) to compare the lengths with")
    args = ap.parse_args()
    out = {}
    for seq, rec, _, _ in training_steps(args.data, args.cache):
        if seq.name != "kitti_00_0-99":
            continue
        X = camera_pose_transform([0.0, 0.0, seq.camera_height_m, *DEFAULT_CAMERA_POSE[3:]])
        frames = list(seq.frames())
        steps = [(rec[k - 1][0], seq.camera.K, frames[k - 1], frames[k]) for k in range(1, len(frames))
                 if rec[k - 1] is not None]
        out["kitti00"], ms = timed_lengths(GroundTopView(X), steps)
        print(f"KITTI 00 frames 0-99: {ms:.1f} ms p50 per step", flush=True)
        break
    config = small_world_config(frames=20, width=640, height=480)
    seq = SyntheticSequence(replace(config, camera=replace(config.camera, fx=400.0, fy=400.0, cx=320.0, cy=240.0)))
    images, P = [seq.image(k) for k in range(len(seq))], seq.kitti_poses
    steps = [((invert_transform(P[k]) @ P[k + 1])[:3, :3], seq.camera.K, images[k], images[k + 1])
             for k in range(len(seq) - 1)]
    X = camera_pose_transform([0.0, 0.0, 1.65, *DEFAULT_CAMERA_POSE[3:]])
    out["vga"], ms = timed_lengths(GroundTopView(X), steps)
    print(f"rendered 640 x 480: {ms:.1f} ms p50 per step")
    if args.save:
        np.savez(args.save, **out)
    if args.compare:
        ref = np.load(args.compare)
        for name, lengths in out.items():
            worst = np.nanmax(np.abs(np.log(lengths / ref[name])))
            print(f"{name}: largest |log ratio| to {args.compare}: {worst:.2e}; "
                  f"the same steps without a length: {np.array_equal(np.isnan(lengths), np.isnan(ref[name]))}")


if __name__ == "__main__":
    main()
