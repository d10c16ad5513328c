"""``odometry_node``: monocular visual odometry as ``nav_msgs/Odometry`` and ``odom → base_link``.

Subscribes ``image`` (+ ``camera_info``: intrinsics for the hybrid mode);
publishes ``odometry`` (header.frame_id ``odom``, child_frame_id ``base_link``,
stamp = image stamp, pose and its covariance in ``odom``, twist in
``base_link``) and, when ``publish_tf`` is on, the ``odom → base_link``
transform on ``/tf`` (tf2_ros, else a plain tf2_msgs publisher). The camera's
pose on the robot comes from ``/tf_static`` (``base_link → <image frame>``,
when tf2_ros is available and ``use_tf_static`` is on) or from the
``camera_pose`` parameter (both through ``common.CameraPose``). The ``odom``
frame is ``base_link`` at the first frame (REP 105). A time jump backwards or
a resolution change starts a new trajectory from the identity; undecodable
images are counted and skipped.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image

from deep_vision.errors import ConfigError, ImageEncodingError
from deep_vision.geometry.camera import PinholeCamera
from deep_vision.geometry.transforms import (
    adjoint,
    invert_transform,
    quaternion_from_rotation,
)
from deep_vision.io.image import message_to_mono8
from deep_vision.nodes.common import (
    CAMERA_POSE_PARAMS,
    INFERENCE_PARAMS,
    QOS_PARAMS,
    CameraPose,
    FrameQueue,
    ImageNode,
    NodeDiagnostics,
    Param,
    TransformOutput,
    backend_diagnostics,
    declare,
    image_qos,
    spin_node,
    stamp_ns,
)
from deep_vision.pipeline.build import (
    build_odometry,
    ground_scale_from_params,
    scale_settings,
)

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
    Param("publish_tf", True, "Broadcast odom -> base_link on /tf (tf2_ros, else tf2_msgs)."),
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
        self.params = p
        self.camera_pose = CameraPose(self, p)
        # Hybrid mode needs the intrinsics: it starts in network mode (network scale) and switches at the first
        # camera_info. Both raise ConfigError naming the parameter.
        self.scale_source, ground, _ = scale_settings(p, self.camera_pose.T)
        self.vo = build_odometry({**p, "mode": "network", "scale_source": "network"})
        self.want_hybrid = p["mode"] == "hybrid"
        self.vo.ground = ground or self.vo.ground
        self.tf_out = TransformOutput(self) if p["publish_tf"] else None
        backend = self.vo.backend
        self.diag = NodeDiagnostics(self, "visual odometry", {**backend_diagnostics(backend), "mode": p["mode"]})
        self.pub = self.create_publisher(Odometry, "odometry", 10)
        qos = image_qos(p["image_qos"], p["queue_depth"])
        self.frames = FrameQueue(self, self.on_image, p["queue_depth"], self.diag)
        self.sub = self.create_subscription(Image, "image", self.frames.push, qos)
        self.info_sub = self.create_subscription(CameraInfo, "camera_info", self.on_camera_info, qos)
        self._last_stamp: int | None = None

    def on_camera_info(self, msg: CameraInfo) -> None:
        K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            self.diag.counters["bad_camera_info"] += 1
            return
        if self.vo.camera is None and self.want_hybrid:
            self.get_logger().info("camera_info received: hybrid mode on")
        self.vo.set_camera(PinholeCamera.from_K(K, msg.width, msg.height))
        if self.want_hybrid:
            self.vo.mode = "hybrid"
            self.vo.scale_source = self.scale_source

    def on_image(self, msg: Image) -> None:
        t0 = time.perf_counter()
        try:
            grey = message_to_mono8(msg)
        except ImageEncodingError as exc:
            self.diag.bad("image")
            self.get_logger().warning(f"image skipped: {exc}", throttle_duration_sec=5.0)
            return
        if self.camera_pose.update(msg.header.frame_id) and self.scale_source == "ground":
            try:
                self.vo.ground = ground_scale_from_params(self.params, self.camera_pose.T)
            except ConfigError as exc:  # /tf_static puts the camera at or below base_link: keep the last mounting
                self.get_logger().error(f"ground plane scale: {exc}; keeping camera height "
                                        f"{self.vo.ground.height_m:.3f} m")
        stamp = stamp_ns(msg.header.stamp)
        result = self.vo.process(grey, stamp)
        if result.reset:
            self.diag.counters[f"reset_{result.reset}"] += 1
        # The odom frame is base_link at the trajectory's first frame: T_odom_base = X T_c0_ci X⁻¹, X = T_base_cam.
        X = self.camera_pose.T
        X_inv = invert_transform(X)
        T_odom_base = X @ result.pose @ X_inv
        A = adjoint(X)
        pose_cov = A @ result.covariance @ A.T
        out = Odometry()
        out.header.stamp = msg.header.stamp
        out.header.frame_id = self.params["odom_frame"]
        out.child_frame_id = self.params["base_frame"]
        q = quaternion_from_rotation(T_odom_base[:3, :3])
        out.pose.pose.position.x, out.pose.pose.position.y, out.pose.pose.position.z = (float(v) for v in T_odom_base[:3, 3])
        out.pose.pose.orientation.x, out.pose.pose.orientation.y, out.pose.pose.orientation.z, \
            out.pose.pose.orientation.w = (float(v) for v in q)
        out.pose.covariance = [float(v) for v in pose_cov.reshape(36)]
        if result.valid and self._last_stamp is not None:
            dt = max((stamp - self._last_stamp) / 1e9, 1e-6)
            step = X @ result.relative @ X_inv  # base_link motion over the step, in base_link
            lin = step[:3, 3] / dt
            ang = Rotation.from_matrix(step[:3, :3]).as_rotvec() / dt
            out.twist.twist.linear.x, out.twist.twist.linear.y, out.twist.twist.linear.z = (float(v) for v in lin)
            out.twist.twist.angular.x, out.twist.twist.angular.y, out.twist.twist.angular.z = (float(v) for v in ang)
            # The step's noise (camera frame, as the estimator's model) in base_link, per second.
            twist_cov = A @ self.vo.step_covariance(result.relative, result.quality) @ A.T / dt**2
            out.twist.covariance = [float(v) for v in twist_cov.reshape(36)]
        else:
            out.twist.covariance = [float(v) for v in np.diag([1e3] * 6).reshape(36)]  # unknown
        self._last_stamp = stamp
        self.pub.publish(out)
        if self.tf_out is not None:
            tf = TransformStamped()
            tf.header = out.header
            tf.child_frame_id = out.child_frame_id
            tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = \
                out.pose.pose.position.x, out.pose.pose.position.y, out.pose.pose.position.z
            tf.transform.rotation = out.pose.pose.orientation
            self.tf_out.send(tf)
        now = self.get_clock().now().nanoseconds
        self.diag.processed((time.perf_counter() - t0) * 1e3, (now - stamp) / 1e6 if now else None)


def main(args: list[str] | None = None) -> int:
    return spin_node(OdometryNode, "odometry_node", args)


if __name__ == "__main__":
    sys.exit(main())
