"""``pose_graph_node``: keyframe pose graph over visual odometry and verified loop closures.

Subscribes ``odometry`` (nav_msgs/Odometry as ``odometry_node`` publishes it:
``odom → base_link``, pose covariance in ``odom``) and ``loop_closures``
(deep_vision_msgs/LoopClosureArray from ``place_recognition_node``). Verified
candidates with a metric relative pose between ``base_frame`` frames become
between factors of :class:`~deep_vision.estimators.pose_graph.PoseGraph` with
the message's covariance, nothing else: any back end could take them the same way.
Publishes ``path`` (nav_msgs/Path of the optimised keyframe poses in
``map_frame``) after each new keyframe or accepted loop, the ``map → odom``
correction on ``/tf`` with every odometry message (``publish_tf``), and
``/diagnostics``. All the work is :class:`~deep_vision.stages.PoseGraphStage`'s
(pending loop closures, new trajectories and time jumps, non-finite inputs):
see :mod:`deep_vision.stages.pose_graph`.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rclpy.node import Node

from deep_vision.nodes.common import (
    NodeDiagnostics,
    Outputs,
    backend_diagnostics,
    declare,
    image_qos,
    observe,
    spin_node,
    subscribe,
)
from deep_vision.params import SCHEMA
from deep_vision.stages import PoseGraphStage
from deep_vision.stages.inputs import loop_closures_from_msg, odometry_from_msg
from deep_vision.stages.messages import MARKER_ARRAY, PATH, TF, pose_graph_msgs

PARAMS = SCHEMA["pose_graph_node"]


class PoseGraphNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("pose_graph_node", **kwargs)
        p = declare(self, PARAMS)
        self.publish_tf = p["publish_tf"]
        self.markers = bool(p["publish_markers"])
        self.stage = PoseGraphStage.from_params(p)  # raises ConfigError naming the node
        self.out = Outputs(self, {"path": PATH, **({"loop_closure_markers": MARKER_ARRAY} if self.markers else {}),
                                  **({"/tf": TF} if self.publish_tf else {})})
        self.diag = NodeDiagnostics(self, "pose graph", {
            **backend_diagnostics(None), "solver": "gtsam isam2", "loop_kernel": p["loop_kernel"],
            "tf": self.out.tf}, stage=self.stage)
        qos = image_qos(p["input_qos"], p["queue_depth"])
        self.odom_sub = subscribe(self, "nav_msgs/msg/Odometry", "odometry", self.on_odometry, qos)
        self.loop_sub = subscribe(self, "deep_vision_msgs/msg/LoopClosureArray", "loop_closures",
                                  self.on_loop_closures, qos)
        self.get_logger().info(f"pose graph: keyframes every {p['keyframe_distance_m']} m / "
                               f"{p['keyframe_angle_deg']} deg, metric loop closures between "
                               f"{p['base_frame']} frames")

    def on_odometry(self, msg: Any) -> None:
        self.diag.frame_in()
        t0 = time.perf_counter()
        update = self.stage.add_odometry(odometry_from_msg(msg))
        if update is None:
            return
        self.out.publish(pose_graph_msgs(update, self.publish_tf, self.markers))
        observe(self, "pose_graph", update.stamp_ns, None, update, t0)
        self.diag.processed((time.perf_counter() - t0) * 1e3)

    def on_loop_closures(self, msg: Any) -> None:
        t0 = time.perf_counter()
        update = self.stage.add_loop_closures(loop_closures_from_msg(msg))
        if update is not None:
            self.out.publish(pose_graph_msgs(update, self.publish_tf, self.markers))
            observe(self, "pose_graph", update.stamp_ns, None, update, t0)


def main(args: list[str] | None = None) -> int:
    return spin_node(PoseGraphNode, "pose_graph_node", args)


if __name__ == "__main__":
    sys.exit(main())
