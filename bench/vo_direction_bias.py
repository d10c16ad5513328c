"""Benchmark / diagnosis: how much of each method's KITTI t_rel is a bias of its translation direction.

Usage: .venv/bin/python bench/vo_direction_bias.py [--trajectories bench/results/vo-2026-11-22-trajectories]
Part 1 reads the GT-scale trajectories that ``deep-vision evaluate vo`` wrote for KITTI 00 frames 100-159 and,
per method, gives the mean and spread of the per-frame errors of yaw and of the translation direction's
horizontal angle, t_rel as reported, t_rel with the method's mean direction error taken out of every step,
and t_rel with the ground truth's rotations and the method's own directions.
Part 2 runs the two-view front ends (hybrid's refined dense flow, the classical corner tracker) on frames
0-159 and compares their mean horizontal direction error on the straight part (0-99) with the turn (100-159),
beside the ground truth's mean direction there.
Writes bench/results/<date>-vo-direction-bias.md.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

ROOT = Path(__file__).resolve().parents[1]

from deep_vision.estimators.two_view import DenseFlowTracker, FeatureTracker  # noqa: E402
from deep_vision.eval.trajectory_metrics import kitti_relative_errors  # noqa: E402
from deep_vision.eval.vo_eval import kitti_sequence  # noqa: E402
from deep_vision.geometry.transforms import invert_transform  # noqa: E402


def load_kitti_poses(path: Path) -> np.ndarray:
    rows = np.loadtxt(path).reshape(-1, 3, 4)
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3] = rows
    return poses


def heading_deg(t: np.ndarray) -> float:
    """Horizontal angle of a camera-frame direction from the optical axis (x right, z forward), degrees."""
    return float(np.degrees(np.arctan2(t[0], t[2])))


def steps(poses: np.ndarray) -> list[np.ndarray]:
    return [invert_transform(poses[i]) @ poses[i + 1] for i in range(len(poses) - 1)]


def chain(rel: list[np.ndarray]) -> np.ndarray:
    out = [np.eye(4)]
    for r in rel:
        out.append(out[-1] @ r)
    return np.array(out)


def analyse(gt: np.ndarray, est: np.ndarray) -> dict[str, float]:
    g, e = steps(gt), steps(est)
    yaw = np.array([np.degrees(Rotation.from_matrix(a[:3, :3].T @ b[:3, :3]).as_rotvec()[1]) for a, b in zip(g, e)])
    dirs = np.array([heading_deg(b[:3, 3]) - heading_deg(a[:3, 3]) for a, b in zip(g, e)])
    unbias = Rotation.from_rotvec([0.0, -np.radians(dirs.mean()), 0.0]).as_matrix()
    no_bias, gt_rot = [], []
    for a, b in zip(g, e):
        r = b.copy()
        r[:3, 3] = unbias @ b[:3, 3]
        no_bias.append(r)
        r = b.copy()
        r[:3, :3] = a[:3, :3]
        gt_rot.append(r)
    return {"yaw_mean": yaw.mean(), "yaw_std": yaw.std(), "dir_mean": dirs.mean(), "dir_std": dirs.std(),
            "t_rel": kitti_relative_errors(gt, est)["t_rel_pct"],
            "t_rel_no_bias": kitti_relative_errors(gt, chain(no_bias))["t_rel_pct"],
            "t_rel_gt_rot": kitti_relative_errors(gt, chain(gt_rot))["t_rel_pct"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trajectories", default=str(ROOT / "bench" / "results" / "vo-2026-11-22-trajectories"))
    parser.add_argument("--kitti", default=str(ROOT.parent / "shared" / "data" / "kitti" / "sequences" / "00"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    traj = Path(args.trajectories)
    name = "kitti_00_100-159"
    gt = load_kitti_poses(traj / f"{name}_ground_truth.txt")
    command = ".venv/bin/python bench/vo_direction_bias.py " + " ".join(sys.argv[1:])
    lines = ["# VO on the KITTI snippet: translation-direction bias (diagnosis)", "", f"- command: `{command}`",
             f"- trajectories: `{traj.relative_to(ROOT) if traj.is_relative_to(ROOT) else traj}` (GT step lengths)",
             "", "## 1. KITTI 00 frames 100-159 (a 77° right turn), per method", "",
             "Errors per frame (estimate minus truth, degrees; direction = horizontal angle of the step's "
             "translation from the optical axis, positive to the right).", "",
             "| method | yaw error mean / std | direction error mean / std | t_rel % | t_rel %, mean direction "
             "error removed | t_rel %, GT rotations + own directions |", "|---|---|---|---|---|---|"]
    for method in ("hybrid_GT_scale", "classical_GT_scale", "classical_+_refinement_GT_scale", "network_GT_scale"):
        path = traj / f"{name}_{method}.txt"
        if not path.is_file():
            continue
        m = analyse(gt, load_kitti_poses(path))
        lines.append(f"| {method.replace('_', ' ')} | {m['yaw_mean']:+.3f} / {m['yaw_std']:.3f} | "
                     f"{m['dir_mean']:+.2f} / {m['dir_std']:.2f} | {m['t_rel']:.2f} | {m['t_rel_no_bias']:.2f} | "
                     f"{m['t_rel_gt_rot']:.2f} |")
    if Path(args.kitti).is_dir():
        seq = kitti_sequence(Path(args.kitti), 0, 159).preloaded()
        frames, K = list(seq.frames()), seq.camera.K
        g = steps(seq.poses_gt)
        truth = np.array([heading_deg(s[:3, 3]) for s in g])
        lines += ["", "## 2. Two-view front ends on frames 0-159: straight part against the turn", "",
                  f"Ground truth's mean direction: {truth[:99].mean():+.2f}° on frames 0-99, "
                  f"{truth[99:].mean():+.2f}° on 100-159.", "",
                  "| front end | direction error mean / std, 0-99 | direction error mean / std, 100-159 |",
                  "|---|---|---|"]
        for label, tracker in (("DenseFlowTracker(refine=True) (hybrid)", DenseFlowTracker(refine=True)),
                               ("FeatureTracker() (classical)", FeatureTracker())):
            err = np.full(len(g), np.nan)
            for i in range(len(g)):
                m = tracker.motion(frames[i], frames[i + 1], K)
                if m is not None:
                    err[i] = heading_deg(m.t_dir) - truth[i]
            a, b = err[:99], err[99:]
            lines.append(f"| {label} | {np.nanmean(a):+.2f} / {np.nanstd(a):.2f} | "
                         f"{np.nanmean(b):+.2f} / {np.nanstd(b):.2f} |")
    out = Path(args.out) / f"{date.today().isoformat()}-vo-direction-bias.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
