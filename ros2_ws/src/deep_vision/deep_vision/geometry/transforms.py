"""Rigid transforms as 4×4 numpy matrices and rotations (scipy's ``Rotation``).

Naming: ``T_a_b`` maps coordinates in frame ``b`` into frame ``a``
(``x_a = T_a_b @ x_b``), so ``T_a_c = T_a_b @ T_b_c``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

# Rotation taking REP 103 body axes (x forward, y left, z up) to the optical
# frame (z forward, x right, y down): x_optical = OPTICAL_FROM_BODY @ x_body.
OPTICAL_FROM_BODY = np.array(
    [
        [0.0, -1.0, 0.0],
        [0.0, 0.0, -1.0],
        [1.0, 0.0, 0.0],
    ]
)


def _check_shape(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if array.shape[-len(shape) :] != shape:
        raise ValueError(f"{name}: expected shape [... x {' x '.join(map(str, shape))}], got {list(array.shape)}")


def make_transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4×4 transform from a [3 x 3] rotation and a [3] translation."""
    rotation = np.asarray(rotation, dtype=np.float64)
    translation = np.asarray(translation, dtype=np.float64)
    _check_shape("rotation", rotation, (3, 3))
    _check_shape("translation", translation, (3,))
    T = np.eye(4)
    T[:3, :3] = rotation
    T[:3, 3] = translation
    return T


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of [... x 4 x 4] rigid transforms, using Rᵀ rather than a general inverse."""
    T = np.asarray(T, dtype=np.float64)
    _check_shape("T", T, (4, 4))
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    out = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    out[..., 3, 3] = 1.0
    return out


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4×4 transform to [N x 3] points."""
    points = np.asarray(points, dtype=np.float64)
    _check_shape("points", points, (3,))
    return points @ T[:3, :3].T + T[:3, 3]


def rotation_z(yaw: float) -> np.ndarray:
    """Rotation by ``yaw`` radians about +z."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def quaternion_from_rotation(R: np.ndarray) -> np.ndarray:
    """Unit quaternion [x, y, z, w] (ROS order) of a [3 x 3] or [N x 3 x 3] rotation."""
    return Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_quat()


def rotation_from_quaternion(q: np.ndarray) -> np.ndarray:
    """[3 x 3] (or [N x 3 x 3]) rotation of quaternion(s) [x, y, z, w]; normalises first."""
    return Rotation.from_quat(np.asarray(q, dtype=np.float64)).as_matrix()


def euler_zyx_from_rotation(R: np.ndarray) -> np.ndarray:
    """[..., 3] Euler angles (rz, ry, rx) in radians, intrinsic Z-Y-X (yaw, pitch, roll), of [... x 3 x 3]."""
    return Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_euler("ZYX")


def rotation_from_euler_zyx(angles: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_zyx_from_rotation`."""
    return Rotation.from_euler("ZYX", np.asarray(angles, dtype=np.float64)).as_matrix()


def rotation_angle(R: np.ndarray) -> float:
    """Angle (radians, in [0, π]) of a [3 x 3] rotation matrix."""
    return float(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)))


def skew(v: np.ndarray) -> np.ndarray:
    """[3 x 3] cross-product matrix of a [3] vector."""
    x, y, z = np.asarray(v, dtype=np.float64)
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def adjoint(T: np.ndarray) -> np.ndarray:
    """[6 x 6] adjoint of an SE(3) transform for twists ordered (translation, rotation).

    Maps a perturbation in the frame of ``T``'s child into its parent frame:
    ``T exp(ξ) = exp(Ad(T) ξ) T`` (Barfoot, State Estimation for Robotics, (7.46)).
    """
    R, t = T[:3, :3], T[:3, 3]
    A = np.zeros((6, 6))
    A[:3, :3] = R
    A[:3, 3:] = skew(t) @ R
    A[3:, 3:] = R
    return A


def body_velocities(T: np.ndarray, times_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear and angular velocity ([N x 3] each) of a moving frame in its own axes, by central differences.

    ``T`` are its [N x 4 x 4] poses in a fixed frame (any: the result does not depend on it), ``times_s``
    the [N] times. The first and last poses use one-sided differences; a single pose gives zeros.
    """
    T = np.asarray(T, dtype=np.float64)
    times_s = np.asarray(times_s, dtype=np.float64)
    n = len(T)
    lin, ang = np.zeros((n, 3)), np.zeros((n, 3))
    for i in range(n if n > 1 else 0):
        a, b = max(i - 1, 0), min(i + 1, n - 1)
        dt = times_s[b] - times_s[a]
        lin[i] = T[i, :3, :3].T @ (T[b, :3, 3] - T[a, :3, 3]) / dt
        ang[i] = Rotation.from_matrix(T[a, :3, :3].T @ T[b, :3, :3]).as_rotvec() / dt
    return lin, ang
