"""Probe: the classical baseline of ``deep-vision evaluate vo`` with the shipped ground scale instead of the ground
truth's step lengths, on the held-out KITTI snippets: the baseline without ground truth that issue 32's KITTI
criterion could be stated against.

The classical VO (Shi-Tomasi corners, Lucas-Kanade at full resolution, essential matrix; ``run_classical``'s
tracker) gives each step's rotation and direction; its length is the shipped ground scale's
(``GroundPlaneScale`` fused with the top views, built by the node's builder from config/perception.yaml),
measured on the classical step's inliers, held from the last step where there is none. Nothing is tuned here:
the held-out snippets are only evaluated. Printed per snippet: Sim(3) / SE(3) ATE of the classical steps with
these lengths and with the ground truth's.

    .venv/bin/python -W ignore experiments/vo_classical_ground_scale.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from deep_vision.estimators.two_view import FeatureTracker
from deep_vision.eval.trajectory_metrics import ate_rpe
from deep_vision.eval.vo_eval import integrate, kitti_sequence, shipped_factory, with_gt_scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    root = Path(args.data) / "kitti" / "sequences"
    make = shipped_factory()
    for name, first, last in (("00", 100, 159), ("03", 550, 800)):
        seq = kitti_sequence(root / name, first, last)
        ground = make(seq.camera, seq.camera_height_m).ground
        tracker = FeatureTracker()
        rel, length, prev, held = [], [], None, None
        for frame in seq.frames():
            if prev is not None:
                m = tracker.motion(prev, frame, seq.camera.K)
                T = np.eye(4) if m is None else np.block([[m.R, m.t_dir[:, None]], [np.zeros((1, 3)), np.ones((1, 1))]])
                e = None if m is None or not np.linalg.norm(m.t_dir) else \
                    ground.estimate(m.R, m.t_dir, seq.camera.K, m.p0, m.p1, images=(prev, frame))
                held = e.scale_m if e is not None else held
                length.append(held)
                rel.append(T if m is not None or not rel else rel[-1])
            prev = frame
        first_known = next((v for v in length if v is not None), 1.0)
        steps = []
        for T, v in zip(rel, length):
            S = T.copy()
            S[:3, 3] = T[:3, 3] / max(np.linalg.norm(T[:3, 3]), 1e-12) * (first_known if v is None else v)
            steps.append(S)
        stamps = (seq.stamps_ns - seq.stamps_ns[0]) / 1e9
        runs = (("ground scale", integrate(steps)), ("GT lengths", integrate(with_gt_scale(rel, seq.poses_gt))))
        for label, poses in runs:
            sim3 = ate_rpe(seq.poses_gt, poses, stamps, correct_scale=True)["ate_m"]
            se3 = ate_rpe(seq.poses_gt, poses, stamps)["ate_m"]
            print(f"KITTI {name} {first}-{last}, classical with {label}: ATE Sim(3) {sim3:.3f} SE(3) {se3:.3f} m "
                  f"({sum(v is not None for v in length)}/{len(length)} steps with a ground length)", flush=True)


if __name__ == "__main__":
    main()
