"""rosbag2 (sqlite3 or mcap) writing and lazy frame reading on the ``rosbags`` library.

No ROS install is needed. Topic names default to the layout every deep_vision
bag uses (synthetic world, KITTI, KITTI raw and RobotCar converters):

==========================  ==========================  =============================
topic                       type                        content
==========================  ==========================  =============================
``/camera/image_raw``       sensor_msgs/Image           camera frames
``/camera/camera_info``     sensor_msgs/CameraInfo      intrinsics, one per frame
``/ground_truth/odometry``  nav_msgs/Odometry           base_link pose in ``map``
``/tf_static``              tf2_msgs/TFMessage          base_link → camera frame
==========================  ==========================  =============================
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import (
    CompressionFormat,
    CompressionMode,
    StoragePlugin,
    Writer,
)

from deep_vision.errors import BagError, ImageEncodingError
from deep_vision.geometry.camera import PinholeCamera
from deep_vision.geometry.transforms import invert_transform
from deep_vision.io import rosmsg
from deep_vision.io.image import image_to_numpy, numpy_to_image_fields
from deep_vision.io.bagfile import BagReader, add_chunk_crcs
from deep_vision.io.rosmsg import (
    StaticTransforms,
    camera_from_info,
    pose_to_matrix,
    stamp_to_ns,
    typestore,
)

logger = logging.getLogger(__name__)

IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
GROUND_TRUTH_TOPIC = "/ground_truth/odometry"
TF_STATIC_TOPIC = "/tf_static"
GPS_TOPIC = "/gps/fix"

_ZERO = QosTime(sec=0, nsec=0)
_INFINITE = QosTime(sec=2147483647, nsec=4294967295)


def _qos(durability: QosDurability, reliability: QosReliability = QosReliability.RELIABLE, depth: int = 10) -> Qos:
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=reliability,
        durability=durability,
        deadline=_INFINITE,
        lifespan=_INFINITE,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=_INFINITE,
        avoid_ros_namespace_conventions=False,
    )


# What publishers of these topics offer, recorded so that `ros2 bag play`
# republishes /tf_static latched (transient local), as a robot would.
QOS_DEFAULT = _qos(QosDurability.VOLATILE)
QOS_LATCHED = _qos(QosDurability.TRANSIENT_LOCAL, depth=1)
QOS_SENSOR = _qos(QosDurability.VOLATILE, QosReliability.BEST_EFFORT, depth=5)


class BagWriter:
    """Write messages (rosbags objects) to a new rosbag2 folder.

    Example::

        with BagWriter(out, storage="mcap") as bag:
            bag.write("/camera/image_raw", "sensor_msgs/msg/Image", stamp_ns, msg)
    """

    def __init__(self, path: str | Path, storage: str = "mcap", compress: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"bag output already exists: {self.path} (remove it or choose another --out)")
        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise BagError(f"unknown bag storage {storage!r}; choose one of {', '.join(plugins)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = Writer(self.path, version=8, storage_plugin=plugins[storage])
        if compress:
            self._writer.set_compression(CompressionMode.MESSAGE if storage == "sqlite3" else CompressionMode.FILE,
                                         CompressionFormat.ZSTD)
        self._connections: dict[str, Any] = {}
        self._store = typestore()
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()
        # rosbags leaves the chunk CRCs at 0 ("not computed"): write them, so readers can find damaged chunks.
        for file in ([self.path] if self.path.is_file() else sorted(self.path.glob("*.mcap"))):
            add_chunk_crcs(file)

    def add_topic(self, topic: str, msgtype: str, qos: Qos = QOS_DEFAULT) -> None:
        if topic in self._connections:
            return
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self._store, offered_qos_profiles=[qos]
        )
        self.counts[topic] = 0

    def write(self, topic: str, msgtype: str, stamp_ns: int, msg: Any, qos: Qos = QOS_DEFAULT) -> None:
        """Serialize ``msg`` (a rosbags message of ``msgtype``) and record it at ``stamp_ns``."""
        if topic not in self._connections:
            self.add_topic(topic, msgtype, qos)
        data = self._store.serialize_cdr(msg, msgtype)
        self._writer.write(self._connections[topic], int(stamp_ns), data)
        self.counts[topic] += 1

    def write_raw(self, topic: str, msgtype: str, stamp_ns: int, data: bytes, qos: Qos | None = None) -> None:
        """Record an already serialised (CDR) message of ``msgtype`` at ``stamp_ns``."""
        if topic not in self._connections:
            self.add_topic(topic, msgtype, qos or QOS_DEFAULT)
        self._writer.write(self._connections[topic], int(stamp_ns), bytes(data))
        self.counts[topic] += 1

    # The topics every deep_vision bag has (synthetic recordings and dataset converters alike).
    def write_static_transform(self, T_parent_child: np.ndarray, stamp_ns: int, parent: str, child: str) -> None:
        """``/tf_static`` (latched) with one transform."""
        tf = rosmsg.transform_stamped_msg(T_parent_child, int(stamp_ns), parent, child)
        self.write(TF_STATIC_TOPIC, "tf2_msgs/msg/TFMessage", int(stamp_ns), rosmsg.tf_message([tf]), qos=QOS_LATCHED)

    def write_camera_frame(self, stamp_ns: int, image: np.ndarray, encoding: str, camera: PinholeCamera,
                           frame_id: str, distortion: np.ndarray | None = None) -> None:
        """The image on ``/camera/image_raw`` and its ``/camera/camera_info`` (plumb_bob ``distortion``, zero when
        None), both stamped ``stamp_ns``."""
        fields = numpy_to_image_fields(image, encoding)
        self.write(IMAGE_TOPIC, "sensor_msgs/msg/Image", stamp_ns, rosmsg.image_msg(fields, stamp_ns, frame_id),
                   qos=QOS_SENSOR)
        self.write(CAMERA_INFO_TOPIC, "sensor_msgs/msg/CameraInfo", stamp_ns,
                   rosmsg.camera_info_msg(camera, stamp_ns, frame_id, distortion), qos=QOS_SENSOR)

    def write_ground_truth(self, stamp_ns: int, T_map_base: np.ndarray, linear: np.ndarray, angular: np.ndarray,
                           frame_id: str = "map", child_frame_id: str = "base_link") -> None:
        """``/ground_truth/odometry``: base_link's pose in ``map``, its twist in base_link."""
        self.write(GROUND_TRUTH_TOPIC, "nav_msgs/msg/Odometry", stamp_ns,
                   rosmsg.odometry_msg(T_map_base, linear, angular, stamp_ns, frame_id, child_frame_id))


@dataclass
class Frame:
    """One camera frame read from a bag."""

    index: int
    stamp_ns: int
    image: np.ndarray  # decoded pixels, [H x W] or [H x W x C], native byte order
    encoding: str
    frame_id: str
    camera: PinholeCamera | None  # intrinsics from the latest CameraInfo at or before this frame
    gt_pose: np.ndarray | None  # [4 x 4] ground-truth base_link pose (T_map_base) at this stamp


class BagSequence:
    """Lazy access to the camera frames and ground truth of a rosbag2 folder.

    Small topics (camera info, ground truth, tf_static) are read at open; images
    are decoded one at a time while iterating. A message that does not decode
    (bad encoding, truncated data) is logged, counted in ``bad_frames`` and
    skipped.
    """

    def __init__(
        self,
        path: str | Path,
        image_topic: str = IMAGE_TOPIC,
        camera_info_topic: str = CAMERA_INFO_TOPIC,
        ground_truth_topic: str = GROUND_TRUTH_TOPIC,
    ) -> None:
        self.reader = BagReader(path)  # checked: one BagError line for a missing, empty, truncated, ... bag
        self.path = self.reader.path
        self.image_topic = image_topic
        self.camera_info_topic = camera_info_topic
        self.ground_truth_topic = ground_truth_topic
        self._store = typestore()
        self.bad_frames = 0
        self.undecodable: dict[str, int] = {}  # topic -> messages whose bytes do not deserialise
        self.topics = self.reader.topics
        self.message_counts = self.reader.message_counts
        if image_topic not in self.topics:
            raise BagError(f"{self.path}: no topic {image_topic!r}; topics: {', '.join(sorted(self.topics)) or 'none'}")
        self._camera_infos = self._read_all(camera_info_topic, lambda m: camera_from_info(m))
        self._gt = self._read_all(ground_truth_topic, lambda m: pose_to_matrix(m.pose.pose))
        self.static_transforms = StaticTransforms()
        for _, _, msg in self.messages([TF_STATIC_TOPIC]):
            self.static_transforms.add(msg)

    @property
    def damaged_messages(self) -> int:
        """Messages lost to damage: in chunks whose CRC failed, or whose bytes do not deserialise."""
        return self.reader.damaged_messages + sum(self.undecodable.values())

    def _read_all(self, topic: str, convert: Any) -> tuple[np.ndarray, list[Any]]:
        stamps: list[int] = []
        values: list[Any] = []
        for _, _, msg in self.messages([topic]):
            stamps.append(stamp_to_ns(msg.header.stamp))
            values.append(convert(msg))
        order = np.argsort(np.asarray(stamps, dtype=np.int64), kind="stable")
        return np.asarray(stamps, dtype=np.int64)[order], [values[i] for i in order]

    def __len__(self) -> int:
        return self.message_counts[self.image_topic]

    @property
    def camera(self) -> PinholeCamera | None:
        """Intrinsics of the first CameraInfo, or None without camera info."""
        return self._camera_infos[1][0] if self._camera_infos[1] else None

    @property
    def ground_truth(self) -> tuple[np.ndarray, np.ndarray]:
        """All ground-truth poses: ([N] stamps in ns, [N x 4 x 4] T_map_base)."""
        stamps, poses = self._gt
        return stamps, (np.stack(poses) if poses else np.zeros((0, 4, 4)))

    def ground_truth_at(self, stamp_ns: int, tolerance_ns: int = 1_000_000) -> np.ndarray | None:
        """Ground-truth pose with a stamp within ``tolerance_ns`` of ``stamp_ns``, else None."""
        stamps, poses = self._gt
        if len(stamps) == 0:
            return None
        i = int(np.searchsorted(stamps, stamp_ns))
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(stamps) and abs(int(stamps[j]) - stamp_ns) <= tolerance_ns:
                if best is None or abs(int(stamps[j]) - stamp_ns) < abs(int(stamps[best]) - stamp_ns):
                    best = j
        return None if best is None else poses[best]

    def camera_at(self, stamp_ns: int) -> PinholeCamera | None:
        stamps, cams = self._camera_infos
        if len(stamps) == 0:
            return None
        i = int(np.searchsorted(stamps, stamp_ns, side="right")) - 1
        return cams[max(i, 0)]

    def extrinsic(self, camera_frame: str, base_frame: str = "base_link") -> np.ndarray | None:
        """T_base_camera from /tf_static (a direct edge, either direction), or None."""
        return self.static_transforms.lookup(base_frame, camera_frame)

    def camera_poses_kitti(self, camera_frame: str) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth camera poses in the KITTI convention (camera i in camera 0's frame).

        Returns ([N] stamps, [N x 4 x 4] T_cam0_cami), using the /tf_static extrinsic.
        """
        T_base_cam = self.extrinsic(camera_frame)
        if T_base_cam is None:
            raise BagError(f"{self.path}: no base_link -> {camera_frame} transform on {TF_STATIC_TOPIC}")
        stamps, T_map_base = self.ground_truth
        if len(stamps) == 0:
            raise BagError(f"{self.path}: no ground truth on {self.ground_truth_topic}")
        T_map_cam = T_map_base @ T_base_cam
        return stamps, invert_transform(T_map_cam[0]) @ T_map_cam

    def messages(self, topics: Sequence[str] | None = None) -> Iterator[tuple[str, int, Any]]:
        """Yield (topic, log time in ns, deserialized rosbags message) in log order; messages of damaged chunks
        and messages whose bytes do not deserialise are skipped and counted (``damaged_messages``)."""
        for topic, msgtype, t, raw in self.reader.messages(topics):
            try:
                msg = self._store.deserialize_cdr(raw, msgtype)
            except Exception as exc:  # noqa: BLE001 - rosbags raises several types for bad CDR
                self.undecodable[topic] = self.undecodable.get(topic, 0) + 1
                if self.undecodable[topic] == 1:
                    logger.warning("%s: a %s message on %s at %d ns does not deserialise (%s: %s): skipped (counted)",
                                   self.path, msgtype, topic, t, type(exc).__name__, exc)
                continue
            yield topic, t, msg

    def frames(self, start: int = 0, stop: int | None = None, stride: int = 1) -> Iterator[Frame]:
        """Decode camera frames lazily, in log order (indices count every image message)."""
        for index, (_, _, msg) in enumerate(self.messages([self.image_topic])):
            if index < start or (index - start) % stride:
                continue
            if stop is not None and index >= stop:
                break
            stamp = stamp_to_ns(msg.header.stamp)
            try:
                image = image_to_numpy(msg)
            except ImageEncodingError as exc:
                self.bad_frames += 1
                logger.warning("%s: skipping frame %d at %d ns: %s", self.path, index, stamp, exc)
                continue
            yield Frame(
                index=index,
                stamp_ns=stamp,
                image=image,
                encoding=str(msg.encoding),
                frame_id=str(msg.header.frame_id),
                camera=self.camera_at(stamp),
                gt_pose=self.ground_truth_at(stamp),
            )

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()
