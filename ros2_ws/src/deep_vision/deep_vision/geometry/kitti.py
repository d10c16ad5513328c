"""KITTI odometry pose files: one 3×4 row-major camera pose per line (T_world_cam)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deep_vision.errors import DatasetError


def read_kitti_poses(path: str | Path) -> np.ndarray:
    """Read a KITTI poses file into [N x 4 x 4] transforms (camera i in the first camera's frame)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"KITTI poses file not found: {path}")
    rows = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if rows.shape[1] != 12:
        raise DatasetError(f"{path}: expected 12 numbers per line (3x4 pose), got {rows.shape[1]}")
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3, :4] = rows.reshape(-1, 3, 4)
    return poses


def write_kitti_poses(path: str | Path, poses: np.ndarray) -> Path:
    """Write [N x 4 x 4] (or [N x 3 x 4]) poses in KITTI format; returns the path."""
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] not in ((4, 4), (3, 4)):
        raise ValueError(f"poses: expected shape [N x 4 x 4], got {list(poses.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, poses[:, :3, :4].reshape(len(poses), 12), fmt="%.9e")
    return path
