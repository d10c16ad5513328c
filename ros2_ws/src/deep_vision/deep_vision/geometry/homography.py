"""Homographies: plane-induced homography between two views, applying H to points."""

from __future__ import annotations

import numpy as np


def plane_induced_homography(
    K: np.ndarray, T_cur_prev: np.ndarray, normal_prev: np.ndarray, distance_prev: float
) -> np.ndarray:
    """Homography mapping pixels of the previous view into the current view, for a plane.

    The plane is ``{X : nᵀX = d}`` in the previous camera's frame (``n`` unit,
    ``d > 0`` the camera's distance to it). With ``X_cur = R X_prev + t``,
    points of the plane satisfy ``X_cur = (R + t nᵀ / d) X_prev`` so
    ``H = K (R + t nᵀ / d) K⁻¹`` (Hartley & Zisserman (13.2), with the plane
    written ``nᵀX = d`` rather than ``nᵀX + d = 0``). Normalised so ``H[2, 2] = 1``.

    Args:
        K: [3 x 3] intrinsics (same camera for both views).
        T_cur_prev: [4 x 4] transform from the previous to the current camera frame.
        normal_prev: [3] unit plane normal in the previous camera frame.
        distance_prev: distance of the previous camera to the plane (metres).
    """
    K = np.asarray(K, dtype=np.float64)
    n = np.asarray(normal_prev, dtype=np.float64).reshape(3)
    if distance_prev <= 0:
        raise ValueError(f"distance_prev must be positive, got {distance_prev}")
    R = T_cur_prev[:3, :3]
    t = T_cur_prev[:3, 3]
    H = K @ (R + np.outer(t, n) / distance_prev) @ np.linalg.inv(K)
    return H / H[2, 2]


def apply_homography(H: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map [N x 2] pixel coordinates through a [3 x 3] homography."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points: expected shape [N x 2], got {list(points.shape)}")
    homog = np.hstack([points, np.ones((len(points), 1))]) @ np.asarray(H, dtype=np.float64).T
    return homog[:, :2] / homog[:, 2:3]
