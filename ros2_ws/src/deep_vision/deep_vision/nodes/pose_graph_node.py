"""``pose_graph_node``: keyframe pose graph over visual odometry and verified loop closures.

Subscribes ``odometry`` (nav_msgs/Odometry as ``odometry_node`` publishes it:
``odom → base_link``, pose covariance in ``odom``) and ``loop_closures``
(deep_vision_msgs/LoopClosureArray from ``place_recognition_node``). Verified
candidates with a relative pose go to
:class:`~deep_vision.estimators.pose_graph.PoseGraph`, which does all the work.
Publishes ``path`` (nav_msgs/Path of the optimised keyframe poses in
``map_frame``) after each new keyframe or accepted loop, the ``map → odom``
correction on ``/tf`` with every odometry message (``publish_tf``), and
``/diagnostics``. All the work is :class:`~deep_vision.stages.PoseGraphStage`'s
(pending loop closures, new trajectories and time jumps, the camera's pose on
the robot, non-finite inputs): see :mod:`deep_vision.stages.pose_graph`. The
camera's pose comes from ``/tf_static`` (``base_frame → camera_frame``, or the
loop closures' frame when ``camera_frame`` is empty) or the ``camera_pose``
parameter, as in ``odometry_node``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rclpy.node import Node

from deep_vision.nodes.common import (
    CAMERA_POSE_PARAMS,
    CameraPose,
    NodeDiagnostics,
    Outputs,
    Param,
    backend_diagnostics,
    declare,
    image_qos,
    spin_node,
    subscribe,
)
from deep_vision.stages import PoseGraphStage
from deep_vision.stages.inputs import loop_closures_from_msg, odometry_from_msg
from deep_vision.stages.messages import PATH, TF, pose_graph_msgs

PARAMS = [
    Param("keyframe_distance_m", 2.0, "A keyframe after travelling this far (0: off).", range=(0.0, 1000.0)),
    Param("keyframe_angle_deg", 10.0, "... or after turning this far (0: off).", range=(0.0, 180.0)),
    Param("loop_max_distance_m", 10.0, "Largest plausible distance between the two cameras of a loop closure.",
          range=(0.1, 1000.0)),
    Param("loop_max_rotation_deg", 10.0, "A loop closure whose rotation disagrees with the current estimate by more "
          "than this (or 3 sigma of the odometry's rotation drift between its keyframes, if larger) is rejected.", range=(0.0, 180.0)),
    Param("loop_max_chi2", 22.46, "A loop closure whose chi2 after optimisation exceeds this is removed again "
          "(default: 99.9 % of chi2 with 6 degrees of freedom).", range=(0.0, 1e6)),
    Param("loop_kernel", "huber", "Robust kernel of loop-closure factors.", choices=("huber", "cauchy", "none")),
    Param("map_frame", "map", "Frame of the optimised path and parent of the published map -> odom."),
    Param("odom_frame", "odom", "Frame of the odometry (child of map -> odom)."),
    Param("base_frame", "base_link", "Robot body frame (child frame of the odometry)."),
    Param("camera_frame", "", "Camera optical frame of the loop closures, looked up in /tf_static (empty: the loop "
          "closures' header frame)."),
    *CAMERA_POSE_PARAMS,
    Param("publish_tf", True, "Publish map -> odom on /tf (tf2_msgs/TFMessage)."),
    Param("loops_per_keyframe", 1, "Verified loop closures taken from one LoopClosureArray, best first (0: all).",
          range=(0, 100)),
    Param("pending_loops", 50, "Loop closures kept while their query frame has no odometry yet.", range=(0, 10000)),
    Param("pending_timeout_s", 5.0, "A waiting loop closure is dropped when the newest stamp is this much later "
          "(message time).", range=(0.0, 3600.0)),
    Param("input_qos", "reliable", "QoS of the odometry and loop-closure subscriptions: reliable (what the nodes "
          "publish; nothing is lost) or sensor_data (best effort).", choices=("reliable", "sensor_data")),
    Param("queue_depth", 100, "Depth of the odometry and loop-closure subscription queues.", range=(1, 10000)),
]


class PoseGraphNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("pose_graph_node", **kwargs)
        p = declare(self, PARAMS)
        self.publish_tf = p["publish_tf"]
        self.camera_pose = CameraPose(self, p)
        self.stage = PoseGraphStage.from_params(p)  # raises ConfigError naming the node
        self.out = Outputs(self, {"path": PATH, **({"/tf": TF} if self.publish_tf else {})})
        self.diag = NodeDiagnostics(self, "pose graph", {
            **backend_diagnostics(None), "solver": "gtsam isam2", "loop_kernel": p["loop_kernel"],
            "tf": self.out.tf}, stage=self.stage)
        qos = image_qos(p["input_qos"], p["queue_depth"])
        self.odom_sub = subscribe(self, "nav_msgs/msg/Odometry", "odometry", self.on_odometry, qos)
        self.loop_sub = subscribe(self, "deep_vision_msgs/msg/LoopClosureArray", "loop_closures",
                                  self.on_loop_closures, qos)
        self.get_logger().info(f"pose graph: keyframes every {p['keyframe_distance_m']} m / "
                               f"{p['keyframe_angle_deg']} deg, camera pose from {self.camera_pose.source}, "
                               "else the parameter 'camera_pose'")

    def on_odometry(self, msg: Any) -> None:
        self.diag.frame_in()
        t0 = time.perf_counter()
        update = self.stage.add_odometry(odometry_from_msg(msg))
        if update is None:
            return
        self.out.publish(pose_graph_msgs(update, self.publish_tf))
        self.diag.processed((time.perf_counter() - t0) * 1e3)

    def on_loop_closures(self, msg: Any) -> None:
        loops = loop_closures_from_msg(msg)
        if self.camera_pose.update(self.stage.camera_frame(loops)):
            self.stage.set_camera_pose(self.camera_pose.T)
        update = self.stage.add_loop_closures(loops)
        if update is not None:
            self.out.publish(pose_graph_msgs(update, self.publish_tf))


def main(args: list[str] | None = None) -> int:
    return spin_node(PoseGraphNode, "pose_graph_node", args)


if __name__ == "__main__":
    sys.exit(main())
