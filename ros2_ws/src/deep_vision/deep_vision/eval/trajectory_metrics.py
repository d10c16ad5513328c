"""Trajectory metrics: ATE/RPE through evo, KITTI t_rel/r_rel (odometry devkit protocol), file formats.

KITTI's devkit averages, over every start frame (step 10) and each segment
length, the translation error (%) and rotation error (deg/m) of the relative
pose between the start frame and the first frame a segment length further
along the ground-truth path. Its lengths are 100…800 m (a segment that runs
past the end is left out): ``t_rel_pct`` / ``r_rel_deg_per_100m`` are that
protocol and nothing else. A path shorter than the first segment (100 m) has
none; it gets the same computation over 10 %…80 % of its own length, under
other names: ``t_rel_snippet_pct`` / ``r_rel_snippet_deg_per_100m``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from deep_vision.geometry.transforms import invert_transform, quaternion_from_rotation

KITTI_LENGTHS_M = (100, 200, 300, 400, 500, 600, 700, 800)


def path_distances(poses: np.ndarray) -> np.ndarray:
    """[N] cumulative distance along the trajectory."""
    steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def segment_lengths(poses_gt: np.ndarray) -> tuple[float, ...]:
    """KITTI's lengths, or for a path shorter than the first of them, 10 %…80 % of its length."""
    total = path_distances(poses_gt)[-1]
    if total > KITTI_LENGTHS_M[0]:
        return tuple(float(x) for x in KITTI_LENGTHS_M)
    return tuple(round(float(total) * f, 1) for f in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8))


def relative_error_keys(m: dict) -> tuple[str, str, str]:
    """(t key, r key, protocol label) of a :func:`kitti_relative_errors` result."""
    if "t_rel_pct" in m:
        return "t_rel_pct", "r_rel_deg_per_100m", "KITTI devkit, 100-800 m segments"
    return "t_rel_snippet_pct", "r_rel_snippet_deg_per_100m", "snippet: segments of 10-80 % of the path"


def kitti_relative_errors(poses_gt: np.ndarray, poses_est: np.ndarray, lengths: tuple[float, ...] | None = None,
                          step: int = 10) -> dict[str, float]:
    """t_rel (%) and r_rel (deg per 100 m) averaged over segments, as the KITTI devkit (``calcSequenceErrors``).

    Without ``lengths``: the devkit's 100…800 m (keys ``t_rel_pct``, ``r_rel_deg_per_100m``), or for a path
    shorter than 100 m, 10 %…80 % of it (keys ``t_rel_snippet_pct``, ``r_rel_snippet_deg_per_100m``).
    """
    devkit = lengths is None and path_distances(poses_gt)[-1] > KITTI_LENGTHS_M[0]
    lengths = lengths or segment_lengths(poses_gt)
    t_key, r_key = ("t_rel_pct", "r_rel_deg_per_100m") if devkit else ("t_rel_snippet_pct", "r_rel_snippet_deg_per_100m")
    dist = path_distances(poses_gt)
    t_err, r_err = [], []
    for first in range(0, len(poses_gt), step):
        for length in lengths:
            last = int(np.searchsorted(dist, dist[first] + length))
            if last >= len(poses_gt):
                continue
            gt_rel = invert_transform(poses_gt[first]) @ poses_gt[last]
            est_rel = invert_transform(poses_est[first]) @ poses_est[last]
            err = invert_transform(est_rel) @ gt_rel
            angle = Rotation.from_matrix(err[:3, :3]).magnitude()  # accurate near zero, unlike arccos
            t_err.append(np.linalg.norm(err[:3, 3]) / length)
            r_err.append(angle / length)
    if not t_err:
        return {t_key: float("nan"), r_key: float("nan"), "segments": 0, "lengths_m": list(lengths)}
    return {t_key: 100.0 * float(np.mean(t_err)), r_key: float(np.degrees(np.mean(r_err)) * 100),
            "segments": len(t_err), "lengths_m": [float(x) for x in lengths]}


def _evo_trajectory(poses: np.ndarray, stamps_s: np.ndarray):
    from evo.core.trajectory import PoseTrajectory3D

    return PoseTrajectory3D(poses_se3=[p for p in poses], timestamps=np.asarray(stamps_s, dtype=np.float64))


def ate_rpe(poses_gt: np.ndarray, poses_est: np.ndarray, stamps_s: np.ndarray, correct_scale: bool = False) -> dict[str, float]:
    """ATE (RMSE of translation after Umeyama alignment, metres) and RPE per frame (evo)."""
    import copy

    from evo.core import metrics
    from evo.core.geometry import GeometryException

    ref = _evo_trajectory(poses_gt, stamps_s)
    est = _evo_trajectory(poses_est, stamps_s)
    est_aligned = copy.deepcopy(est)
    try:
        est_aligned.align(ref, correct_scale=correct_scale)
    except GeometryException:
        # Degenerate (e.g. perfectly planar or straight) paths: both start at the identity, keep that alignment.
        est_aligned = copy.deepcopy(est)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est_aligned))
    rpe_t = metrics.RPE(metrics.PoseRelation.translation_part, delta=1, delta_unit=metrics.Unit.frames, all_pairs=False)
    rpe_t.process_data((ref, est))
    rpe_r = metrics.RPE(metrics.PoseRelation.rotation_angle_deg, delta=1, delta_unit=metrics.Unit.frames, all_pairs=False)
    rpe_r.process_data((ref, est))
    return {"ate_m": float(ape.get_statistic(metrics.StatisticsType.rmse)),
            "rpe_trans_m": float(rpe_t.get_statistic(metrics.StatisticsType.rmse)),
            "rpe_rot_deg": float(rpe_r.get_statistic(metrics.StatisticsType.rmse))}


def write_tum(path: str | Path, stamps_s: np.ndarray, poses: np.ndarray) -> Path:
    """TUM format: ``timestamp tx ty tz qx qy qz qw`` per line (evo, rpg tools)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    q = quaternion_from_rotation(poses[:, :3, :3])
    rows = np.column_stack([stamps_s, poses[:, :3, 3], q])
    np.savetxt(path, rows, fmt="%.9f")
    return path


@dataclass
class TrajectoryResult:
    name: str
    poses: np.ndarray
    times_ms: list[float]
