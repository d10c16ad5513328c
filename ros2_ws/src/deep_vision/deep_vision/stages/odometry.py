"""The odometry node's stage: visual odometry in the camera frame → ``odom → base_link`` with covariances.

The ``odom`` frame is ``base_link`` at the trajectory's first frame (REP 105):
with ``X = T_base_camera``, ``T_odom_base = X · T_c0_ci · X⁻¹``; covariances
move by the adjoint of ``X``; the twist is the base_link motion over the last
step, in base_link, per second. Hybrid mode needs the intrinsics: the stage
runs the network mode until the first camera info, then switches.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from deep_vision.geometry.transforms import adjoint, invert_transform
from deep_vision.stages.inputs import CameraInfo, Frame

logger = logging.getLogger(__name__)

#: Twist covariance when no motion was estimated (the first frame of a trajectory): unknown.
UNKNOWN_TWIST_COVARIANCE = np.diag([1e3] * 6)


@dataclass(frozen=True)
class OdometryOut:
    stamp_ns: int
    frame_id: str  # odom
    child_frame_id: str  # base_link
    pose: np.ndarray  # T_odom_base
    covariance: np.ndarray  # [6 x 6] of pose, in odom
    linear: np.ndarray  # base_link velocity, in base_link (m/s)
    angular: np.ndarray  # rad/s
    twist_covariance: np.ndarray  # [6 x 6]
    result: Any  # the estimator's OdometryResult (camera frame: pose T_c0_ci, mode, scale, timings)

    @property
    def reset(self) -> str | None:
        return self.result.reset


class OdometryStage:
    """``counters``: ``bad_camera_info``, ``reset_<reason>``."""

    def __init__(self, vo: Any, p: dict[str, Any], T_base_camera: np.ndarray, scale_source: str) -> None:
        self.vo = vo
        self.params = p
        self.T_base_camera = np.asarray(T_base_camera, float)
        self.scale_source = scale_source
        self.want_hybrid = p["mode"] == "hybrid"
        self.odom_frame = str(p["odom_frame"])
        self.base_frame = str(p["base_frame"])
        self.counters: Counter[str] = Counter()
        self._last_stamp: int | None = None
        self._lock = threading.Lock()
        self._pending_info: CameraInfo | None = None
        self._has_camera = False

    @classmethod
    def from_params(cls, p: dict[str, Any], node: str = "odometry_node") -> OdometryStage:
        """From odometry_node's parameters; raises ConfigError naming the parameter."""
        from deep_vision.params import validate
        from deep_vision.pipeline.build import build_odometry, camera_pose_transform, scale_settings

        p = validate(node, p)
        X = camera_pose_transform(p["camera_pose"], node)
        # the model first; hybrid mode, its scale source and relative_scale go on with the first camera_info
        vo = build_odometry({**p, "mode": "network", "scale_source": "network", "relative_scale": False}, node=node)
        scale_source, ground, _ = scale_settings(p, X, node=node)
        vo.ground = ground or vo.ground
        return cls(vo, p, X, scale_source)

    @property
    def backend(self) -> Any:
        return self.vo.backend

    def set_camera_info(self, info: CameraInfo | None) -> bool:
        """Intrinsics (None: an unusable camera info, counted), taken at the next frame (a node's executor
        calls this while its worker may be inside :meth:`process`); True when they will switch hybrid mode on."""
        if info is None:
            self.counters["bad_camera_info"] += 1
            return False
        with self._lock:
            first, self._has_camera = not self._has_camera, True
            self._pending_info = info
        return first and self.want_hybrid

    def _take_camera_info(self) -> None:
        with self._lock:
            info, self._pending_info = self._pending_info, None
        if info is not None:
            self.vo.set_camera(info.camera)
            if self.want_hybrid:
                self.vo.mode = "hybrid"
                self.vo.scale_source = self.scale_source
                self.vo.relative_scale = bool(self.params["relative_scale"])

    def set_camera_pose(self, T_base_camera: np.ndarray) -> None:
        """The camera's pose on the robot (e.g. from /tf_static); with the ground scale, its height. Raises
        ConfigError (and keeps the last mounting) when the ground scale cannot use it."""
        if self.scale_source == "ground":
            from deep_vision.pipeline.build import ground_scale_from_params

            self.vo.ground = ground_scale_from_params(self.params, T_base_camera)
        self.T_base_camera = np.asarray(T_base_camera, float)

    def process(self, frame: Frame) -> OdometryOut:
        self._take_camera_info()
        r = self.vo.process(frame.grey, frame.stamp_ns)
        if r.reset:
            self.counters[f"reset_{r.reset}"] += 1
        X = self.T_base_camera
        X_inv = invert_transform(X)
        A = adjoint(X)
        pose = X @ r.pose @ X_inv
        cov = A @ r.covariance @ A.T
        linear, angular, twist_cov = np.zeros(3), np.zeros(3), UNKNOWN_TWIST_COVARIANCE
        if r.valid and self._last_stamp is not None:
            dt = max((frame.stamp_ns - self._last_stamp) / 1e9, 1e-6)
            step = X @ r.relative @ X_inv  # base_link motion over the step, in base_link
            linear = step[:3, 3] / dt
            angular = Rotation.from_matrix(step[:3, :3]).as_rotvec() / dt
            # The step's noise (camera frame, as the estimator's model) in base_link, per second.
            twist_cov = A @ self.vo.step_covariance(r.relative, r.quality) @ A.T / dt**2
        self._last_stamp = frame.stamp_ns
        return OdometryOut(frame.stamp_ns, self.odom_frame, self.base_frame, pose, cov, linear, angular, twist_cov, r)
