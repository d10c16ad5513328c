"""``odometry_node``: monocular visual odometry as ``nav_msgs/Odometry`` and ``odom → base_link``.

Subscribes ``image`` (+ ``camera_info``: intrinsics for the hybrid mode);
publishes ``odometry`` (header.frame_id ``odom``, child_frame_id ``base_link``,
stamp = image stamp, pose and its covariance in ``odom``, twist in
``base_link``) and, when ``publish_tf`` is on, the ``odom → base_link``
transform on ``/tf``. The camera's pose on the robot comes from ``/tf_static``
(``base_frame → <image frame>``, when ``use_tf_static`` is on) or from the
``camera_pose`` parameter (``common.CameraPose``). All per-stream work is
:class:`~deep_vision.stages.OdometryStage`'s (the ``odom`` frame is
``base_link`` at the first frame, REP 105; a time jump backwards or a
resolution change starts a new trajectory); undecodable images are counted
and skipped.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from deep_vision.errors import ConfigError, ImageEncodingError
from deep_vision.nodes.common import (
    CameraPose,
    ImageNode,
    NodeDiagnostics,
    Outputs,
    backend_diagnostics,
    declare,
    frame_queue,
    image_qos,
    observe,
    spin_node,
    subscribe,
)
from deep_vision.params import SCHEMA
from deep_vision.stages import OdometryStage
from deep_vision.stages.inputs import camera_info_from_msg, frame_from_msg
from deep_vision.stages.messages import ODOMETRY, TF, odometry_msgs

PARAMS = SCHEMA["odometry_node"]


class OdometryNode(ImageNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("odometry_node", **kwargs)
        p = declare(self, PARAMS)
        self.publish_tf = p["publish_tf"]
        self.camera_pose = CameraPose(self, p)
        self.stage = OdometryStage.from_params(p)  # raises ConfigError naming the parameter
        self.out = Outputs(self, {"odometry": ODOMETRY, **({"/tf": TF} if self.publish_tf else {})})
        self.diag = NodeDiagnostics(self, "visual odometry", {**backend_diagnostics(self.stage.backend),
                                                              "mode": p["mode"], "tf": self.out.tf}, stage=self.stage)
        qos = image_qos(p["image_qos"], p["queue_depth"])
        self.frames = frame_queue(self, self.on_image, p["queue_depth"], self.diag)
        self.sub = subscribe(self, "sensor_msgs/msg/Image", "image", self.frames.push, qos)
        self.info_sub = subscribe(self, "sensor_msgs/msg/CameraInfo", "camera_info", self.on_camera_info, qos)

    def on_camera_info(self, msg: Any) -> None:
        if self.stage.set_camera_info(camera_info_from_msg(msg)):
            self.get_logger().info("camera_info received: hybrid mode on")

    def on_image(self, msg: Any) -> None:
        t0 = time.perf_counter()
        try:
            frame = frame_from_msg(msg)
        except ImageEncodingError as exc:
            self.diag.bad("image")
            self.get_logger().warning(f"image skipped: {exc}", throttle_duration_sec=5.0)
            return
        if self.camera_pose.update(frame.frame_id):
            try:
                self.stage.set_camera_pose(self.camera_pose.T)
            except ConfigError as exc:  # /tf_static puts the camera at or below base_link: keep the last mounting
                self.get_logger().error(f"ground plane scale: {exc}; keeping the last camera pose")
        out = self.stage.process(frame)
        self.out.publish(odometry_msgs(out, self.publish_tf))
        observe(self, "vo", frame.stamp_ns, frame, out, t0)
        now = self.get_clock().now().nanoseconds
        self.diag.processed((time.perf_counter() - t0) * 1e3, (now - frame.stamp_ns) / 1e6 if now else None)


def main(args: list[str] | None = None) -> int:
    return spin_node(OdometryNode, "odometry_node", args)


if __name__ == "__main__":
    sys.exit(main())
