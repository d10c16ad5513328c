"""Pure geometry on numpy: SE(3), rotations, pinhole cameras, homographies, KITTI poses."""

from deep_vision.geometry.camera import PinholeCamera
from deep_vision.geometry.homography import apply_homography, plane_induced_homography
from deep_vision.geometry.kitti import read_kitti_poses, write_kitti_poses
from deep_vision.geometry.transforms import (
    OPTICAL_FROM_BODY,
    invert_transform,
    make_transform,
    quaternion_from_rotation,
    rotation_from_quaternion,
    rotation_z,
    transform_points,
)

__all__ = [
    "OPTICAL_FROM_BODY",
    "PinholeCamera",
    "apply_homography",
    "invert_transform",
    "make_transform",
    "plane_induced_homography",
    "quaternion_from_rotation",
    "read_kitti_poses",
    "rotation_from_quaternion",
    "rotation_z",
    "transform_points",
    "write_kitti_poses",
]
