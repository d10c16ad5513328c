"""Probe: the shipped VO on whole rendered routes seen by cameras taller than KITTI's, per tracker setting.

tracker_camera_budget.py timed the dense-flow tracker per setting on a few steps; the drift is what a user
sees. Per camera (640 x 480 with a 400 px focal length, 1280 x 720 with 640 px: the cameras of
bench/results/vo-camera-geometry-2026-12-07/), per world ``--seeds`` (``--frames`` frames, the world's default
route) and per tracker setting (flow width, DIS preset, cell px): the shipped VO (config/perception.yaml's
odometry_node, the same builder as the node) with its tracker replaced, offline; printed: Sim(3) / SE(3) ATE
and the VO's ms p50 / p95 per frame.

    .venv/bin/python experiments/vo_camera_tracker_routes.py [--seeds 1,2] [--frames 300]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from deep_vision.eval.trajectory_metrics import ate_rpe
from deep_vision.eval.vo_eval import VOSequence, integrate, run_vo, shipped_factory
from deep_vision.synthetic import SyntheticSequence, SyntheticWorldConfig

CAMERAS = {"640 x 480": (640, 480, 400.0), "1280 x 720": (1280, 720, 640.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--cameras", default=",".join(CAMERAS))
    ap.add_argument("--settings", default="400/medium/10,400/fast/10,300/medium/10,256/medium/7",
                    help="comma-separated WIDTH/PRESET/CELL")
    args = ap.parse_args()
    make = shipped_factory()
    settings = [(int(w), p, int(c)) for w, p, c in (s.split("/") for s in args.settings.split(","))]
    for cam in args.cameras.split(","):
        w, h, f = CAMERAS[cam]
        for seed in (int(s) for s in args.seeds.split(",")):
            config = SyntheticWorldConfig(seed=seed, frames=args.frames)
            config = replace(config, camera=replace(config.camera, width=w, height=h, fx=f, fy=f, cx=w / 2, cy=h / 2))
            s = SyntheticSequence(config)
            seq = VOSequence(f"seed {seed}", s.images, s.stamps_ns, s.kitti_poses, s.camera,
                             s.config.camera.height_m).preloaded()
            stamps = (seq.stamps_ns - seq.stamps_ns[0]) / 1e9
            for width, preset, cell in settings:
                vo = make(seq.camera, seq.camera_height_m)
                vo.tracker = replace(vo.tracker, width=width, flow_preset=preset, cell_px=cell)
                rel, ms = run_vo(vo, seq)
                poses = integrate(rel)
                sim3 = ate_rpe(seq.poses_gt, poses, stamps, correct_scale=True)["ate_m"]
                se3 = ate_rpe(seq.poses_gt, poses, stamps)["ate_m"]
                print(f"{cam}, {seq.name}, flow {width} {preset} cell {cell}: ATE Sim(3) {sim3:.2f} SE(3) {se3:.2f} m, "
                      f"VO {np.median(ms[1:]):.1f} / {np.percentile(ms[1:], 95):.1f} ms p50 / p95", flush=True)


if __name__ == "__main__":
    main()
