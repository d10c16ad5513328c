"""Probe: the VO's two-view front end, tracked (Shi-Tomasi + Lucas-Kanade) against matched descriptors (ORB keypoints
described by ORB or by the learned patch descriptor), on held-out sequences with ground-truth step lengths.

Each front end gives rotation and translation direction per frame pair (FeatureTracker's essential-matrix step and
refinement, as the hybrid mode's ``geometry: features``); the step length is the ground truth's, so the figures
isolate the correspondences. Prints ATE, the KITTI-style relative errors, geometry failures and time per frame.

    .venv/bin/python experiments/vo_descriptor_front_end.py --model models/patch.onnx
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from deep_vision.estimators.patch import PatchDescriptor
from deep_vision.estimators.two_view import DescriptorMatcher, FeatureTracker
from deep_vision.eval.trajectory_metrics import ate_rpe, kitti_relative_errors
from deep_vision.eval.vo_eval import integrate, kitti_sequence, run_classical, synthetic_sequence, with_gt_scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/patch.onnx")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--synthetic-frames", type=int, default=300)
    args = ap.parse_args()
    patch = PatchDescriptor.from_model(args.model)
    sequences = [kitti_sequence(Path(args.data) / "kitti" / "sequences" / "00", 100, 159),
                 synthetic_sequence(9001, args.synthetic_frames)]
    for width in (400, None):
        front_ends = {
            "tracked (LK)": lambda: FeatureTracker(max_corners=800, width=width, refine=True),
            "matched ORB": lambda: DescriptorMatcher(max_corners=800, width=width, refine=True, descriptor="orb"),
            "matched learned": lambda: DescriptorMatcher(max_corners=800, width=width, refine=True,
                                                         descriptor="learned", patch=patch),
        }
        for seq in sequences:
            stamps_s = (seq.stamps_ns - seq.stamps_ns[0]) / 1e9
            for name, make in front_ends.items():
                t0 = time.perf_counter()
                rel, times, failures = run_classical(seq, make())
                poses = integrate(with_gt_scale(rel, seq.poses_gt))
                m = {**ate_rpe(seq.poses_gt, poses, stamps_s), **kitti_relative_errors(seq.poses_gt, poses)}
                t_key = "t_rel_pct" if "t_rel_pct" in m else "t_rel_snippet_pct"
                r_key = t_key.replace("t_rel", "r_rel").replace("_pct", "_deg_per_100m")
                print(f"width {width or 'full'} | {seq.name} | {name} | ATE {m['ate_m']:.2f} m | "
                      f"{t_key} {m.get(t_key, float('nan')):.2f} | {r_key} {m.get(r_key, float('nan')):.2f} | "
                      f"RPE rot {m['rpe_rot_deg']:.3f} deg/frame | failures {failures} | "
                      f"time p50 {np.median(times[1:]):.1f} ms | total {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
