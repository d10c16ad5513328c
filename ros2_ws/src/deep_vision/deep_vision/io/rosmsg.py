"""Build ROS messages as rosbags objects, and our typestore.

The typestore is ROS 2 Jazzy's plus ``deep_vision_msgs`` read from the ``.msg``
files shipped in the package, so bags with our messages are written and read
without a ROS install.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from deep_vision.geometry.camera import PinholeCamera
from deep_vision.geometry.transforms import quaternion_from_rotation
from deep_vision.io.image import ImageFields

OUR_MESSAGES = ("Homography", "LoopClosure", "LoopClosureArray")


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """ROS 2 Jazzy types + ``deep_vision_msgs/msg/*``."""
    store = get_typestore(Stores.ROS2_JAZZY)
    types: dict[str, Any] = {}
    msg_dir = resources.files("deep_vision") / "msg"
    for name in OUR_MESSAGES:
        text = (msg_dir / f"{name}.msg").read_text()
        types.update(get_types_from_msg(text, f"deep_vision_msgs/msg/{name}"))
    store.register(types)
    return store


def _cls(msgtype: str) -> Any:
    return typestore().types[msgtype]


def time_msg(stamp_ns: int) -> Any:
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return _cls("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)


def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a ``builtin_interfaces/Time`` (rosbags or rclpy)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header(stamp_ns: int, frame_id: str) -> Any:
    return _cls("std_msgs/msg/Header")(stamp=time_msg(stamp_ns), frame_id=frame_id)


def image_msg(fields: ImageFields, stamp_ns: int, frame_id: str) -> Any:
    return _cls("sensor_msgs/msg/Image")(
        header=header(stamp_ns, frame_id),
        height=fields.height,
        width=fields.width,
        encoding=fields.encoding,
        is_bigendian=fields.is_bigendian,
        step=fields.step,
        data=np.asarray(fields.data, dtype=np.uint8),
    )


def camera_info_msg(camera: PinholeCamera, stamp_ns: int, frame_id: str,
                    distortion: np.ndarray | None = None) -> Any:
    """CameraInfo of a monocular camera: plumb_bob ``distortion`` [5] (k1, k2, p1, p2, k3), zero when None."""
    roi = _cls("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return _cls("sensor_msgs/msg/CameraInfo")(
        header=header(stamp_ns, frame_id),
        height=camera.height,
        width=camera.width,
        distortion_model="plumb_bob",
        d=np.zeros(5) if distortion is None else np.asarray(distortion, np.float64).reshape(5),
        k=camera.K.reshape(9),
        r=np.eye(3).reshape(9),
        p=camera.P.reshape(12),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def camera_from_info(msg: Any) -> PinholeCamera:
    """Intrinsics of a CameraInfo message (its K matrix)."""
    return PinholeCamera.from_K(np.asarray(msg.k, dtype=np.float64), int(msg.width), int(msg.height))


def _pose(T: np.ndarray) -> Any:
    q = quaternion_from_rotation(T[:3, :3])
    point = _cls("geometry_msgs/msg/Point")(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3]))
    quat = _cls("geometry_msgs/msg/Quaternion")(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))
    return _cls("geometry_msgs/msg/Pose")(position=point, orientation=quat)


def _vector3(v: np.ndarray) -> Any:
    return _cls("geometry_msgs/msg/Vector3")(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def odometry_msg(
    T_parent_child: np.ndarray,
    linear_velocity: np.ndarray,
    angular_velocity: np.ndarray,
    stamp_ns: int,
    frame_id: str,
    child_frame_id: str,
    pose_covariance: np.ndarray | None = None,
    twist_covariance: np.ndarray | None = None,
) -> Any:
    """nav_msgs/Odometry: pose of ``child`` in ``frame_id``; twist in the child frame (REP 105)."""
    pose_cov = np.zeros(36) if pose_covariance is None else np.asarray(pose_covariance, np.float64).reshape(36)
    twist_cov = np.zeros(36) if twist_covariance is None else np.asarray(twist_covariance, np.float64).reshape(36)
    twist = _cls("geometry_msgs/msg/Twist")(linear=_vector3(linear_velocity), angular=_vector3(angular_velocity))
    return _cls("nav_msgs/msg/Odometry")(
        header=header(stamp_ns, frame_id),
        child_frame_id=child_frame_id,
        pose=_cls("geometry_msgs/msg/PoseWithCovariance")(pose=_pose(T_parent_child), covariance=pose_cov),
        twist=_cls("geometry_msgs/msg/TwistWithCovariance")(twist=twist, covariance=twist_cov),
    )


def transform_stamped_msg(T_parent_child: np.ndarray, stamp_ns: int, frame_id: str, child_frame_id: str) -> Any:
    q = quaternion_from_rotation(T_parent_child[:3, :3])
    transform = _cls("geometry_msgs/msg/Transform")(
        translation=_vector3(T_parent_child[:3, 3]),
        rotation=_cls("geometry_msgs/msg/Quaternion")(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )
    return _cls("geometry_msgs/msg/TransformStamped")(
        header=header(stamp_ns, frame_id), child_frame_id=child_frame_id, transform=transform
    )


def tf_message(transforms: list[Any]) -> Any:
    return _cls("tf2_msgs/msg/TFMessage")(transforms=transforms)


def homography_msg(
    H: np.ndarray,
    stamp_ns: int,
    source_stamp_ns: int,
    frame_id: str,
    corner_uncertainty_px: float = float("nan"),
    valid: bool = True,
    image_size: tuple[int, int] = (0, 0),
) -> Any:
    """deep_vision_msgs/Homography; ``image_size`` (width, height) of the frames the matrix refers to. The
    corner covariance is diagonal, ``corner_uncertainty_px``² per corner coordinate (NaN when unknown)."""
    sigma2 = float(corner_uncertainty_px) ** 2
    return _cls("deep_vision_msgs/msg/Homography")(
        header=header(stamp_ns, frame_id),
        source_stamp=time_msg(source_stamp_ns),
        width=int(image_size[0]),
        height=int(image_size[1]),
        matrix=np.asarray(H, dtype=np.float64).reshape(9),
        corner_uncertainty_px=float(corner_uncertainty_px),
        corner_covariance=(np.eye(8) * sigma2).reshape(64) if np.isfinite(sigma2) else np.full(64, np.nan),
        valid=bool(valid),
    )


def pose_to_matrix(pose: Any) -> np.ndarray:
    """4×4 transform of a ``geometry_msgs/Pose`` (rosbags or rclpy)."""
    from deep_vision.geometry.transforms import rotation_from_quaternion

    q = pose.orientation
    T = np.eye(4)
    T[:3, :3] = rotation_from_quaternion([q.x, q.y, q.z, q.w])
    T[:3, 3] = [pose.position.x, pose.position.y, pose.position.z]
    return T


def transform_to_matrix(transform: Any) -> np.ndarray:
    """4×4 transform of a ``geometry_msgs/Transform``."""
    from deep_vision.geometry.transforms import rotation_from_quaternion

    q = transform.rotation
    T = np.eye(4)
    T[:3, :3] = rotation_from_quaternion([q.x, q.y, q.z, q.w])
    T[:3, 3] = [transform.translation.x, transform.translation.y, transform.translation.z]
    return T


def navsatfix_msg(latitude: float, longitude: float, altitude: float, stamp_ns: int, frame_id: str,
                  position_covariance: np.ndarray | None = None, covariance_type: int = 2) -> Any:
    """sensor_msgs/NavSatFix with a fix (GPS service); covariance unknown unless given (m², of type
    ``covariance_type``: 1 approximated, 2 diagonal known, 3 known)."""
    status = _cls("sensor_msgs/msg/NavSatStatus")(status=0, service=1)
    cov = np.zeros(9) if position_covariance is None else np.asarray(position_covariance, np.float64).reshape(9)
    return _cls("sensor_msgs/msg/NavSatFix")(
        header=header(stamp_ns, frame_id), status=status, latitude=float(latitude), longitude=float(longitude),
        altitude=float(altitude), position_covariance=cov,
        position_covariance_type=0 if position_covariance is None else int(covariance_type))


def loop_closure_array_msg(result: Any, candidates: Any, frame_id: str, base_frame: str = "base_link") -> Any:
    """deep_vision_msgs/LoopClosureArray of a ``QueryResult``'s ``candidates`` (those to publish, best first).
    ``frame_id``: the query image's frame; ``base_frame``: the frame of the poses."""
    msgs = []
    for c in candidates:
        v = c.verification
        has_pose = c.has_relative_pose and v.constraint is not None
        T = v.constraint if has_pose else np.eye(4)
        cov = np.asarray(v.constraint_covariance, np.float64).reshape(36) if has_pose else np.zeros(36)
        msgs.append(_cls("deep_vision_msgs/msg/LoopClosure")(
            query_stamp=time_msg(result.stamp_ns), match_stamp=time_msg(c.match_stamp_ns),
            query_id=int(result.query_id), match_id=int(c.match_id), query_session=int(result.session),
            match_session=int(c.match_session), similarity=float(c.similarity), verified=bool(c.verified),
            inliers=int(c.inliers), has_relative_pose=bool(has_pose), metric_translation=bool(has_pose and v.metric),
            frame_id=base_frame if has_pose else "",
            relative_pose=_cls("geometry_msgs/msg/PoseWithCovariance")(pose=_pose(T), covariance=cov)))
    return _cls("deep_vision_msgs/msg/LoopClosureArray")(header=header(result.stamp_ns, frame_id),
                                                          candidates=msgs)


def path_msg(stamps_ns: np.ndarray, poses: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """nav_msgs/Path: one PoseStamped per pose (``poses`` [N x 4 x 4] in ``frame_id``)."""
    pose_stamped = _cls("geometry_msgs/msg/PoseStamped")
    return _cls("nav_msgs/msg/Path")(header=header(stamp_ns, frame_id), poses=[
        pose_stamped(header=header(int(s), frame_id), pose=_pose(T)) for s, T in zip(stamps_ns, poses)])


def line_markers_msg(segments: np.ndarray, stamp_ns: int, frame_id: str, ns: str,
                     color: tuple[float, float, float, float] = (0.86, 0.12, 0.12, 1.0), width_m: float = 0.15) -> Any:
    """visualization_msgs/MarkerArray with one LINE_LIST marker: a line per segment (``segments`` [M x 2 x 3],
    metres in ``frame_id``); with no segment the marker is deleted (DELETE), so a viewer drops old lines."""
    marker_cls = _cls("visualization_msgs/msg/Marker")
    point = _cls("geometry_msgs/msg/Point")
    pts = [point(x=float(a), y=float(b), z=float(c)) for seg in np.asarray(segments, float).reshape(-1, 2, 3)
           for a, b, c in seg]
    marker = marker_cls(
        header=header(stamp_ns, frame_id), ns=ns, id=0, type=marker_cls.LINE_LIST,
        action=marker_cls.ADD if pts else marker_cls.DELETE, pose=_pose(np.eye(4)),
        scale=_cls("geometry_msgs/msg/Vector3")(x=float(width_m), y=0.0, z=0.0),
        color=_cls("std_msgs/msg/ColorRGBA")(r=color[0], g=color[1], b=color[2], a=color[3]),
        lifetime=_cls("builtin_interfaces/msg/Duration")(sec=0, nanosec=0), frame_locked=False, points=pts,
        colors=[], texture_resource="", texture=_cls("sensor_msgs/msg/CompressedImage")(
            header=header(0, ""), format="", data=np.zeros(0, np.uint8)),
        uv_coordinates=[], text="", mesh_resource="",
        mesh_file=_cls("visualization_msgs/msg/MeshFile")(filename="", data=np.zeros(0, np.uint8)),
        mesh_use_embedded_materials=False)
    return _cls("visualization_msgs/msg/MarkerArray")(markers=[marker])


class StaticTransforms:
    """The direct edges of ``/tf_static`` (``tf2_msgs/TFMessage``), looked up either way round.

    Used by bag readers, by the evaluation (a bag's ``/tf_static``) and by the nodes where tf2_ros is not
    installed; tf2_ros, where present, also follows chains of frames.
    """

    def __init__(self) -> None:
        self.edges: dict[tuple[str, str], np.ndarray] = {}

    def add(self, msg: Any) -> None:
        for tf in msg.transforms:
            self.edges[(str(tf.header.frame_id), str(tf.child_frame_id))] = transform_to_matrix(tf.transform)

    def lookup(self, parent: str, child: str) -> np.ndarray | None:
        """T_parent_child, or None."""
        from deep_vision.geometry.transforms import invert_transform

        if (parent, child) in self.edges:
            return self.edges[(parent, child)]
        if (child, parent) in self.edges:
            return invert_transform(self.edges[(child, parent)])
        return None
