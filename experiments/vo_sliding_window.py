"""Probe: does a windowed refinement (vo_window_refiner.py beside this script: the VO's steps as between-pose
priors, corners tracked over several frames as robust projection factors, GTSAM) lower the live odometry's drift?
Training ranges only.

The shipped VisualOdometry runs over each sequence; its steps (and where each length came from: a ground-plane
length gets --ground-sigma, any other --carried-sigma) feed a WindowRefiner. Two live outputs: "windowed", the
newest frame's solved pose (the window anchored at its oldest frame), and "window steps", the newest step as the
window solved it, chained onto the previous output. Prints SE(3) / Sim(3) ATE of each, the step lengths' error
against the ground truth (RMS, lag-1 autocorrelation), and the refiner's time per frame.

    .venv/bin/python experiments/vo_sliding_window.py [--frames 10] [--tracks 300] [--sequences kitti03,kitti00,syn3]
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace
from pathlib import Path

import numpy as np

from deep_vision.estimators.homography import to_grey
from vo_window_refiner import WindowRefiner  # noqa: E402  (beside this script)
from deep_vision.eval.trajectory_metrics import ate_rpe
from deep_vision.eval.vo_eval import kitti_sequence, shipped_factory, synthetic_sequence
from deep_vision.geometry.transforms import invert_transform



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--tracks", type=int, default=300)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--ground-sigma", type=float, default=0.08)
    ap.add_argument("--carried-sigma", type=float, default=0.3)
    ap.add_argument("--pixel-sigma", type=float, default=1.0)
    ap.add_argument("--direction-sigma", type=float, default=1.0)
    ap.add_argument("--rotation-sigma", type=float, default=0.1)
    ap.add_argument("--width", type=int, default=1241)
    ap.add_argument("--kernel", default="huber")
    ap.add_argument("--gt-steps-noise", type=float, default=0.0,
                    help="instead of the shipped VO: the ground truth's steps, lengths times exp(N(0, this)), seeded")
    ap.add_argument("--sequences", default="kitti03,kitti00,syn3")
    args = ap.parse_args()
    root = Path(args.data) / "kitti" / "sequences"
    make = {"kitti03": lambda: kitti_sequence(root / "03", 0, 549),
            "kitti00": lambda: kitti_sequence(root / "00", 0, 99),
            "syn3": lambda: synthetic_sequence(3, 300)}
    shipped = shipped_factory()
    print(f"# {vars(args)}")
    for name in args.sequences.split(","):
        seq = make[name]().preloaded()
        vo = shipped(seq.camera, seq.camera_height_m)
        win = WindowRefiner(seq.camera.K, frames=args.frames, max_tracks=args.tracks, iterations=args.iterations,
                            pixel_sigma=args.pixel_sigma, direction_sigma_deg=args.direction_sigma,
                            rotation_sigma_deg=args.rotation_sigma, width=args.width, kernel=args.kernel)
        raw, ref, steps, ms = [], [], [], []
        gt = invert_transform(seq.poses_gt[0]) @ seq.poses_gt
        rng = np.random.default_rng(0)
        for k, frame in enumerate(seq.frames()):
            if args.gt_steps_noise > 0:  # a controlled test: exact rotation and direction, noisy lengths
                T = invert_transform(gt[k - 1]) @ gt[k] if k else np.eye(4)
                u, _, vt = np.linalg.svd(T[:3, :3])
                T[:3, :3], T[:3, 3] = u @ vt, T[:3, 3] * np.exp(rng.normal(0, args.gt_steps_noise))
                r = SimpleNamespace(valid=k > 0, relative=T, scale="ground", pose=(raw[-1] @ T) if raw else np.eye(4))
            else:
                r = vo.process(frame, int(seq.stamps_ns[k]))
            t0 = time.perf_counter()
            sigma = args.ground_sigma if r.scale == "ground" else args.carried_sigma
            ref.append(win.add(to_grey(frame), r.relative if r.valid else None, sigma))
            ms.append((time.perf_counter() - t0) * 1e3)
            raw.append(r.pose)
            ids = list(win._ids)  # the newest step as the window solved it, chained onto the previous output
            step = np.linalg.inv(win._poses[ids[-2]]) @ win._poses[ids[-1]] if len(ids) > 1 else np.eye(4)
            steps.append(steps[-1] @ step if steps and len(ids) > 1 else ref[-1] if not steps else steps[-1])
        stamps = (seq.stamps_ns - seq.stamps_ns[0]) / 1e9
        line = []
        first = "shipped" if args.gt_steps_noise <= 0 else "noisy steps"
        for label, P in ((first, np.stack(raw)), ("windowed", np.stack(ref)), ("window steps", np.stack(steps))):
            se3 = ate_rpe(gt, P, stamps)["ate_m"]
            sim3 = ate_rpe(gt, P, stamps, correct_scale=True)["ate_m"]
            lg = np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1)
            le = np.linalg.norm(np.diff(P[:, :3, 3], axis=0), axis=1)
            ok = lg > 0.1
            err = le[ok] / lg[ok] - 1
            line.append(f"{label} SE(3) {se3:.2f} Sim(3) {sim3:.2f} len rms {np.sqrt(np.mean(err**2)):.3f} "
                        f"ac1 {np.corrcoef(err[:-1], err[1:])[0, 1]:+.2f}")
        print(f"{name}: " + " | ".join(line) + f" | window ms p50 {np.median(ms):.1f} p95 {np.percentile(ms, 95):.1f}",
              flush=True)


if __name__ == "__main__":
    main()
