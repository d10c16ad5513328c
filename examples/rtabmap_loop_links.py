"""SKETCH, NOT RUN: deep_vision loop closures as RTAB-Map links.

RTAB-Map (rtabmap_ros) takes extra constraints through its ``add_link`` service
(``rtabmap_msgs/srv/AddLink``, one ``rtabmap_msgs/Link``: ``from_id``,
``to_id``, ``type``, ``transform``, ``information[36]``). Its node ids are its
own; the map it publishes (``mapData``: ``rtabmap_msgs/MapData``, one
``NodeData`` with ``id`` and ``stamp`` per node) gives stamp → id. This node
listens to both and forwards each verified ``deep_vision_msgs/LoopClosure``
between the RTAB-Map nodes nearest in time to its query and match stamps.

Not exercised: rtabmap_ros is not installable on the project's machines (no
apt ROS). Check against your rtabmap_ros version before relying on it:

- ``Link.type`` 1 is a global loop closure in RTAB-Map's ``Link::Type``.
- The transform is ``from → to`` in the robot base frame, metric. Our
  monocular loop closures give the rotation and only the *direction* of the
  translation (``metric_translation`` false): the translation below is zero
  with a small information (a loose "same place" prior). With a metric source
  (stereo, depth) use the measured translation and its covariance instead.
- Camera optical frame → base frame with the camera's mounting (``T_base_cam``).

    ros2 run deep_vision ... & python3 examples/rtabmap_loop_links.py --ros-args -p camera_pose:="[...]"
"""

from __future__ import annotations

import bisect

import numpy as np
import rclpy
from deep_vision.geometry.transforms import (
    invert_transform,
    make_transform,
    quaternion_from_rotation,
    rotation_from_quaternion,
)
from deep_vision_msgs.msg import LoopClosureArray
from rclpy.node import Node
from rtabmap_msgs.msg import Link, MapData  # rtabmap_ros
from rtabmap_msgs.srv import AddLink

GLOBAL_CLOSURE = 1
MAX_STAMP_GAP_NS = 100_000_000  # an RTAB-Map node within 0.1 s of the loop-closure stamp


class RtabmapLoopLinks(Node):
    def __init__(self) -> None:
        super().__init__("deep_vision_rtabmap_links")
        pose = self.declare_parameter("camera_pose", [0.0, 0.0, 1.65, 0.5, -0.5, 0.5, -0.5]).value
        self.T_base_cam = make_transform(rotation_from_quaternion(pose[3:]), pose[:3])
        self.translation_sigma_m = self.declare_parameter("translation_sigma_m", 3.0).value
        self.stamps: list[int] = []
        self.ids: list[int] = []
        self.create_subscription(MapData, "rtabmap/mapData", self.on_map, 10)
        self.create_subscription(LoopClosureArray, "loop_closures", self.on_loops, 10)
        self.client = self.create_client(AddLink, "rtabmap/add_link")

    def on_map(self, msg: MapData) -> None:
        for node in msg.nodes:
            stamp = node.stamp.sec * 1_000_000_000 + node.stamp.nanosec
            i = bisect.bisect_left(self.stamps, stamp)
            if i == len(self.stamps) or self.stamps[i] != stamp:
                self.stamps.insert(i, stamp)
                self.ids.insert(i, node.id)

    def node_at(self, stamp: int) -> int | None:
        i = bisect.bisect_left(self.stamps, stamp)
        best = min((j for j in (i - 1, i) if 0 <= j < len(self.stamps)),
                   key=lambda j: abs(self.stamps[j] - stamp), default=None)
        return None if best is None or abs(self.stamps[best] - stamp) > MAX_STAMP_GAP_NS else self.ids[best]

    def on_loops(self, msg: LoopClosureArray) -> None:
        for c in msg.candidates:
            if not (c.verified and c.has_relative_pose):
                continue
            a = self.node_at(c.match_stamp.sec * 1_000_000_000 + c.match_stamp.nanosec)
            b = self.node_at(c.query_stamp.sec * 1_000_000_000 + c.query_stamp.nanosec)
            if a is None or b is None or a == b:
                continue
            o = c.relative_pose.pose.orientation
            T_cam = make_transform(rotation_from_quaternion([o.x, o.y, o.z, o.w]), np.zeros(3))
            T = self.T_base_cam @ T_cam @ invert_transform(self.T_base_cam)  # match base -> query base
            cov = np.asarray(c.relative_pose.covariance, float).reshape(6, 6)
            info = np.zeros((6, 6))
            info[:3, :3] = np.eye(3) / self.translation_sigma_m**2
            info[3:, 3:] = np.linalg.inv(cov[3:, 3:] + np.eye(3) * 1e-6)
            link = Link(from_id=a, to_id=b, type=GLOBAL_CLOSURE, information=info.reshape(36).tolist())
            q = quaternion_from_rotation(T[:3, :3])
            link.transform.rotation.x, link.transform.rotation.y, link.transform.rotation.z, \
                link.transform.rotation.w = (float(v) for v in q)
            self.client.call_async(AddLink.Request(link=link))
            break  # the best verified candidate only


def main() -> None:
    rclpy.init()
    rclpy.spin(RtabmapLoopLinks())


if __name__ == "__main__":
    main()
