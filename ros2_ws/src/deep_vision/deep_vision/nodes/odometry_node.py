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
    CAMERA_POSE_PARAMS,
    INFERENCE_PARAMS,
    QOS_PARAMS,
    CameraPose,
    ImageNode,
    NodeDiagnostics,
    Outputs,
    Param,
    backend_diagnostics,
    declare,
    frame_queue,
    image_qos,
    spin_node,
    subscribe,
)
from deep_vision.stages import OdometryStage
from deep_vision.stages.inputs import camera_info_from_msg, frame_from_msg
from deep_vision.stages.messages import ODOMETRY, TF, odometry_msgs

PARAMS = [
    Param("model_path", "", "DeepVO model (.onnx with its model card, or a .pt checkpoint); empty: the shipped "
          "models/vo.onnx."),
    *INFERENCE_PARAMS,
    Param("mode", "network", "network: the network's 6-DoF motion; hybrid: rotation and direction from the "
          "essential matrix of tracked points (needs camera_info), step length from the network.",
          choices=("network", "hybrid")),
    Param("geometry", "dense_flow", "Hybrid mode's correspondences: dense_flow (DIS optical flow checked both ways, "
          "one point per grid cell, refined at full resolution) or features (Shi-Tomasi corners + Lucas-Kanade).",
          choices=("dense_flow", "features")),
    Param("track_width", 400, "Hybrid mode: image width at which points are tracked (pixels; wider frames are "
          "downscaled; dense_flow refines its points at full resolution).", range=(64, 8192)),
    Param("refine_geometry", True, "Hybrid mode: refine RANSAC's rotation and direction on its inliers "
          "(Sampson distance, damped Gauss-Newton; about 3 ms per frame)."),
    Param("prior_window", 20, "Hybrid mode: frames over which the network's rotations must agree with the "
          "essential matrix's before its steps are used as a prior.", range=(1, 10000)),
    Param("prior_max_disagreement_deg", 0.0, "Hybrid mode: median rotation disagreement (degrees) over "
          "prior_window under which the network is trusted as a prior; 0 switches the prior off.",
          range=(0.0, 180.0)),
    Param("scale_source", "network", "Step length: network (learned metres) or ground (hybrid mode: the ground "
          "plane under the camera, triangulated from the tracked points, and the camera's known height above it).",
          choices=("network", "ground")),
    Param("camera_height_m", 0.0, "scale_source ground: camera height above the ground (m); 0: the camera's "
          "height above base_frame (camera_pose or /tf_static; base_frame on the ground).", range=(0.0, 100.0)),
    Param("scale_window", 1, "scale_source ground: the speed is the median of this many frames' estimates (a "
          "frame without one keeps it; none in the window: the network's length).", range=(1, 1000)),
    Param("odom_frame", "odom", "Frame of the published pose (REP 105)."),
    Param("base_frame", "base_link", "Robot body frame (child frame of the odometry)."),
    Param("publish_tf", True, "Publish odom -> base_link on /tf (tf2_msgs/TFMessage)."),
    *CAMERA_POSE_PARAMS,
    Param("trans_noise_rel", 0.03, "Translation noise per step, fraction of the step length.", range=(0.0, 10.0)),
    Param("trans_noise_abs", 0.01, "Translation noise per step, metres.", range=(0.0, 10.0)),
    Param("rot_noise_rel", 0.05, "Rotation noise per step, fraction of the step angle.", range=(0.0, 10.0)),
    Param("rot_noise_abs", 0.002, "Rotation noise per step, radians.", range=(0.0, 10.0)),
    *QOS_PARAMS,
]


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
        self.out.publish(odometry_msgs(self.stage.process(frame), self.publish_tf))
        now = self.get_clock().now().nanoseconds
        self.diag.processed((time.perf_counter() - t0) * 1e3, (now - frame.stamp_ns) / 1e6 if now else None)


def main(args: list[str] | None = None) -> int:
    return spin_node(OdometryNode, "odometry_node", args)


if __name__ == "__main__":
    sys.exit(main())
