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
- **Loop closures** come between frames (any stamps) as the
  ``deep_vision_msgs/LoopClosure`` message carries them: the metric pose of the
  match frame's body in the query frame's body, with a 6×6 covariance. Each end
  is moved to its nearest keyframe with the odometry between them, and the
  closure becomes a between factor with the message's covariance and a robust
  kernel (Cauchy by default), as any back end would add it.
- **Acceptance**: a closure is rejected before it enters the graph when its
  rotation disagrees with the current estimate by more than
  ``loop_max_rotation_deg`` or three times the odometry's rotation drift
  (1 σ, from its covariance) between the two keyframes, whichever is larger;
  with ``loop_max_chi2`` > 0 it is also removed again after the iSAM2 update
  when its Gaussian χ² there exceeds that. Off by default: the robust kernel
  keeps a wrong closure from bending the map (Cauchy: 4 mm in the tests), and
  the χ² test removed right closures wherever the odometry's covariance is too
  small for its real drift (demo route, Huber kernel, before the alignment
  estimated the tilt: 26 of 71 accepted, ATE 8.7 m instead of 3.2 m:
  bench/results/metric-loops-2026-12-06.md).
- **Solver errors**: a factor that GTSAM cannot take (an indeterminate or
  ill-conditioned system, say from a degenerate covariance) is rejected: iSAM2
  is rebuilt from the factors accepted so far at the last estimate, the factor
  is counted in ``stats.rejected_factors`` and logged once per kind, and the
  graph goes on (a failed update leaves iSAM2 unusable otherwise).

Frames: poses are ``T_odom_body`` (the first body pose in the odometry frame);
loop closures are between the same body frames. Tangent vectors and covariances are
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
    reason: str  # accepted | rotation | chi2 | distance | unknown_stamp | same_keyframe | solver_error
    chi2: float = float("nan")
    rotation_error_deg: float = float("nan")  # measured vs current estimate, before the update
    measurement: np.ndarray | None = None  # T_query_match (body frames), as received


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
        loop_max_distance_m: largest plausible distance between the two frames of a loop closure.
        loop_iterations: extra iSAM2 iterations after a loop closure.
        loop_kernel / loop_kernel_width: robust kernel of loop factors (huber | cauchy | none), in σ.
        loop_max_rotation_deg / loop_max_chi2: acceptance tests (see the module docstring).
        reset_sigma_m / reset_sigma_rad: noise of the identity factor joining chains after a reset.
        prior_sigma: noise of the prior fixing the first keyframe.
    """

    def __init__(self, *, keyframe_distance_m: float = 2.0, keyframe_angle_deg: float = 10.0,
                 loop_max_distance_m: float = 10.0, loop_iterations: int = 10,
                 loop_kernel: str = "cauchy", loop_kernel_width: float = 2.0, loop_max_rotation_deg: float = 10.0,
                 loop_max_chi2: float = 0.0, reset_sigma_m: float = 50.0, reset_sigma_rad: float = 1.0,
                 prior_sigma: float = 1e-4, min_variance: float = 1e-8, relinearize_threshold: float = 0.01) -> None:
        if keyframe_distance_m <= 0 and keyframe_angle_deg <= 0:
            raise ConfigError("pose graph: keyframe_distance_m or keyframe_angle_deg must be positive")
        if loop_kernel not in ("huber", "cauchy", "none"):
            raise ConfigError(f"pose graph: loop_kernel must be huber, cauchy or none, got {loop_kernel!r}")
        gtsam = _gtsam()
        self._g = gtsam
        self.keyframe_distance_m = float(keyframe_distance_m)
        self.keyframe_angle = np.deg2rad(keyframe_angle_deg)
        self.loop_max_distance_m = float(loop_max_distance_m)
        self.loop_iterations = int(loop_iterations)
        self.loop_kernel = loop_kernel
        self.loop_kernel_width = float(loop_kernel_width)
        self.loop_max_rotation = np.deg2rad(loop_max_rotation_deg)
        self.loop_max_chi2 = float(loop_max_chi2)
        self.reset_sigmas = np.array([reset_sigma_m] * 3 + [reset_sigma_rad] * 3, float)
        self.prior_sigma = float(prior_sigma)
        self.min_variance = float(min_variance)
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

    def add_loop(self, query_stamp_ns: int, match_stamp_ns: int, T_query_match: np.ndarray,
                 covariance: np.ndarray) -> LoopDecision:
        """A verified metric loop closure, as ``deep_vision_msgs/LoopClosure`` carries it: ``T_query_match``, the
        match frame's body pose in the query frame's body frame, and its [6 x 6] covariance (x y z rx ry rz) as a
        left perturbation about the query body's axes. Becomes a between factor of the two nearest keyframes
        (robust kernel), gated by rotation before and by χ² after the update.
        """
        self.stats.loops_received += 1
        T_meas = np.asarray(T_query_match, float)
        decide = functools.partial(self._decide, query_stamp_ns, match_stamp_ns, measurement=T_meas.copy())
        q, m = self._anchor(int(query_stamp_ns)), self._anchor(int(match_stamp_ns))
        if q is None or m is None:
            return decide(-1, -1, False, "unknown_stamp")
        (kq, T_kq_q), (km, T_km_m) = q, m
        if kq == km:
            return decide(kq, km, False, "same_keyframe")
        if np.linalg.norm(T_meas[:3, 3]) > self.loop_max_distance_m:
            return decide(kq, km, False, "distance")
        est = self._estimate
        T_kq_km_est = invert_transform(est.atPose3(kq).matrix()) @ est.atPose3(km).matrix()
        T_qm_est = invert_transform(T_kq_q) @ T_kq_km_est @ T_km_m  # predicted from the current estimate
        rot_err = rotation_angle(T_qm_est[:3, :3].T @ T_meas[:3, :3])
        if rot_err > max(self.loop_max_rotation, 3.0 * self._rotation_sigma_between(km, kq)):
            return decide(kq, km, False, "rotation", rotation_error_deg=np.rad2deg(rot_err))
        # Left perturbation about the query axes -> GTSAM's right perturbation of T_kq_km = T_kq_q T T_km_m⁻¹:
        # T exp(ξ) = exp(Ad(T) ξ) T, and moving past T_km_m⁻¹ on the right multiplies by Ad(T_km_m).
        T_kf = T_kq_q @ T_meas @ invert_transform(T_km_m)
        A = adjoint(T_km_m) @ adjoint(invert_transform(T_meas))
        cov = A @ np.asarray(covariance, float) @ A.T
        g = self._g
        gauss = self._noise(cov)
        factor = g.BetweenFactorPose3(kq, km, self._pose3(T_kf), self._robust(gauss))
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
        chi2 = 2.0 * g.BetweenFactorPose3(kq, km, self._pose3(T_kf), gauss).error(self._estimate)
        if not np.isfinite(chi2) or 0 < self.loop_max_chi2 < chi2:
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
