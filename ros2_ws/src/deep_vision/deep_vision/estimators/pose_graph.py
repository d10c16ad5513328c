"""Keyframe pose graph on GTSAM iSAM2: visual odometry + verified loop closures.

``PoseGraph`` takes the odometry stream (absolute poses with their 6×6
covariance, as ``VisualOdometry`` or a ``nav_msgs/Odometry`` topic gives them)
and verified loop closures, and keeps the optimised keyframe poses.

- **Keyframes** every ``keyframe_distance_m`` travelled or ``keyframe_angle_deg``
  turned. Consecutive keyframes are joined by a ``BetweenFactorPose3`` with the
  odometry's relative pose; its covariance is the part of the odometry
  covariance that accumulated between the two keyframes (right perturbations:
  ``Σ_j = Ad(T_kj⁻¹) Σ_k Ad(T_kj⁻¹)ᵀ + Σ_kj``, solved for ``Σ_kj``). An odometry
  reset (new trajectory origin) joins the new chain to the old one with a weak
  identity factor, which later loop closures can correct.
- **Loop closures** come between frames (any stamps): each end is moved to its
  nearest keyframe with the odometry between them. A monocular verification
  gives the rotation and the *direction* of the translation, not its length;
  the factor therefore constrains the translation tightly across that
  direction and loosely along it (mean length: the current estimate's, clipped
  to ``loop_max_distance_m``). Each loop factor has a robust kernel (Huber by
  default).
- **Acceptance**: a closure is rejected before it enters the graph when its
  rotation disagrees with the current estimate by more than
  ``loop_max_rotation_deg`` or three times the odometry's rotation drift
  (1 σ, from its covariance) between the two keyframes, whichever is larger, and removed again after the iSAM2 update when its
  Gaussian χ² there exceeds ``loop_max_chi2`` (default: the 99.9 % quantile of
  χ²(6)) — a wrong closure can then not bend the map.
- **Solver errors**: a factor that GTSAM cannot take (an indeterminate or
  ill-conditioned system, say from a degenerate covariance) is rejected: iSAM2
  is rebuilt from the factors accepted so far at the last estimate, the factor
  is counted in ``stats.rejected_factors`` and logged once per kind, and the
  graph goes on (a failed update leaves iSAM2 unusable otherwise).

Frames: poses are ``T_odom_body`` (the first body/camera pose in the odometry
frame). ``extrinsic`` (``T_body_camera``) maps loop-closure measurements, which
are between cameras, into the body frame. Tangent vectors and covariances are
ordered (x, y, z, rot x, rot y, rot z) like ROS messages; GTSAM's (rot, trans)
order stays inside this module.
"""

from __future__ import annotations

import bisect
import functools
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deep_vision.errors import ConfigError
from deep_vision.geometry.transforms import adjoint, invert_transform, rotation_angle

logger = logging.getLogger(__name__)

_ROS_TO_GTSAM = np.array([3, 4, 5, 0, 1, 2])  # (x y z rx ry rz) -> (rx ry rz x y z)


def _gtsam():
    try:
        import gtsam
    except ImportError as exc:  # pragma: no cover - gtsam is a pinned requirement
        raise ConfigError("the pose graph needs GTSAM: pip install gtsam") from exc
    return gtsam


def _psd(cov: np.ndarray, floor: float) -> np.ndarray:
    """Symmetric, with eigenvalues at least ``floor`` (differences of covariances can lose definiteness)."""
    cov = 0.5 * (cov + cov.T)
    w, V = np.linalg.eigh(cov)
    return (V * np.maximum(w, floor)) @ V.T


@dataclass
class LoopDecision:
    """What the graph did with one loop closure."""

    query_stamp_ns: int
    match_stamp_ns: int
    query_key: int
    match_key: int
    accepted: bool
    reason: str  # accepted | rotation | chi2 | unknown_stamp | same_keyframe
    chi2: float = float("nan")
    rotation_error_deg: float = float("nan")  # measured vs current estimate, before the update
    rotation: np.ndarray | None = None  # the measurement: query camera in the match camera's frame
    direction: np.ndarray | None = None


@dataclass
class _Keyframe:
    stamp_ns: int
    odom_pose: np.ndarray  # T_odom_body from the odometry
    cov_local: np.ndarray  # odometry covariance in the body frame (right perturbation)
    chain: int  # odometry trajectory index (resets start a new one)


@dataclass
class PoseGraphStats:
    keyframes: int = 0
    odometry_factors: int = 0
    resets: int = 0
    loops_received: int = 0
    loops_accepted: int = 0
    loops_rejected: dict[str, int] = field(default_factory=dict)
    rejected_factors: dict[str, int] = field(default_factory=dict)  # by kind (prior, odometry, reset, loop)


class FactorRejected(RuntimeError):
    """GTSAM could not take a factor; the graph was restored without it."""


class PoseGraph:
    """Keyframe pose graph (see the module docstring).

    Args:
        keyframe_distance_m / keyframe_angle_deg: keyframe spacing along the odometry.
        loop_max_distance_m: largest plausible distance between the two cameras of a loop closure.
        loop_direction_sigma_rad: angular noise of the measured translation direction (short revisit
            baselines make it poor: 20 deg median error on the synthetic routes).
        loop_rotation_sigma_rad: added to the loop's rotation noise (its value without a covariance).
        loop_iterations: extra iSAM2 iterations after a loop closure.
        loop_min_translation_sigma_m: floor of the loop's translation noise.
        loop_kernel / loop_kernel_width: robust kernel of loop factors (huber | cauchy | none), in σ.
        loop_max_rotation_deg / loop_max_chi2: acceptance tests (see the module docstring).
        reset_sigma_m / reset_sigma_rad: noise of the identity factor joining chains after a reset.
        prior_sigma: noise of the prior fixing the first keyframe.
        extrinsic: T_body_camera, for loop closures measured between cameras.
    """

    def __init__(self, *, keyframe_distance_m: float = 2.0, keyframe_angle_deg: float = 10.0,
                 loop_max_distance_m: float = 10.0, loop_direction_sigma_rad: float = 0.35,
                 loop_rotation_sigma_rad: float = 0.03, loop_iterations: int = 10, loop_min_translation_sigma_m: float = 0.2,
                 loop_kernel: str = "huber", loop_kernel_width: float = 2.0, loop_max_rotation_deg: float = 10.0,
                 loop_max_chi2: float = 22.46, reset_sigma_m: float = 50.0, reset_sigma_rad: float = 1.0,
                 prior_sigma: float = 1e-4, min_variance: float = 1e-8,
                 extrinsic: np.ndarray | None = None, relinearize_threshold: float = 0.01) -> None:
        if keyframe_distance_m <= 0 and keyframe_angle_deg <= 0:
            raise ConfigError("pose graph: keyframe_distance_m or keyframe_angle_deg must be positive")
        if loop_kernel not in ("huber", "cauchy", "none"):
            raise ConfigError(f"pose graph: loop_kernel must be huber, cauchy or none, got {loop_kernel!r}")
        gtsam = _gtsam()
        self._g = gtsam
        self.keyframe_distance_m = float(keyframe_distance_m)
        self.keyframe_angle = np.deg2rad(keyframe_angle_deg)
        self.loop_max_distance_m = float(loop_max_distance_m)
        self.loop_direction_sigma = float(loop_direction_sigma_rad)
        self.loop_rotation_sigma = float(loop_rotation_sigma_rad)
        self.loop_iterations = int(loop_iterations)
        self.loop_min_translation_sigma = float(loop_min_translation_sigma_m)
        self.loop_kernel = loop_kernel
        self.loop_kernel_width = float(loop_kernel_width)
        self.loop_max_rotation = np.deg2rad(loop_max_rotation_deg)
        self.loop_max_chi2 = float(loop_max_chi2)
        self.reset_sigmas = np.array([reset_sigma_m] * 3 + [reset_sigma_rad] * 3, float)
        self.prior_sigma = float(prior_sigma)
        self.min_variance = float(min_variance)
        self.extrinsic = np.eye(4) if extrinsic is None else np.asarray(extrinsic, float)
        params = gtsam.ISAM2Params()
        params.setRelinearizeThreshold(relinearize_threshold)
        params.relinearizeSkip = 1
        params.setFactorization("QR")
        self._params = params
        self.isam = gtsam.ISAM2(params)
        self._factors: list[Any] = []  # the accepted factors, to rebuild iSAM2 after a failed update
        self._estimate = gtsam.Values()
        self.keyframes: list[_Keyframe] = []
        self.decisions: list[LoopDecision] = []
        self.stats = PoseGraphStats()
        # The odometry stream since the start (stamp -> pose, chain), to move loop ends onto keyframes.
        self._stamps: list[int] = []
        self._poses: list[np.ndarray] = []
        self._chains: list[int] = []
        self._frame_kf: list[int] = []  # the keyframe at or before each odometry frame
        self._chain = 0
        self._join_by_reset = False  # GTSAM refused a join (reset or odometry): the next keyframe joins weakly

    # ------------------------------------------------------------------ helpers
    def _pose3(self, T: np.ndarray):
        g = self._g
        return g.Pose3(g.Rot3(T[:3, :3]), g.Point3(*T[:3, 3]))

    def _noise(self, cov_ros: np.ndarray):
        cov = _psd(cov_ros, self.min_variance)[np.ix_(_ROS_TO_GTSAM, _ROS_TO_GTSAM)]
        return self._g.noiseModel.Gaussian.Covariance(cov)

    def _robust(self, noise):
        g = self._g
        if self.loop_kernel == "none":
            return noise
        kernel = (g.noiseModel.mEstimator.Huber.Create(self.loop_kernel_width) if self.loop_kernel == "huber"
                  else g.noiseModel.mEstimator.Cauchy.Create(self.loop_kernel_width))
        return g.noiseModel.Robust.Create(kernel, noise)

    def _update(self, graph, values, remove: list[int] | None = None, kind: str = ""):
        """One iSAM2 update; when GTSAM refuses it, iSAM2 is rebuilt without ``graph`` and FactorRejected raised."""
        try:
            if remove:
                result = self.isam.update(graph, values, list(remove))
            else:
                result = self.isam.update(graph, values)
            self._estimate = self.isam.calculateEstimate()
        except RuntimeError as exc:
            self._rebuild()
            reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            self.stats.rejected_factors[kind] = self.stats.rejected_factors.get(kind, 0) + 1
            if self.stats.rejected_factors[kind] == 1:
                logger.warning("pose graph: GTSAM refused %s factor (%s); the graph goes on without it (counted "
                               "as rejected_factors)", f"the {kind}" if kind else "a", reason)
            raise FactorRejected(reason) from exc
        return result

    def _rebuild(self) -> None:
        """A new iSAM2 holding the accepted factors, started at the last good estimate."""
        g = self._g
        self.isam = g.ISAM2(self._params)
        graph = g.NonlinearFactorGraph()
        for factor in self._factors:
            graph.add(factor)
        if self._factors:
            self.isam.update(graph, self._estimate)
            self._estimate = self.isam.calculateEstimate()

    def _converge(self, key: int) -> None:
        """More iSAM2 iterations after a loop closure (one per update otherwise): the robust kernel reweights
        at every iteration, and a large correction needs several to settle before the χ² test."""
        g = self._g
        before = self._estimate.atPose3(key).matrix()
        for _ in range(self.loop_iterations):
            self._update(g.NonlinearFactorGraph(), g.Values(), kind="loop")
            after = self._estimate.atPose3(key).matrix()
            if np.linalg.norm(after[:3, 3] - before[:3, 3]) < 1e-3 and rotation_angle(after[:3, :3].T @ before[:3, :3]) < 1e-4:
                break
            before = after

    # ------------------------------------------------------------------ odometry
    def add_odometry(self, stamp_ns: int, pose: np.ndarray, covariance: np.ndarray, *, reset: bool = False) -> int | None:
        """One odometry output: ``pose`` T_odom_body, ``covariance`` [6 x 6] in the odometry frame.

        ``reset``: the odometry started a new trajectory at this frame (its origin moved).
        Returns the new keyframe's key when this frame became one, else None.
        """
        pose = np.asarray(pose, float)
        if not np.all(np.isfinite(pose)) or not np.all(np.isfinite(covariance)):
            raise ValueError("pose graph: odometry pose or covariance is not finite")
        if self._stamps and stamp_ns <= self._stamps[-1]:
            raise ValueError(f"pose graph: odometry stamp {stamp_ns} not after {self._stamps[-1]}")
        A = adjoint(invert_transform(pose))
        cov_local = A @ np.asarray(covariance, float) @ A.T
        if reset and self.keyframes:
            self._chain += 1
            self.stats.resets += 1
        key = None
        try:
            if not self.keyframes:
                key = self._add_first(stamp_ns, pose, cov_local)
            elif reset or self._join_by_reset:
                # a rejected reset join is tried again on the next frames: the chains have different origins
                self._join_by_reset = True
                key = self._add_keyframe(stamp_ns, pose, cov_local, joined_by_reset=True)
                self._join_by_reset = False
            else:
                kf = self.keyframes[-1]
                T_rel = invert_transform(kf.odom_pose) @ pose
                if (np.linalg.norm(T_rel[:3, 3]) >= self.keyframe_distance_m > 0
                        or rotation_angle(T_rel[:3, :3]) >= self.keyframe_angle > 0):
                    key = self._add_keyframe(stamp_ns, pose, cov_local)
        except FactorRejected:
            if not self.keyframes:
                return None  # no keyframe to hang the frame on yet
            # The odometry since the last keyframe is unusable to GTSAM: the next keyframe joins weakly, as
            # after a reset, rather than every later one failing against the same covariance.
            self._join_by_reset = True
        self._stamps.append(int(stamp_ns))
        self._poses.append(pose)
        self._chains.append(self._chain)
        self._frame_kf.append(len(self.keyframes) - 1)
        return key

    def _add_first(self, stamp_ns: int, pose: np.ndarray, cov_local: np.ndarray) -> int:
        g = self._g
        graph, values = g.NonlinearFactorGraph(), g.Values()
        prior = g.PriorFactorPose3(0, self._pose3(pose), g.noiseModel.Isotropic.Sigma(6, self.prior_sigma))
        graph.add(prior)
        values.insert(0, self._pose3(pose))
        self._update(graph, values, kind="prior")
        self._factors.append(prior)
        self.keyframes.append(_Keyframe(int(stamp_ns), pose, cov_local, self._chain))
        self.stats.keyframes = 1
        return 0

    def _add_keyframe(self, stamp_ns: int, pose: np.ndarray, cov_local: np.ndarray, joined_by_reset: bool = False) -> int:
        g = self._g
        k = len(self.keyframes)
        prev = self.keyframes[-1]
        graph, values = g.NonlinearFactorGraph(), g.Values()
        if joined_by_reset:  # weakly: across a reset (origin unknown: identity) or a refused odometry factor
            T_rel = np.eye(4) if prev.chain != self._chain else invert_transform(prev.odom_pose) @ pose
            noise = g.noiseModel.Diagonal.Sigmas(self.reset_sigmas[_ROS_TO_GTSAM])
        else:
            T_rel = invert_transform(prev.odom_pose) @ pose
            A = adjoint(invert_transform(T_rel))
            noise = self._noise(cov_local - A @ prev.cov_local @ A.T)
        factor = g.BetweenFactorPose3(k - 1, k, self._pose3(T_rel), noise)
        graph.add(factor)
        guess = self._estimate.atPose3(k - 1).matrix() @ T_rel
        values.insert(k, self._pose3(guess))
        self._update(graph, values, kind="reset" if joined_by_reset else "odometry")
        self._factors.append(factor)
        if not joined_by_reset:
            self.stats.odometry_factors += 1
        self.keyframes.append(_Keyframe(int(stamp_ns), pose, cov_local, self._chain))
        self.stats.keyframes = len(self.keyframes)
        return k

    # ------------------------------------------------------------------ loops
    def _anchor(self, stamp_ns: int) -> tuple[int, np.ndarray] | None:
        """(keyframe key, T_keyframe_frame) for the odometry frame at ``stamp_ns`` (exact stamp or within 1 ms)."""
        i = bisect.bisect_left(self._stamps, stamp_ns)
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(self._stamps) and abs(self._stamps[j] - stamp_ns) <= 1_000_000:
                if best is None or abs(self._stamps[j] - stamp_ns) < abs(self._stamps[best] - stamp_ns):
                    best = j
        if best is None:
            return None
        k = self._frame_kf[best]
        kf = self.keyframes[k]
        if kf.chain != self._chains[best]:  # a frame after a reset whose keyframe GTSAM refused
            return None
        return k, invert_transform(kf.odom_pose) @ self._poses[best]

    def _rotation_sigma_between(self, a: int, b: int) -> float:
        """Rough 1-σ (rad) of the odometry's rotation drift between keyframes a < b (per axis)."""
        ka, kb = self.keyframes[min(a, b)], self.keyframes[max(a, b)]
        if ka.chain != kb.chain:
            return float(self.reset_sigmas[3])
        var = (np.trace(kb.cov_local[3:, 3:]) - np.trace(ka.cov_local[3:, 3:])) / 3.0
        return float(np.sqrt(max(var, 0.0)))

    def add_loop(self, query_stamp_ns: int, match_stamp_ns: int, rotation: np.ndarray,
                 direction: np.ndarray | None, covariance: np.ndarray | None = None) -> LoopDecision:
        """A verified loop closure: the query camera's orientation ``rotation`` and unit ``direction``
        to its centre, both in the match camera's frame (as ``Verification`` gives them);
        ``covariance`` [6 x 6] (x y z rx ry rz) of that relative pose, rotation part used when given.
        """
        self.stats.loops_received += 1
        R_meas = np.asarray(rotation, float)
        decide = functools.partial(self._decide, query_stamp_ns, match_stamp_ns, rotation=R_meas,
                                   direction=None if direction is None else np.asarray(direction, float))
        q, m = self._anchor(int(query_stamp_ns)), self._anchor(int(match_stamp_ns))
        if q is None or m is None:
            return decide(-1, -1, False, "unknown_stamp")
        (kq, T_kq_q), (km, T_km_m) = q, m
        if kq == km:
            return decide(kq, km, False, "same_keyframe")
        X, Xi = self.extrinsic, invert_transform(self.extrinsic)
        est = self._estimate
        T_km_kq_est = invert_transform(est.atPose3(km).matrix()) @ est.atPose3(kq).matrix()
        # Predicted camera-to-camera motion (match camera -> query camera) from the current estimate.
        T_mc_qc_est = Xi @ invert_transform(T_km_m) @ T_km_kq_est @ T_kq_q @ X
        rot_err = rotation_angle(T_mc_qc_est[:3, :3].T @ R_meas)
        if rot_err > max(self.loop_max_rotation, 3.0 * self._rotation_sigma_between(km, kq)):
            return decide(kq, km, False, "rotation", rotation_error_deg=np.rad2deg(rot_err))
        # Translation: direction measured, length from the current estimate (clipped); loose along it.
        t_est = T_mc_qc_est[:3, 3]
        cov_cam = np.zeros((6, 6))
        rot_cov = None if covariance is None else np.asarray(covariance, float)[3:, 3:]
        # The verifier's rotation covariance (Sampson errors) is far below its measured errors
        # (bench/results/place-*: about 1 deg median): loop_rotation_sigma_rad is added to it.
        added = np.eye(3) * self.loop_rotation_sigma**2
        cov_cam[3:, 3:] = rot_cov + added if rot_cov is not None and np.all(np.isfinite(rot_cov)) else added
        if direction is not None and np.linalg.norm(direction) > 0:
            d = np.asarray(direction, float) / np.linalg.norm(direction)
            length = float(np.clip(t_est @ d, 0.0, self.loop_max_distance_m))
            t_meas = d * length
            s_perp = max(self.loop_min_translation_sigma, length * self.loop_direction_sigma)
            s_along = max(self.loop_min_translation_sigma, 0.5 * self.loop_max_distance_m)
            P = np.outer(d, d)
            cov_cam[:3, :3] = s_along**2 * P + s_perp**2 * (np.eye(3) - P)
        else:
            t_meas = np.zeros(3)
            cov_cam[:3, :3] = np.eye(3) * (0.5 * self.loop_max_distance_m) ** 2
        T_mc_qc = np.eye(4)
        T_mc_qc[:3, :3], T_mc_qc[:3, 3] = R_meas, t_meas
        # The noise above is about the match camera's axes (a left perturbation); GTSAM's is on the right.
        A_left = adjoint(invert_transform(T_mc_qc))
        cov_cam = A_left @ cov_cam @ A_left.T
        # Into the keyframes' body frames: T_km_kq = T_km_m X T_mc_qc X⁻¹ T_kq_q⁻¹.
        T_post = Xi @ invert_transform(T_kq_q)
        T_meas = T_km_m @ X @ T_mc_qc @ T_post
        A = adjoint(invert_transform(T_post))  # camera-frame perturbation -> query keyframe frame
        cov = A @ cov_cam @ A.T
        g = self._g
        gauss = self._noise(cov)
        factor = g.BetweenFactorPose3(km, kq, self._pose3(T_meas), self._robust(gauss))
        graph = g.NonlinearFactorGraph()
        graph.add(factor)
        try:
            index = int(self._update(graph, g.Values(), kind="loop").getNewFactorsIndices()[0])
            self._factors.append(factor)
            self._converge(kq)
        except FactorRejected:
            if self._factors and self._factors[-1] is factor:  # refused while settling: take it out again
                self._factors.pop()
                self._rebuild()
            return decide(kq, km, False, "solver_error", rotation_error_deg=np.rad2deg(rot_err))
        chi2 = 2.0 * g.BetweenFactorPose3(km, kq, self._pose3(T_meas), gauss).error(self._estimate)
        if not np.isfinite(chi2) or chi2 > self.loop_max_chi2:
            self._factors.pop()
            try:
                self._update(g.NonlinearFactorGraph(), g.Values(), remove=[index], kind="loop")
                self._converge(kq)  # back to the estimate without it
            except FactorRejected:
                pass  # iSAM2 was rebuilt from the accepted factors, which no longer hold it
            return decide(kq, km, False, "chi2", chi2=chi2, rotation_error_deg=np.rad2deg(rot_err))
        return decide(kq, km, True, "accepted", chi2=chi2, rotation_error_deg=np.rad2deg(rot_err))

    def _decide(self, qs: int, ms: int, kq: int, km: int, accepted: bool, reason: str, **kw: Any) -> LoopDecision:
        d = LoopDecision(int(qs), int(ms), kq, km, accepted, reason, **kw)
        self.decisions.append(d)
        if accepted:
            self.stats.loops_accepted += 1
        else:
            self.stats.loops_rejected[reason] = self.stats.loops_rejected.get(reason, 0) + 1
        logger.debug("loop %d -> %d (keyframes %d -> %d): %s%s", ms, qs, km, kq, reason,
                     f", chi2 {d.chi2:.1f}" if np.isfinite(d.chi2) else "")  # counted in stats/diagnostics
        return d

    # ------------------------------------------------------------------ results
    def keyframe_poses(self) -> tuple[np.ndarray, np.ndarray]:
        """(stamps [K], optimised poses [K x 4 x 4] T_map_body) of the keyframes."""
        stamps = np.array([kf.stamp_ns for kf in self.keyframes], np.int64)
        poses = np.array([self._estimate.atPose3(k).matrix() for k in range(len(self.keyframes))]).reshape(-1, 4, 4)
        return stamps, poses

    def map_to_odom(self) -> np.ndarray:
        """T_map_odom: the correction of the latest keyframe (identity before any keyframe)."""
        if not self.keyframes:
            return np.eye(4)
        k = len(self.keyframes) - 1
        return self._estimate.atPose3(k).matrix() @ invert_transform(self.keyframes[k].odom_pose)

    def optimized_trajectory(self) -> tuple[np.ndarray, np.ndarray]:
        """(stamps, poses T_map_body) of every odometry frame: its keyframe's optimised pose + the odometry since."""
        stamps = np.array(self._stamps, np.int64)
        out = np.empty((len(self._stamps), 4, 4))
        cache: dict[int, np.ndarray] = {}
        for i, (pose, k) in enumerate(zip(self._poses, self._frame_kf)):
            if k not in cache:
                cache[k] = self._estimate.atPose3(k).matrix() @ invert_transform(self.keyframes[k].odom_pose)
            out[i] = cache[k] @ pose
        return stamps, out

    def odometry_trajectory(self) -> tuple[np.ndarray, np.ndarray]:
        """(stamps, poses) of the odometry as it came in."""
        return np.array(self._stamps, np.int64), np.array(self._poses).reshape(-1, 4, 4)
