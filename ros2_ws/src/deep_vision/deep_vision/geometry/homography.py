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


def patch_corners(width: float, height: float | None = None) -> np.ndarray:
    """[4 x 2] corners of a W×H image or patch (pixel centres): TL, TR, BR, BL."""
    height = width if height is None else height
    return np.array([[0.0, 0.0], [width - 1.0, 0.0], [width - 1.0, height - 1.0], [0.0, height - 1.0]])


def four_point_to_homography(corners: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Homographies mapping ``corners`` to ``corners + offsets`` (the 4-point parameterisation).

    Direct linear transform with h33 = 1 (Hartley & Zisserman (4.1)), solved as
    one batched 8×8 system.

    Args:
        corners: [B x 4 x 2] or [4 x 2] source points (broadcast over the batch).
        offsets: [B x 4 x 2] or [4 x 2] displacement of each corner.
    Returns:
        [B x 3 x 3] (or [3 x 3] for unbatched input) homographies.
    """
    corners = np.asarray(corners, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.float64)
    single = corners.ndim == 2 and offsets.ndim == 2
    if corners.shape[-2:] != (4, 2) or offsets.shape[-2:] != (4, 2):
        raise ValueError(f"corners and offsets: expected shape [B x 4 x 2], got {list(corners.shape)} "
                         f"and {list(offsets.shape)}")
    src = np.broadcast_to(corners, np.broadcast_shapes(corners.shape, offsets.shape)).reshape(-1, 4, 2)
    dst = src + np.broadcast_to(offsets, src.shape).reshape(-1, 4, 2)
    B = len(src)
    A = np.zeros((B, 8, 8))
    b = np.zeros((B, 8))
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    A[:, 0::2, 0], A[:, 0::2, 1], A[:, 0::2, 2] = x, y, 1.0
    A[:, 0::2, 6], A[:, 0::2, 7] = -u * x, -u * y
    A[:, 1::2, 3], A[:, 1::2, 4], A[:, 1::2, 5] = x, y, 1.0
    A[:, 1::2, 6], A[:, 1::2, 7] = -v * x, -v * y
    b[:, 0::2], b[:, 1::2] = u, v
    h = np.linalg.solve(A, b[..., None])[..., 0]
    H = np.concatenate([h, np.ones((B, 1))], axis=1).reshape(B, 3, 3)
    return H[0] if single else H


def homography_to_four_point(H: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Offsets [B x 4 x 2] (or [4 x 2]) that ``H`` [B x 3 x 3] (or [3 x 3]) moves ``corners`` [4 x 2] by."""
    H = np.asarray(H, dtype=np.float64)
    corners = np.asarray(corners, dtype=np.float64)
    homog = np.concatenate([corners, np.ones((4, 1))], axis=1)
    mapped = np.einsum("...ij,kj->...ki", H, homog)
    return mapped[..., :2] / mapped[..., 2:3] - corners


def resize_matrix(scale_x: float, scale_y: float) -> np.ndarray:
    """3×3 map from full-resolution pixels to pixels of the image resized by (scale_x, scale_y).

    Pixel-centre convention, as cv2.resize: ``x_small = (x_full + ½)·s − ½``.
    """
    return np.array([[scale_x, 0.0, 0.5 * scale_x - 0.5], [0.0, scale_y, 0.5 * scale_y - 0.5], [0.0, 0.0, 1.0]])


def conjugate_homography(H: np.ndarray, S: np.ndarray) -> np.ndarray:
    """``S⁻¹ H S``: a homography of coordinates ``S x`` expressed in coordinates ``x``.

    With ``S = resize_matrix(s, s)`` this turns a homography estimated on a
    resized (working-resolution) image into one at full resolution; with the
    inverse of ``S`` it goes the other way. Normalised so ``H[2, 2] = 1``.
    """
    out = np.linalg.inv(S) @ np.asarray(H, dtype=np.float64) @ S
    return out / out[..., 2:3, 2:3]


def corner_error(H_est: np.ndarray, H_true: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Mean distance (pixels) between ``corners`` mapped by ``H_est`` and by ``H_true``.

    The mean average corner error (MACE) of DeTone et al. is the mean of this
    over pairs. Accepts [3 x 3] or [B x 3 x 3]; returns a scalar or [B].
    """
    est = homography_to_four_point(H_est, corners) + corners
    true = homography_to_four_point(H_true, corners) + corners
    return np.linalg.norm(est - true, axis=-1).mean(axis=-1)
