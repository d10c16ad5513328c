"""Monocular visual odometry: DeepVO-style network, optionally hybrid with two-view geometry.

``VisualOdometry.process(image, stamp)`` integrates the motion between
consecutive frames into the camera trajectory (KITTI convention: camera i's
pose in the first camera's frame) with a 6×6 covariance.

Modes:

- ``network``: the network's 6-DoF motion (its LSTM state carried across frames).
- ``hybrid``: rotation and translation direction from the essential matrix of
  points tracked at most ``track_width`` pixels wide (needs intrinsics),
  translation length from the network. The points come from dense optical flow
  (``geometry="dense_flow"``, the default,
  :class:`~deep_vision.estimators.two_view.DenseFlowTracker`: refined at full
  resolution) or from tracked corners (``geometry="features"``, the classical
  baseline's front end); RANSAC's rotation and direction are then refined on its
  inliers (``refine_geometry``, Sampson distance, 5 DoF). Without a prior the geometry runs in a thread beside
  the network (run ONNX Runtime with one thread on a 2-core CPU).
  Optionally (``prior_max_disagreement_deg`` > 0; off by default: with dense
  flow it lost accuracy on both synthetic selection routes,
  bench/results/vo-dense-2026-11-22.md) the network's step is checked against
  the tracks as a prior (``FeatureTracker.motion(prior=)``): where the images
  support it as well as RANSAC's solution, the rotation is re-estimated on the
  tracks it explains and the direction is the network's; where they contradict
  it, geometry alone decides. A network out of its training domain can still
  look consistent with the tracks (forward motion leaves rotation and direction
  nearly interchangeable), so the prior is only offered while the network's
  rotations agree with RANSAC's: median disagreement over the last
  ``prior_window`` frames under ``prior_max_disagreement_deg``.
  Where two-view geometry cannot measure the step, the network helps carry it.
  With the ground-plane scale a frame with too few inliers takes the previous
  step's rotation and direction (the network's whole step only before anything
  was measured), and its length, like that of a frame without a ground
  estimate, comes from a Kalman filter on the speed
  (:class:`~deep_vision.estimators.scale_chain.SpeedFilter`): the last measured
  speed, held with ``acceleration_std_mps2`` of uncertainty per second and
  corrected by the network's length in metres calibrated by the ground (the
  median ratio of ground to network length over the last ``CALIBRATION_FRAMES``
  frames that had both), as far as the network's measured noise and the frame's
  image quality allow. Without the ground scale such a frame keeps the
  network's step.
  A frame whose inliers move by less than ``min_translation_parallax_px`` once
  the rotation is undone (standing still, turning on the spot) takes its
  rotation from the tracked rays
  (:func:`~deep_vision.estimators.two_view.rotation_from_bearings`) and no
  translation (``mode`` ``hybrid_rotation``): the tracks measured none.
  ``network_fallback=False`` (hybrid mode; odometry_node ``use_network: false``)
  runs no network at all: frames without geometry repeat the previous step, and
  a frame without a ground estimate keeps the last measured length
  (``deep-vision evaluate vo-cases`` measures both).

Metric scale, ``scale_source``:

- ``network``: the network regresses metres, learned from training data with a
  fixed camera height (KITTI: 1.65 m);
- ``ground`` (hybrid mode): the step's inliers are triangulated and the ground
  plane fitted below the horizon; the camera's known height over it gives the
  length (:class:`~deep_vision.estimators.ground_scale.GroundPlaneScale`, from
  the camera's mounting: ``ground=``; with its ``topview``, odometry_node's
  ``ground_topview``, fused with the length from aligning the two frames' top
  views of the road). The speed is the median of the last
  ``scale_window`` frames' ground estimates; a frame without one keeps that
  median (none in the window: the carried speed above, or before any
  measurement the network's length, or without the network the last velocity
  over this frame's interval, so a step over a dropped frame is twice as long;
  ``OdometryResult.scale`` says which; either lowers the frame's quality).
  ``relative_scale=True`` fuses the ground
  lengths with the ratio of consecutive steps' lengths from three-frame tracks
  instead (:mod:`~deep_vision.estimators.scale_chain`);
- ``external``: give ``process(..., scale=metres)`` per frame (wheel odometry,
  speed), for a camera mounted very differently or one that sees no ground.

Covariance: each step adds an independent noise of std
``trans_rel·|t| + trans_abs`` (metres) and ``rot_rel·|angle| + rot_abs``
(radians), divided by the frame's quality in (0, 1] — low image contrast, a
failed two-view check or an implausible motion lower it — and is propagated on
SE(3) (right perturbation, Barfoot (7.46)), so the covariance grows with the
distance travelled and jumps where the images are poor. Reported in the first
camera's frame, ordered (x, y, z, rot x, rot y, rot z) like ROS messages.

A time jump backwards or a change of image size resets the trajectory (new
origin, LSTM state zeroed) and the result says why.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deep_vision.errors import ConfigError
from deep_vision.estimators.ground_scale import GroundEstimate, GroundPlaneScale
from deep_vision.estimators.homography import to_grey
from deep_vision.estimators.scale_chain import LengthFilter, SpeedFilter, step_length_ratio
from deep_vision.estimators.two_view import DenseFlowTracker, FeatureTracker, rotation_from_bearings
from deep_vision.geometry.camera import PinholeCamera
from deep_vision.geometry.transforms import (
    adjoint,
    rotation_angle,
    rotation_from_euler_zyx,
)
from deep_vision.models.vo_input import (
    flow_front_end,
    pair_input,
    resize_frame,
    resolve_conf,
)

logger = logging.getLogger(__name__)


@dataclass
class OdometryResult:
    stamp_ns: int
    pose: np.ndarray  # [4 x 4] camera pose in the first camera's frame (T_c0_ci)
    covariance: np.ndarray  # [6 x 6] of pose, in the first camera's frame: x y z rot_x rot_y rot_z
    relative: np.ndarray  # [4 x 4] T_prev_curr (identity on the first frame of a trajectory)
    valid: bool  # a motion was estimated for this frame (False on the first frame)
    reset: str | None = None  # why this frame started a new trajectory
    # network | hybrid (geometry) | hybrid_prior (network step confirmed by the tracks) | hybrid_rotation (rotation
    # from the rays, no translation: standing still or turning on the spot) | constant_velocity (no geometry: the
    # previous step's rotation and direction; with the network and the ground scale too) | none
    mode: str = "network"
    quality: float = 1.0  # in (0, 1]: low values inflate the covariance
    distance_m: float = 0.0  # travelled along the trajectory
    timings_ms: dict[str, float] = field(default_factory=dict)
    scale: str = "network"  # where the step length came from: network | ground | ground_held | external |
    # previous_step | constant_velocity (network_fallback=False) | ground_chain (relative_scale: no ground length
    # on this frame, the last one carried by the tracks' length ratio) | network_filtered (no ground length: the
    # last measured speed corrected by the network's calibrated length) | none (hybrid_rotation: no translation)
    points: np.ndarray | None = None  # [N x 2] the two-view step's inliers in this frame (pixels; hybrid mode)


def image_quality(grey: np.ndarray, reference_contrast: float = 25.0) -> float:
    """(0, 1]: RMS contrast of the image's Laplacian relative to a well-textured frame."""
    lap = cv2.Laplacian(cv2.resize(grey, (320, max(8, grey.shape[0] * 320 // grey.shape[1]))), cv2.CV_32F)
    return float(np.clip(np.sqrt(np.mean(lap * lap)) / reference_contrast, 0.05, 1.0))


SCALE_SOURCES = ("network", "ground", "external")
CALIBRATION_FRAMES = 20  # frames with both a ground and a network length over which the network's metres are calibrated
CALIBRATION_MIN_FRAMES = 3  # ... needed before the calibrated length corrects the carried speed
NETWORK_MIN_SPREAD = 0.05  # the calibrated network speed's relative noise is taken as at least this
JITTER_FRAMES = 6  # frames over which the network's frame-to-frame jitter is measured
NETWORK_SPEED_FLOOR_MPS = 0.05  # ... plus this (m/s): a network that says "standing still" is not exact either

#: hybrid mode's correspondence front ends (``geometry=``)
GEOMETRY_FRONT_ENDS = {"dense_flow": DenseFlowTracker,
                       "features": lambda **kw: FeatureTracker(max_corners=800, **kw)}


def _robust_std(x: np.ndarray) -> float:
    """1.4826 × the median absolute deviation (0 for fewer than 3 values)."""
    return 1.4826 * float(np.median(np.abs(x - np.median(x)))) if len(x) >= 3 else 0.0


class VisualOdometry:
    """Frame-by-frame monocular VO (see the module docstring)."""

    def __init__(self, backend: Any, conf: dict[str, Any], *, camera: PinholeCamera | None = None,
                 mode: str = "network", scale_source: str = "network", trans_rel: float = 0.03,
                 trans_abs: float = 0.01, rot_rel: float = 0.05, rot_abs: float = 0.002,
                 max_speed_mps: float = 40.0, geometry: str = "dense_flow", tracker: FeatureTracker | None = None,
                 track_width: int = 400, refine_geometry: bool = True, prior_window: int = 20,
                 prior_max_disagreement_deg: float = 0.0, ground: GroundPlaneScale | None = None,
                 scale_window: int = 1, min_translation_parallax_px: float = 1.0,
                 network_fallback: bool = True, relative_scale: bool = False,
                 acceleration_std_mps2: float = 1.0) -> None:
        if mode not in ("network", "hybrid"):
            raise ConfigError(f"VO mode must be network or hybrid, got {mode!r}")
        if mode == "hybrid" and camera is None:
            raise ConfigError("VO mode hybrid needs the camera intrinsics (camera=PinholeCamera or camera_info)")
        if scale_source not in SCALE_SOURCES:
            raise ConfigError(f"scale_source must be one of {SCALE_SOURCES}, got {scale_source!r}")
        if scale_source == "ground" and mode != "hybrid":
            raise ConfigError("scale_source ground needs mode hybrid (the two-view geometry's points)")
        if scale_window < 1:
            raise ConfigError(f"scale_window must be at least 1 frame, got {scale_window}")
        if relative_scale and (scale_source != "ground" or scale_window != 1):
            raise ConfigError("relative_scale fuses each frame's ground length with the tracks' length ratio: it "
                              f"needs scale_source ground and scale_window 1 (got {scale_source}, {scale_window})")
        if not acceleration_std_mps2 > 0:
            raise ConfigError(f"acceleration_std_mps2 must be positive, got {acceleration_std_mps2}")
        self.acceleration_std = float(acceleration_std_mps2)
        self.relative_scale = bool(relative_scale)
        self.network_fallback = bool(network_fallback)
        self.min_translation_parallax_px = float(min_translation_parallax_px)
        self.backend = backend
        self.conf = conf
        self.camera = camera
        self.mode = mode
        self.scale_source = scale_source
        self.ground = ground or GroundPlaneScale()
        self.scale_window = int(scale_window)
        self.noise = (trans_rel, trans_abs, rot_rel, rot_abs)
        self.max_speed_mps = max_speed_mps
        if geometry not in GEOMETRY_FRONT_ENDS:
            raise ConfigError(f"VO geometry must be one of {sorted(GEOMETRY_FRONT_ENDS)}, got {geometry!r}")
        if track_width < 64:
            raise ConfigError(f"track_width must be at least 64 pixels, got {track_width}")
        self.tracker = tracker or GEOMETRY_FRONT_ENDS[geometry](width=int(track_width),
                                                                       refine=bool(refine_geometry))
        self.prior_max_disagreement = np.radians(prior_max_disagreement_deg)
        self._disagreement: deque[float] = deque(maxlen=max(1, int(prior_window)))
        self.resets = 0
        self._flow = flow_front_end(conf)
        self._pool: ThreadPoolExecutor | None = None
        self._start_new(None)

    @classmethod
    def from_model(cls, path: str | Path, backend: str = "auto", camera: PinholeCamera | None = None,
                   **kwargs: Any) -> "VisualOdometry":
        """Load a DeepVO model (.onnx + card, or .pt) on ``backend``; ``camera`` enables the hybrid mode."""
        from deep_vision.inference import load_backend
        from deep_vision.inference.modelcard import ModelCard, card_path_for

        net = load_backend(path, backend, threads=kwargs.pop("threads", None))
        card_path = card_path_for(Path(path))
        conf = ModelCard.load(card_path).model_config if card_path.is_file() else {}
        conf = resolve_conf(conf or None)
        return cls(net, conf, camera=camera, **kwargs)

    # ------------------------------------------------------------------ state
    def _start_new(self, reason: str | None) -> None:
        L, U = self.conf["lstm_layers"], self.conf["lstm_hidden"]
        self._h = np.zeros((L, 1, U), np.float32)
        self._c = np.zeros((L, 1, U), np.float32)
        self._prev: tuple[np.ndarray, np.ndarray, int] | None = None  # (grey, network-size frame, stamp)
        self.pose = np.eye(4)
        self._last_step = np.eye(4)
        self._cov_local = np.zeros((6, 6))
        self.distance = 0.0
        self._ground_speeds: deque[float | None] = deque(maxlen=self.scale_window)
        self._network_log_ratio: deque[float] = deque(maxlen=CALIBRATION_FRAMES)  # log(ground / network length)
        self._lengths = LengthFilter()
        self._speed = SpeedFilter(self.acceleration_std)
        self._network_log_speeds: deque[float] = deque(maxlen=JITTER_FRAMES)  # log of the network's raw speeds
        self._chain_from = None  # the last step's two-view motion, where it measured a translation
        self._last_dt = None
        self._pending_reset = reason

    def prior_trusted(self) -> bool:
        """Whether the network's steps agree with two-view geometry lately (hybrid mode; see the module docstring)."""
        return (self.prior_max_disagreement > 0 and len(self._disagreement) >= min(5, self._disagreement.maxlen)
                and float(np.median(self._disagreement)) <= self.prior_max_disagreement)

    def set_camera(self, camera: PinholeCamera) -> None:
        """Intrinsics for the hybrid mode (e.g. from the first camera_info)."""
        self.camera = camera

    def reset(self, reason: str = "requested") -> None:
        self.resets += 1
        self._start_new(reason)

    # ------------------------------------------------------------------ main
    def process(self, image: np.ndarray, stamp_ns: int, scale: float | None = None) -> OdometryResult:
        """Add a frame (full-resolution grey or RGB uint8) taken at ``stamp_ns``; returns the new pose."""
        t0 = time.perf_counter()
        grey = to_grey(image)
        if self._prev is not None:
            prev_grey, _, prev_stamp = self._prev
            if stamp_ns <= prev_stamp:
                logger.warning("VO: stamp %d ns not after %d ns: new trajectory", stamp_ns, prev_stamp)
                self.reset("time_backwards" if stamp_ns < prev_stamp else "repeated_stamp")
            elif grey.shape != prev_grey.shape:
                logger.warning("VO: image size changed %s -> %s: new trajectory", prev_grey.shape[::-1], grey.shape[::-1])
                self.reset("size_change")
        x = resize_frame(grey, self.conf)
        if self._prev is None:
            self._prev = (grey, x, stamp_ns)
            reason, self._pending_reset = self._pending_reset, None
            return OdometryResult(stamp_ns, self.pose.copy(), self._covariance_world(), np.eye(4), False, reason,
                                  "none", 1.0, self.distance, {"total_ms": (time.perf_counter() - t0) * 1e3})
        prev_grey, prev_x, prev_stamp = self._prev
        # Without a prior to check, the two-view geometry does not wait for the network: it runs beside it.
        pending = None
        if self.mode == "hybrid" and not self.prior_trusted():
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="vo_geometry")
            pending = self._pool.submit(self._two_view, prev_grey, grey)
        fallback_network = self.network_fallback or self.mode != "hybrid"  # network mode always runs it
        t_net = R_net = None
        if fallback_network or self.scale_source == "network":
            pair = pair_input(prev_x, x, self.conf, self._flow)[None]
            out = self.backend.run({"pair": pair, "h0": self._h, "c0": self._c})
            self._h, self._c = out["h1"].astype(np.float32), out["c1"].astype(np.float32)
            motion = np.asarray(out["motion"], dtype=np.float64).reshape(6)
            t_net, R_net = motion[:3], rotation_from_euler_zyx(motion[3:])
            t_net_raw = t_net
            if self._network_log_ratio:  # the network's metres, calibrated by the ground lately
                t_net = t_net * float(np.exp(np.median(self._network_log_ratio)))
            if np.linalg.norm(t_net) > 1e-3:
                self._network_log_speeds.append(float(np.log(np.linalg.norm(t_net_raw) / max(stamp_ns - prev_stamp, 1)
                                                             * 1e9)))
        # What a frame takes where the images cannot measure it. With the ground scale: the previous step's rotation
        # and direction at the speed the filter carries (with the network: corrected by its calibrated length).
        # Otherwise the network's step, or without it the previous step.
        dt = (stamp_ns - prev_stamp) / 1e9
        carried = self.mode == "hybrid" and self.scale_source == "ground" and not self.relative_scale
        if fallback_network and not carried:
            t_fb, R_fb, mode, scale_from = t_net, R_net, "network", "network"
        else:  # the last step's velocity over this frame's interval (a dropped frame: twice the step)
            t_fb, R_fb = self._constant_velocity(dt)
            mode = scale_from = "constant_velocity"
        # Which way is forward (two-view geometry knows the direction up to its sign): the last step's way, since a
        # vehicle does not reverse between two frames without stopping, and a network off its training domain can
        # read a crawl as reversing; after a stop or a reset the network's way, if it runs.
        last_t = self._last_step[:3, 3]
        t_ref = last_t if np.linalg.norm(last_t) > 1e-6 else t_net if t_net is not None else t_fb
        t1 = time.perf_counter()
        quality = image_quality(grey)
        t_step, R_step = t_fb, R_fb
        tv = None
        if self.mode == "hybrid":
            tv, ground, log_ratio = pending.result() if pending is not None else \
                self._two_view(prev_grey, grey, (R_fb, t_fb) if R_net is None else (R_net, t_net))
            if tv is not None and R_net is not None:
                self._disagreement.append(rotation_angle(R_net.T @ tv.R_geometry))
            if tv is not None and tv.translation_parallax_px >= self.min_translation_parallax_px:
                if ground is not None and t_net is not None and np.linalg.norm(t_net_raw) > 0.05:
                    self._network_log_ratio.append(float(np.log(ground.scale_m / np.linalg.norm(t_net_raw))))
                if self.scale_source == "ground" and self.relative_scale:
                    length = self._lengths.update(dt, None if ground is None else ground.scale_m, log_ratio)
                    scale_from = "ground" if ground is not None else "ground_chain" if log_ratio is not None \
                        else "ground_held"
                    if length is None:  # no ground length yet
                        length = float(np.linalg.norm(t_fb))
                        scale_from = "network" if fallback_network else "previous_step"
                    if scale_from != "ground":
                        quality *= 0.7
                elif self.scale_source == "ground":
                    length, scale_from = self._ground_length(ground, dt, t_net, t_fb, quality)
                    if scale_from != "ground":
                        quality *= 0.7  # the length was not measured on this frame
                elif self.scale_source == "network":
                    length, scale_from = float(np.linalg.norm(t_net)), "network"
                else:  # external: replaced below
                    length = float(np.linalg.norm(t_fb))
                t_dir = tv.t_dir if tv.t_dir @ t_ref >= 0 else -tv.t_dir
                t_step, R_step, mode = t_dir * length, tv.R, "hybrid" if tv.source == "geometry" else "hybrid_prior"
                self._chain_from = tv
            elif tv is not None:  # standing still or turning on the spot: no translation to measure
                R_step, mode = rotation_from_bearings(self.camera.K, tv.p0, tv.p1), "hybrid_rotation"
                t_step, scale_from = np.zeros(3), "none"
                self._speed.measured(0.0)
                quality *= 0.7
                self._chain_interrupted()
            else:
                if carried and self._speed.speed is None and t_net is not None:  # nothing measured yet
                    t_step, R_step, mode, scale_from = t_net, R_net, "network", "network"
                elif carried:  # no geometry: the previous step's rotation and direction, the carried speed
                    length, scale_from = self._carried_length(dt, t_net, t_fb, quality)
                    n_fb = np.linalg.norm(t_fb)
                    direction = t_fb / n_fb if n_fb > 1e-9 else \
                        t_net / np.linalg.norm(t_net) if t_net is not None and np.linalg.norm(t_net) > 1e-9 \
                        else np.zeros(3)
                    t_step = direction * length
                quality *= 0.5  # geometry not confirmed: trust the step less
                self._chain_interrupted()
        if self.scale_source == "external":
            if scale is None:
                raise ConfigError("scale_source is external: pass scale= (metres of this step) to process()")
            n = np.linalg.norm(t_step)
            t_step = t_step / n * scale if n > 0 else t_step
            scale_from = "external"
        if np.linalg.norm(t_step) > self.max_speed_mps * max(dt, 1e-3):
            quality *= 0.2  # implausible speed
        T_step = np.eye(4)
        T_step[:3, :3], T_step[:3, 3] = R_step, t_step
        self._propagate(T_step, quality)
        self.pose = self.pose @ T_step
        self._last_step, self._last_dt = T_step, dt
        self.distance += float(np.linalg.norm(t_step))
        self._prev = (grey, x, stamp_ns)
        reason, self._pending_reset = self._pending_reset, None
        t2 = time.perf_counter()
        return OdometryResult(stamp_ns, self.pose.copy(), self._covariance_world(), T_step, True, reason, mode,
                              quality, self.distance, {"network_ms": (t1 - t0) * 1e3, "total_ms": (t2 - t0) * 1e3},
                              scale_from, None if tv is None else tv.p1)

    def _two_view(self, prev: np.ndarray, curr: np.ndarray, prior: tuple[np.ndarray, np.ndarray] | None = None):
        """(two-view motion, its ground-plane scale or None, log of its length over the previous step's or None):
        the tracker works at most ``track_width`` pixels wide; the motion is checked against the ``prior``
        (R_pc, t_pc)."""
        tv = self.tracker.motion(prev, curr, self.camera.K, prior=prior)
        ground = log_ratio = None
        if tv is not None and self.scale_source == "ground":
            ground = self.ground.estimate(tv.R, tv.t_dir, self.camera.K, tv.p0, tv.p1, images=(prev, curr))
        if tv is not None and self.relative_scale and self._chain_from is not None and \
                tv.translation_parallax_px >= self.min_translation_parallax_px:
            log_ratio = step_length_ratio(self._chain_from, tv.R, tv.t_dir, prev, curr, self.camera.K)
        return tv, ground, log_ratio

    def _chain_interrupted(self) -> None:
        """A step without a measured translation: the next one has no ratio to the last, and the length filter
        lets the next ground length decide (the speed may have changed meanwhile)."""
        self._chain_from = None
        self._lengths.interrupt()

    def _constant_velocity(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """(t, R) of the last step scaled to a step of ``dt`` seconds (constant velocity)."""
        t, R = self._last_step[:3, 3].copy(), self._last_step[:3, :3].copy()
        if self._last_dt is None or self._last_dt <= 0 or dt <= 0:
            return t, R
        f = dt / self._last_dt
        return t * f, cv2.Rodrigues(cv2.Rodrigues(R)[0] * f)[0]

    def _ground_length(self, ground: GroundEstimate | None, dt: float, t_net: np.ndarray | None, t_fb: np.ndarray,
                       quality: float) -> tuple[float, str]:
        """(step length, its source): the median speed of the last ``scale_window`` ground estimates × ``dt``; none in
        the window: the carried speed (:meth:`_carried_length`)."""
        dt = max(dt, 1e-3)
        self._ground_speeds.append(None if ground is None else ground.scale_m / dt)
        speeds = [v for v in self._ground_speeds if v is not None]
        if not speeds:
            return self._carried_length(dt, t_net, t_fb, quality)
        self._speed.measured(float(np.median(speeds)))
        return float(np.median(speeds)) * dt, "ground" if ground is not None else "ground_held"

    def _carried_length(self, dt: float, t_net: np.ndarray | None, t_fb: np.ndarray,
                        quality: float) -> tuple[float, str]:
        """(length, source) of a step whose length nothing measured: the last measured speed, corrected by the
        network's calibrated length where it runs (:class:`~deep_vision.estimators.scale_chain.SpeedFilter`). The
        network's noise, relative to the speed: the larger of the spread of its log ratio to the ground lately and
        its own frame-to-frame jitter lately (a network off its training domain jumps), divided by the frame's image
        quality."""
        dt = max(dt, 1e-3)
        speed = self._speed.predict(dt)
        if t_net is not None and len(self._network_log_ratio) >= CALIBRATION_MIN_FRAMES:
            z = float(np.linalg.norm(t_net)) / dt
            rel = max(NETWORK_MIN_SPREAD, _robust_std(np.asarray(self._network_log_ratio)),
                      _robust_std(np.diff(np.asarray(self._network_log_speeds))) / np.sqrt(2.0))
            reference = max(speed, z) if speed is not None else z  # a low reading is not more precise
            speed = self._speed.fuse(z, (reference * rel + NETWORK_SPEED_FLOOR_MPS) / max(quality, 0.05))
            return speed * dt, "network_filtered"
        if speed is None:  # nothing measured yet: the network's length, or the previous step's
            return (float(np.linalg.norm(t_net)), "network") if t_net is not None else \
                (float(np.linalg.norm(t_fb)), "previous_step")
        return speed * dt, "previous_step"

    def step_covariance(self, T_step: np.ndarray, quality: float) -> np.ndarray:
        """[6 x 6] noise of one step (its own frame): std ``rel·size + abs`` per axis, divided by ``quality``."""
        trans_rel, trans_abs, rot_rel, rot_abs = self.noise
        angle = rotation_angle(T_step[:3, :3])
        s_t = (trans_rel * np.linalg.norm(T_step[:3, 3]) + trans_abs) / quality
        s_r = (rot_rel * angle + rot_abs) / quality
        return np.diag([s_t**2] * 3 + [s_r**2] * 3)

    def _propagate(self, T_step: np.ndarray, quality: float) -> None:
        step = self.step_covariance(T_step, quality)
        A = adjoint(np.linalg.inv(T_step))
        self._cov_local = A @ self._cov_local @ A.T + step

    def _covariance_world(self) -> np.ndarray:
        A = adjoint(self.pose)
        cov = A @ self._cov_local @ A.T
        return 0.5 * (cov + cov.T)
