"""SKETCH, NOT RUN: deep_vision loop closures as RTAB-Map links (docs/slam_backends.md).

RTAB-Map (rtabmap_ros) takes extra constraints through its ``add_link`` service
(``rtabmap_msgs/srv/AddLink``, one ``rtabmap_msgs/Link``: ``from_id``,
``to_id``, ``type``, ``transform``, ``information[36]``). Its node ids are its
own; the map it publishes (``mapData``: ``rtabmap_msgs/MapData``, one
``NodeData`` with ``id`` and ``stamp`` per node) gives stamp -> id. This node
listens to both and forwards each verified metric ``deep_vision_msgs/LoopClosure``
between the RTAB-Map nodes nearest in time to its query and match stamps.

Not exercised: rtabmap_ros is not installable on the project's machines (no
apt ROS). Check against your rtabmap_ros version before relying on it:

- ``Link.type`` 1 is a global loop closure in RTAB-Map's ``Link::Type``.
- The transform is ``from -> to`` in the robot base frame, metric: the message's
  ``T_query_match`` between ``base_link`` frames, as it is.
- The information is the inverse of the covariance as a right perturbation in
  (x y z roll pitch yaw) order; the message's is a left one (about the query
  axes), moved across with the adjoint.
- Both nodes must be RTAB-Map nodes at (near) the two stamps; a link between
  nodes up to ``MAX_STAMP_GAP_NS`` from them ignores the motion in that gap.

    ros2 launch deep_vision perception.launch.py & python3 examples/rtabmap_loop_links.py
"""

from __future__ import annotations

import bisect

import numpy as np
import rclpy
from deep_vision.geometry.transforms import adjoint, invert_transform, make_transform, rotation_from_quaternion
from deep_vision_msgs.msg import LoopClosureArray
from rclpy.node import Node
from rtabmap_msgs.msg import Link, MapData  # rtabmap_ros
from rtabmap_msgs.srv import AddLink

GLOBAL_CLOSURE = 1
MAX_STAMP_GAP_NS = 100_000_000  # an RTAB-Map node within 0.1 s of the loop-closure stamp


class RtabmapLoopLinks(Node):
    def __init__(self) -> None:
        super().__init__("deep_vision_rtabmap_links")
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
        for c in msg.candidates:  # best first
            if not (c.verified and c.has_relative_pose and c.metric_translation and c.frame_id == "base_link"):
                continue
            a = self.node_at(c.query_stamp.sec * 1_000_000_000 + c.query_stamp.nanosec)
            b = self.node_at(c.match_stamp.sec * 1_000_000_000 + c.match_stamp.nanosec)
            if a is None or b is None or a == b:
                continue
            p = c.relative_pose.pose
            T = make_transform(rotation_from_quaternion([p.orientation.x, p.orientation.y, p.orientation.z,
                                                         p.orientation.w]), [p.position.x, p.position.y, p.position.z])
            A = adjoint(invert_transform(T))  # left (query axes) -> right perturbation
            cov = A @ np.asarray(c.relative_pose.covariance, float).reshape(6, 6) @ A.T
            link = Link(from_id=a, to_id=b, type=GLOBAL_CLOSURE, information=np.linalg.inv(cov).reshape(36).tolist())
            link.transform.translation.x, link.transform.translation.y, link.transform.translation.z = \
                p.position.x, p.position.y, p.position.z
            link.transform.rotation = p.orientation
            self.client.call_async(AddLink.Request(link=link))
            break  # the best verified candidate only


def main() -> None:
    rclpy.init()
    rclpy.spin(RtabmapLoopLinks())


if __name__ == "__main__":
    main()
