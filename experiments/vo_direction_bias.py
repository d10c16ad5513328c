"""Benchmark / diagnosis: how much of each method's KITTI t_rel is a bias of its translation direction.

Usage: .venv/bin/python experiments/vo_direction_bias.py [--trajectories bench/results/vo-2026-11-22-trajectories]
Part 1 reads the GT-scale trajectories that ``deep-vision evaluate vo`` wrote for KITTI 00 frames 100-159 and,
per method, gives the mean and spread of the per-frame errors of yaw and of the translation direction's
horizontal angle, t_rel as reported, t_rel with the method's mean direction error taken out of every step,
and t_rel with the ground truth's rotations and the method's own directions.
Part 2 runs the two-view front ends (hybrid's refined dense flow, the classical corner tracker) on frames
0-159 and compares their mean horizontal direction error on the straight part (0-99) with the turn (100-159),
beside the ground truth's mean direction there.
Part 3 asks whether the direction bias comes with the rotation: on each pair's RANSAC inliers the direction is
solved linearly (t ⊥ (R x1) × x0) for a given rotation: the estimate's, the ground truth's, and the ground
truth's axis with the estimate's angle.
Part 3 also solves the hybrid front end over wider baselines (frame i to i+k, k = 1-4): a bias that comes
from noise in frame pairs would shrink as the parallax grows (what a window of frames would buy).
Part 4 is the control: the same front ends on a held-out synthetic route (exact ground truth and intrinsics),
its turns against its straight parts.
Writes bench/results/<date>-vo-direction-bias.md.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

ROOT = Path(__file__).resolve().parents[1]

from deep_vision.estimators.two_view import DenseFlowTracker, FeatureTracker  # noqa: E402
from deep_vision.eval.trajectory_metrics import kitti_relative_errors  # noqa: E402
from deep_vision.eval.vo_eval import kitti_sequence, synthetic_sequence  # noqa: E402
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
    gt_rate = np.array([np.degrees(Rotation.from_matrix(a[:3, :3]).as_rotvec()[1]) for a in g])
    slope = np.polyfit(gt_rate, yaw, 1)[0]  # yaw error per degree of GT yaw: a rotation-scale difference
    return {"yaw_mean": yaw.mean(), "yaw_std": yaw.std(), "dir_mean": dirs.mean(), "dir_std": dirs.std(),
            "yaw_slope": slope, "yaw_corr": np.corrcoef(gt_rate, yaw)[0, 1],
            "yaw_corr_accel": np.corrcoef(np.gradient(gt_rate), yaw)[0, 1],  # a time offset would show here
            "yaw_total": (gt_rate.sum(), gt_rate.sum() + yaw.sum()),
            "t_rel": kitti_relative_errors(gt, est)["t_rel_pct"],
            "t_rel_no_bias": kitti_relative_errors(gt, chain(no_bias))["t_rel_pct"],
            "t_rel_gt_rot": kitti_relative_errors(gt, chain(gt_rot))["t_rel_pct"]}


def direction_given_rotation(R: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Unit translation (previous camera frame, forward) of T_prev_curr with rotation R from normalised
    homogeneous points: the epipolar constraint puts t ⊥ (R x1) × x0 for every pair (least squares)."""
    m = np.cross((R @ x1.T).T, x0)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    t = np.linalg.svd(m)[2][-1]
    return t if t[2] > 0 else -t


def rotation_split(frames: list, K: np.ndarray, g: list[np.ndarray], tracker) -> np.ndarray:
    """Per pair [direction error of: the estimate, linear with its rotation, linear with GT rotation, linear
    with GT axis and the estimate's angle; yaw error], degrees (NaN where the front end fails)."""
    K_inv = np.linalg.inv(K)
    out = np.full((len(g), 5), np.nan)
    for i, rel in enumerate(g):
        m = tracker.motion(frames[i], frames[i + 1], K)
        if m is None:
            continue
        p0, p1 = tracker.track(frames[i], frames[i + 1])
        _, mask = cv2.findEssentialMat(p0, p1, K, method=cv2.RANSAC, prob=0.999, threshold=tracker.ransac_px)
        if mask is None:
            continue
        inl = mask.ravel() > 0
        x0 = np.c_[p0[inl], np.ones(inl.sum())] @ K_inv.T
        x1 = np.c_[p1[inl], np.ones(inl.sum())] @ K_inv.T
        truth = heading_deg(rel[:3, 3])
        rv_gt = Rotation.from_matrix(rel[:3, :3]).as_rotvec()
        angle = np.linalg.norm(Rotation.from_matrix(m.R).as_rotvec())
        R_scaled = Rotation.from_rotvec(rv_gt * angle / max(np.linalg.norm(rv_gt), 1e-12)).as_matrix()
        out[i] = [heading_deg(m.t_dir) - truth,
                  *(heading_deg(direction_given_rotation(R, x0, x1)) - truth for R in (m.R, rel[:3, :3], R_scaled)),
                  np.degrees(Rotation.from_matrix(rel[:3, :3].T @ m.R).as_rotvec()[1])]
    return out


def front_ends() -> list[tuple[str, FeatureTracker]]:
    return [("DenseFlowTracker(refine=True) (hybrid)", DenseFlowTracker(refine=True)),
            ("FeatureTracker() (classical)", FeatureTracker())]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trajectories", default=str(ROOT / "bench" / "results" / "vo-2026-11-22-trajectories"))
    parser.add_argument("--kitti", default=str(ROOT.parent / "shared" / "data" / "kitti" / "sequences" / "00"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--synthetic-seed", type=int, default=9001, help="control route (0: none)")
    parser.add_argument("--synthetic-frames", type=int, default=300)
    args = parser.parse_args()
    traj = Path(args.trajectories)
    name = "kitti_00_100-159"
    gt = load_kitti_poses(traj / f"{name}_ground_truth.txt")
    command = ".venv/bin/python experiments/vo_direction_bias.py " + " ".join(sys.argv[1:])
    lines = ["# VO on the KITTI snippet: translation-direction bias (diagnosis)", "", f"- command: `{command}`",
             f"- trajectories: `{traj.relative_to(ROOT) if traj.is_relative_to(ROOT) else traj}` (GT step lengths)",
             "", "## 1. KITTI 00 frames 100-159 (a 77° right turn), per method", "",
             "Errors per frame (estimate minus truth, degrees; direction = horizontal angle of the step's "
             "translation from the optical axis, positive to the right).", "",
             "| method | yaw error mean / std | yaw error against GT yaw per frame: slope (correlation) | "
             "correlation of yaw error with GT yaw acceleration | "
             "total yaw, GT / estimate | direction error mean / std | t_rel % | t_rel %, mean direction "
             "error removed | t_rel %, GT rotations + own directions |", "|---|---|---|---|---|---|---|---|---|"]
    for method in ("hybrid_GT_scale", "classical_GT_scale", "classical_+_refinement_GT_scale", "network_GT_scale"):
        path = traj / f"{name}_{method}.txt"
        if not path.is_file():
            continue
        m = analyse(gt, load_kitti_poses(path))
        lines.append(f"| {method.replace('_', ' ')} | {m['yaw_mean']:+.3f} / {m['yaw_std']:.3f} | "
                     f"{m['yaw_slope']:+.4f} ({m['yaw_corr']:.2f}) | {m['yaw_corr_accel']:+.2f} | "
                     f"{m['yaw_total'][0]:.2f}° / {m['yaw_total'][1]:.2f}° | "
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
        split = {}
        for label, tracker in front_ends():
            split[label] = rotation_split(frames, K, g, tracker)
            err = split[label][:, 0]
            a, b = err[:99], err[99:]
            lines.append(f"| {label} | {np.nanmean(a):+.2f} / {np.nanstd(a):.2f} | "
                         f"{np.nanmean(b):+.2f} / {np.nanstd(b):.2f} |")
        lines += ["", "## 3. Does the direction error come with the rotation? (KITTI 00 frames 0-159)", "",
                  "Direction error mean / std (degrees) when the direction is solved linearly on the pair's RANSAC "
                  "inliers for a given rotation; last column: the estimated yaw minus the ground truth's.", "",
                  "| front end | part | estimate | linear, own rotation | linear, GT rotation | linear, GT axis with "
                  "own angle | yaw error |", "|---|---|---|---|---|---|---|"]
        for label, r in split.items():
            for part, rows in (("0-99 (straight)", r[:99]), ("100-159 (turn)", r[99:])):
                lines.append(f"| {label} | {part} | " + " | ".join(
                    f"{np.nanmean(rows[:, k]):+.2f} / {np.nanstd(rows[:, k]):.2f}" for k in range(4)) +
                    f" | {np.nanmean(rows[:, 4]):+.3f} / {np.nanstd(rows[:, 4]):.3f} |")
        lines += ["", "Wider baselines, hybrid front end (frame i to i+k): direction error mean / std, degrees.", "",
                  "| k | 0-99 (straight) | 100-159 (turn) |", "|---|---|---|"]
        tracker = DenseFlowTracker(refine=True)
        for k in (1, 2, 3, 4):
            err = np.full(len(frames) - k, np.nan)
            for i in range(len(err)):
                m = tracker.motion(frames[i], frames[i + k], K)
                if m is not None:
                    err[i] = heading_deg(m.t_dir) - heading_deg((invert_transform(seq.poses_gt[i])
                                                                  @ seq.poses_gt[i + k])[:3, 3])
            a, b = err[: 100 - k], err[100:]
            lines.append(f"| {k} | {np.nanmean(a):+.2f} / {np.nanstd(a):.2f} | {np.nanmean(b):+.2f} / "
                         f"{np.nanstd(b):.2f} |")
    if args.synthetic_seed:
        seq = synthetic_sequence(args.synthetic_seed, args.synthetic_frames).preloaded()
        frames, K = list(seq.frames()), seq.camera.K
        g = steps(seq.poses_gt)
        truth = np.array([heading_deg(s[:3, 3]) for s in g])
        yaw = np.array([np.degrees(Rotation.from_matrix(s[:3, :3]).as_rotvec()[1]) for s in g])
        turn = np.abs(yaw) > 0.5
        lines += ["", f"## 4. Control: held-out synthetic route (seed {args.synthetic_seed}, "
                  f"{args.synthetic_frames} frames)", "",
                  f"Turning frames (|yaw| > 0.5° per frame): {int(turn.sum())}, ground truth's mean direction "
                  f"{truth[turn].mean():+.2f}° there and {truth[~turn].mean():+.2f}° on the others.", "",
                  "| front end | direction error mean / std, straight | direction error mean / std, turns | "
                  "yaw error mean, turns |", "|---|---|---|---|"]
        for label, tracker in front_ends():
            r = rotation_split(frames, K, g, tracker)
            lines.append(f"| {label} | {np.nanmean(r[~turn, 0]):+.2f} / {np.nanstd(r[~turn, 0]):.2f} | "
                         f"{np.nanmean(r[turn, 0]):+.2f} / {np.nanstd(r[turn, 0]):.2f} | "
                         f"{np.nanmean(r[turn, 4]):+.3f} |")
    out = Path(args.out) / f"{date.today().isoformat()}-vo-direction-bias.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
