"""Geometry: transforms, quaternions, camera, plane-induced homography, KITTI pose files."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from deep_vision.errors import DatasetError
from deep_vision.geometry import (
    OPTICAL_FROM_BODY,
    PinholeCamera,
    apply_homography,
    invert_transform,
    make_transform,
    plane_induced_homography,
    quaternion_from_rotation,
    read_kitti_poses,
    rotation_from_quaternion,
    transform_points,
    write_kitti_poses,
)
from deep_vision.geometry.transforms import body_velocities, rotation_angle

RNG = np.random.default_rng(1)


def random_transform() -> np.ndarray:
    return make_transform(Rotation.random(random_state=RNG.integers(1 << 30)).as_matrix(), RNG.normal(size=3))


def test_invert_transform_batched():
    T = np.stack([random_transform() for _ in range(5)])
    np.testing.assert_allclose(invert_transform(T) @ T, np.tile(np.eye(4), (5, 1, 1)), atol=1e-12)


def test_quaternion_round_trip_ros_order():
    np.testing.assert_allclose(quaternion_from_rotation(np.eye(3)), [0, 0, 0, 1])
    R = random_transform()[:3, :3]
    np.testing.assert_allclose(rotation_from_quaternion(quaternion_from_rotation(R)), R, atol=1e-12)


def test_optical_from_body_axes():
    # Body forward (x) is optical z; body left (y) is optical -x; body up (z) is optical -y.
    np.testing.assert_allclose(OPTICAL_FROM_BODY @ [1, 0, 0], [0, 0, 1])
    np.testing.assert_allclose(OPTICAL_FROM_BODY @ [0, 1, 0], [-1, 0, 0])
    np.testing.assert_allclose(OPTICAL_FROM_BODY @ [0, 0, 1], [0, -1, 0])
    assert np.isclose(np.linalg.det(OPTICAL_FROM_BODY), 1.0)


def test_shape_errors_are_readable():
    with pytest.raises(ValueError, match=r"expected shape \[... x 3 x 3\], got \[3, 4\]"):
        make_transform(np.zeros((3, 4)), np.zeros(3))
    with pytest.raises(ValueError, match=r"\[N x 2\]"):
        apply_homography(np.eye(3), np.zeros((4, 3)))


def test_camera_projection_and_scaling():
    cam = PinholeCamera(640, 480, 500.0, 510.0, 319.5, 239.5)
    uv, z = cam.project(np.array([[0.0, 0.0, 2.0], [1.0, -1.0, 4.0]]))
    np.testing.assert_allclose(uv, [[319.5, 239.5], [444.5, 112.0]])
    np.testing.assert_allclose(z, [2, 4])
    half = cam.scaled(0.5)
    assert (half.width, half.height) == (320, 240)
    np.testing.assert_allclose([half.cx, half.cy], [159.5, 119.5])
    wide = cam.scaled(0.5, 0.25)  # each axis by its own factor
    assert (wide.width, wide.height) == (320, 120)
    np.testing.assert_allclose([wide.fx, wide.fy, wide.cx, wide.cy], [250.0, 127.5, 159.5, 59.5])
    with pytest.raises(ValueError):
        PinholeCamera(0, 10, 1, 1, 0, 0)


def test_plane_induced_homography_matches_projection():
    cam = PinholeCamera(800, 600, 700.0, 700.0, 400.0, 300.0)
    T_cur_prev = random_transform()
    T_cur_prev[:3, :3] = Rotation.from_rotvec(RNG.normal(scale=0.1, size=3)).as_matrix()
    n = RNG.normal(size=3)
    n /= np.linalg.norm(n)
    n *= np.sign(n[2])  # plane in front of the camera
    d = 5.0
    # Points on the plane nᵀX = d, in front of the previous camera.
    uv_prev = RNG.uniform([0, 0], [800, 600], size=(50, 2))
    rays = np.hstack([uv_prev, np.ones((50, 1))]) @ np.linalg.inv(cam.K).T
    X_prev = rays * (d / (rays @ n))[:, None]
    X_cur = transform_points(T_cur_prev, X_prev)
    uv_cur, _ = cam.project(X_cur)
    H = plane_induced_homography(cam.K, T_cur_prev, n, d)
    np.testing.assert_allclose(apply_homography(H, uv_prev), uv_cur, atol=1e-6)
    assert H[2, 2] == pytest.approx(1.0, abs=1e-12)  # normalised


def test_camera_intrinsics_must_be_positive():
    PinholeCamera(1, 1, 1.0, 1.0, 0.0, 0.0)  # the normalised camera (K = I) of a one-pixel image is valid
    for bad in [(0, 10, 1.0, 1.0), (10, 0, 1.0, 1.0), (10, 10, 0.0, 1.0), (10, 10, 1.0, 0.0), (10, 10, 1.0, -5.0)]:
        with pytest.raises(ValueError, match="positive"):
            PinholeCamera(*bad, 5.0, 5.0)


def test_plane_behind_or_through_the_camera_is_refused():
    for d in (0.0, -2.0):
        with pytest.raises(ValueError, match="distance_prev must be positive"):
            plane_induced_homography(np.eye(3), np.eye(4), [0, 0, 1], d)
    # any positive distance is a plane in front, however close: no motion, identity
    np.testing.assert_allclose(plane_induced_homography(np.eye(3), np.eye(4), [0, 0, 1], 0.5), np.eye(3))


def test_identity_motion_gives_identity():
    K = np.diag([500.0, 500.0, 1.0])
    np.testing.assert_allclose(plane_induced_homography(K, np.eye(4), [0, 0, 1], 3.0), np.eye(3))


def test_kitti_poses_round_trip(tmp_path):
    poses = np.stack([random_transform() for _ in range(4)])
    path = write_kitti_poses(tmp_path / "p.txt", poses)
    assert len(path.read_text().splitlines()) == 4
    assert len(path.read_text().splitlines()[0].split()) == 12
    np.testing.assert_allclose(read_kitti_poses(path), poses, atol=1e-8)


def test_kitti_poses_written_from_3x4_rows(tmp_path):
    poses = np.stack([random_transform() for _ in range(3)])
    np.testing.assert_allclose(read_kitti_poses(write_kitti_poses(tmp_path / "p.txt", poses[:, :3])), poses,
                               atol=1e-8)
    with pytest.raises(ValueError, match="N x 4 x 4"):
        write_kitti_poses(tmp_path / "q.txt", poses[:, :3, :3])


@pytest.mark.parametrize("degrees", [0.0, 30.0, 150.0, 180.0])
def test_rotation_angle_known_values(degrees):
    axis = np.array([1.0, 2.0, -2.0]) / 3.0
    R = Rotation.from_rotvec(np.radians(degrees) * axis).as_matrix()
    assert np.degrees(rotation_angle(R)) == pytest.approx(degrees, abs=1e-6)


def test_rotation_angle_of_matrices_with_rounding_noise():
    """A trace a hair outside [-1, 3] (products of rotations) still gives an angle, not NaN."""
    assert rotation_angle(np.eye(3) * (1 + 1e-12)) == 0.0
    assert rotation_angle(np.diag([-1.0, -1.0, 1.0]) * (1 + 1e-12)) == pytest.approx(np.pi)


def test_body_velocities_are_central_differences_inside():
    """Accelerating straight ahead, x = t²: central differences are exact for a parabola (v = 2t) inside, the
    ends one-sided."""
    times = 50.0 + np.arange(5) * 0.1
    T = np.stack([make_transform(np.eye(3), [(t - 50.0) ** 2, 0.0, 0.0]) for t in times])
    lin, _ = body_velocities(T, times)
    np.testing.assert_allclose(lin[1:-1, 0], 2 * (times[1:-1] - 50.0), atol=1e-9)
    assert lin[0, 0] == pytest.approx(0.1) and lin[-1, 0] == pytest.approx(0.7)


@pytest.mark.parametrize("n", [2, 3])
def test_body_velocities_of_a_constant_twist(n):
    """A body moving 2 m/s forward (its x) while turning 0.1 rad/s about its z, sampled at 10 Hz: two poses
    already give the velocity (one-sided differences: the chord is off by v·ω·dt/2 = 0.01 m/s sideways)."""
    times = 100.0 + np.arange(n) * 0.1  # a bag's clock: not from zero
    T = np.stack([make_transform(Rotation.from_rotvec([0, 0, 0.1 * t]).as_matrix(),
                                 [20.0 * np.sin(0.1 * t), 20.0 * (1 - np.cos(0.1 * t)), 0.0]) for t in times - 100.0])
    lin, ang = body_velocities(T, times)
    np.testing.assert_allclose(lin, np.tile([2.0, 0.0, 0.0], (n, 1)), atol=0.012)
    np.testing.assert_allclose(ang, np.tile([0.0, 0.0, 0.1], (n, 1)), atol=1e-9)
    lin, ang = body_velocities(T[:1], times[:1])
    np.testing.assert_array_equal(lin, np.zeros((1, 3)))


def test_kitti_poses_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_kitti_poses(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    with pytest.raises(DatasetError, match="12 numbers per line .*, got 3"):
        read_kitti_poses(tmp_path / "bad.txt")


def test_real_kitti_poses_read(shared_data):
    poses = read_kitti_poses(shared_data / "kitti" / "poses" / "00.txt")
    assert poses.shape == (160, 4, 4)
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-6)
    # The car drives forward (camera z) about 1 m per frame at the start of sequence 00.
    assert 0.3 < np.linalg.norm(poses[10][:3, 3] - poses[9][:3, 3]) < 2.0
