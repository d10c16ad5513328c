"""What the stages take in, decoded from messages (rosbags or rclpy objects: the fields are the same).

Every path into a stage goes through these functions: the nodes on each
received message, the evaluation on each message of the bag, in log order.
A message that cannot be used raises :class:`~deep_vision.errors.ImageEncodingError`
(images) or returns None (the caller counts it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from deep_vision.geometry.camera import PinholeCamera
from deep_vision.io.image import as_grey, image_to_numpy, to_mono8, to_rgb8
from deep_vision.io.rosmsg import StaticTransforms, pose_to_matrix
from deep_vision.io.rosmsg import stamp_to_ns as stamp_ns

__all__ = ["CameraInfo", "Frame", "GpsFix", "LoopClosureIn", "LoopClosuresIn", "OdometryIn", "StaticTransforms",
           "camera_info_from_msg", "frame_from_msg", "gps_from_msg", "loop_closures_from_msg", "odometry_from_msg",
           "stamp_ns"]

GREY_ENCODINGS = ("mono8", "mono16", "16UC1")
#: NavSatStatus.STATUS_NO_FIX
STATUS_NO_FIX = -1


@dataclass(frozen=True)
class Frame:
    """A decoded camera frame: ``image`` is mono8 [H x W] for grey encodings, else rgb8 [H x W x 3]."""

    stamp_ns: int
    frame_id: str
    image: np.ndarray

    @cached_property
    def grey(self) -> np.ndarray:
        return as_grey(self.image)

    @cached_property
    def rgb(self) -> np.ndarray:
        return self.image if self.image.ndim == 3 else np.repeat(self.image[..., None], 3, axis=2)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.image.shape[1]), int(self.image.shape[0])


def frame_from_msg(msg: Any) -> Frame:
    """``sensor_msgs/Image`` → :class:`Frame`; raises ImageEncodingError for what cannot be decoded."""
    encoding = str(msg.encoding)
    array = image_to_numpy(msg)
    image = to_mono8(array, encoding) if encoding in GREY_ENCODINGS else to_rgb8(array, encoding)
    return Frame(stamp_ns(msg.header.stamp), str(msg.header.frame_id), np.ascontiguousarray(image))


DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")
#: Distortion coefficient counts OpenCV's undistortion takes (equidistant: the first 4 are used); 0: none.
DISTORTION_SIZES = (0, 4, 5, 8, 12, 14)


@dataclass(frozen=True)
class CameraInfo:
    camera: PinholeCamera
    distortion: np.ndarray | None  # None: a model the stages do not handle (keypoints used as they are)
    distortion_model: str
    frame_id: str = ""


def camera_info_from_msg(msg: Any) -> CameraInfo | None:
    """``sensor_msgs/CameraInfo`` → :class:`CameraInfo`; None without a usable K, or with distortion
    coefficients that are not finite or not as many as the model has."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not (np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0 and int(msg.width) > 0 and int(msg.height) > 0):
        return None
    model = str(msg.distortion_model or "plumb_bob")
    d = np.asarray(msg.d, dtype=np.float64) if model in DISTORTION_MODELS else None
    if d is not None and (d.size not in DISTORTION_SIZES or not np.all(np.isfinite(d))):
        return None  # the place stage's keypoint undistortion would fail on every keyframe
    return CameraInfo(PinholeCamera.from_K(K, int(msg.width), int(msg.height)), d, model, str(msg.header.frame_id))


@dataclass(frozen=True)
class GpsFix:
    stamp_ns: int
    latitude: float
    longitude: float
    altitude: float


def gps_from_msg(msg: Any) -> GpsFix | None:
    """``sensor_msgs/NavSatFix`` → :class:`GpsFix`; None for NO_FIX or a position that is not finite or out of
    range (latitude beyond ±90°, longitude beyond ±180°). A driver that leaves the status unset
    (STATUS_UNKNOWN in newer ROS) is trusted."""
    if int(msg.status.status) == STATUS_NO_FIX or not (abs(msg.latitude) <= 90.0 and abs(msg.longitude) <= 180.0):
        return None  # (NaN fails the comparisons too)
    return GpsFix(stamp_ns(msg.header.stamp), float(msg.latitude), float(msg.longitude), float(msg.altitude))


@dataclass(frozen=True)
class OdometryIn:
    stamp_ns: int
    frame_id: str
    child_frame_id: str
    pose: np.ndarray  # T_frame_child
    covariance: np.ndarray  # [6 x 6] in frame_id (x y z rx ry rz)


def odometry_from_msg(msg: Any) -> OdometryIn | None:
    """``nav_msgs/Odometry`` → :class:`OdometryIn`; None when the pose or its covariance is not finite."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    quat = np.array([q.x, q.y, q.z, q.w], float)
    position = np.array([p.x, p.y, p.z], float)
    cov = np.asarray(msg.pose.covariance, dtype=np.float64).reshape(6, 6)
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(quat)) and np.all(np.isfinite(cov))
            and np.linalg.norm(quat) > 0.5):
        return None
    return OdometryIn(stamp_ns(msg.header.stamp), str(msg.header.frame_id), str(msg.child_frame_id),
                      pose_to_matrix(msg.pose.pose), cov)


@dataclass(frozen=True)
class LoopClosureIn:
    query_stamp_ns: int
    match_stamp_ns: int
    verified: bool
    has_relative_pose: bool
    pose: np.ndarray | None  # T_query_match (body frames, frame_id); None when not finite
    covariance: np.ndarray  # [6 x 6] left perturbation about the query frame's axes
    metric: bool = False  # the translation is in metres
    frame_id: str = ""


@dataclass(frozen=True)
class LoopClosuresIn:
    stamp_ns: int
    frame_id: str
    candidates: list[LoopClosureIn] = field(default_factory=list)


def loop_closures_from_msg(msg: Any) -> LoopClosuresIn:
    """``deep_vision_msgs/LoopClosureArray`` → :class:`LoopClosuresIn` (a candidate's pose None when not finite)."""
    out = []
    for c in msg.candidates:
        pose = c.relative_pose.pose
        quat = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w], float)
        t = np.array([pose.position.x, pose.position.y, pose.position.z], float)
        T = None
        if np.all(np.isfinite(quat)) and np.linalg.norm(quat) > 0.5 and np.all(np.isfinite(t)):
            T = pose_to_matrix(pose)
        out.append(LoopClosureIn(stamp_ns(c.query_stamp), stamp_ns(c.match_stamp), bool(c.verified),
                                 bool(c.has_relative_pose), T,
                                 np.asarray(c.relative_pose.covariance, dtype=np.float64).reshape(6, 6),
                                 bool(c.metric_translation), str(c.frame_id)))
    return LoopClosuresIn(stamp_ns(msg.header.stamp), str(msg.header.frame_id), out)
