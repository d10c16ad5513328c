"""Step lengths from the ground plane and the relative scale of consecutive steps, fused.

A ground-plane length (:mod:`~deep_vision.estimators.ground_scale`) is metric but noisy: about 8 % per frame on
KITTI, partly correlated from frame to frame. The ratio of two consecutive steps' lengths is measured far better
by the classical scale chain of monocular VO: the points step k-1 (frames k-1 → k) triangulated are tracked on
into frame k+1 and triangulated again with step k's rotation and unit direction; both give their depth in frame
k, and the median of the per-point log ratios is log(|t_k| / |t_k-1|) (:func:`step_length_ratio`; about 1-3 %
RMS and unbiased on the KITTI training ranges and a rendered route,
``bench/results/vo-relative-scale-2026-12-07/``). The ratio alone drifts like any scale chain; the ground alone is
noisy. :class:`LengthFilter` is a Kalman filter on the log
of the step length that predicts with the ratio and corrects with the ground length (Huber-weighted): the ground
keeps the scale metric, the ratios carry it between ground measurements and through frames without one, and a
dropped frame (a step over twice the time) gets twice the length because the tracks say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from deep_vision.estimators.two_view import rotated_residuals, triangulate

#: Lucas-Kanade settings for carrying the previous step's points into the new frame (full resolution).
LK_PARAMS = dict(winSize=(15, 15), maxLevel=3,
                 criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))


def step_depths(R_pc: np.ndarray, t_pc: np.ndarray, K: np.ndarray, p0: np.ndarray,
            p1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth of each correspondence in the previous and in the current camera, for a unit-length step."""
    X = triangulate(R_pc, t_pc, K, p0, p1)
    return X[:, 2], ((X - t_pc) @ R_pc)[:, 2]  # current camera: R_pcᵀ (X - t_pc)


def step_length_ratio(prev_step, step_R: np.ndarray, step_t: np.ndarray, prev_grey: np.ndarray, grey: np.ndarray,
                      K: np.ndarray, min_parallax_px: float = 5.0, min_points: int = 20) -> float | None:
    """log(|t_k| / |t_k-1|), or None where too few points carry it.

    ``prev_step``: step k-1 (a :class:`~deep_vision.estimators.two_view.TwoViewMotion` with its inliers p0, p1;
    p1 lies in ``prev_grey``, frame k); ``step_R``, ``step_t``: step k's rotation and unit direction (frame k →
    ``grey``, frame k+1). Points with less than ``min_parallax_px`` of translation parallax in either step are
    left out (their depth is mostly noise)."""
    K = np.asarray(K, np.float64)
    R_a, t_a = np.asarray(prev_step.R, np.float64), np.asarray(prev_step.t_dir, np.float64)
    if prev_step.p0 is None or len(prev_step.p0) < min_points or np.linalg.norm(t_a) < 1e-9 or \
            np.linalg.norm(step_t) < 1e-9:
        return None
    p0, p1 = np.asarray(prev_step.p0, np.float64), np.asarray(prev_step.p1, np.float64)
    _, z_a = step_depths(R_a, t_a, K, p0, p1)
    keep = np.isfinite(z_a) & (z_a > 0) & (rotated_residuals(R_a, K, p0, p1) > min_parallax_px)
    if keep.sum() < min_points:
        return None
    q0 = p1[keep].astype(np.float32).reshape(-1, 1, 2)
    q1, st, _ = cv2.calcOpticalFlowPyrLK(prev_grey, grey, q0, None, **LK_PARAMS)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(grey, prev_grey, q1, None, **LK_PARAMS)
    ok = (st[:, 0] == 1) & (st2[:, 0] == 1) & (np.linalg.norm(back - q0, axis=2)[:, 0] < 0.5)
    if ok.sum() < min_points:
        return None
    R_b, t_b = np.asarray(step_R, np.float64), np.asarray(step_t, np.float64)
    a, b = q0[ok, 0].astype(np.float64), q1[ok, 0].astype(np.float64)
    z_b, _ = step_depths(R_b, t_b / np.linalg.norm(t_b), K, a, b)
    good = np.isfinite(z_b) & (z_b > 0) & (rotated_residuals(R_b, K, a, b) > min_parallax_px)
    if good.sum() < min_points:
        return None
    return float(np.median(np.log(z_a[keep][ok][good] / z_b[good])))


def huber_update(x: float, P: float, z: float, R: float, huber: float) -> tuple[float, float]:
    """(state, variance) of a scalar Kalman filter after measurement ``z`` of variance ``R``; a measurement beyond
    ``huber`` sigma of the prediction has its variance scaled up by how far beyond it is (Huber weight)."""
    k = abs(z - x) / np.sqrt(P + R)
    if k > huber:
        R *= k / huber
    gain = P / (P + R)
    return x + gain * (z - x), P * (1.0 - gain)


@dataclass
class LengthFilter:
    """Kalman filter on the log of the step length (see the module docstring).

    ``ground_sigma``: a ground length's noise (log units; 7.6 % measured on KITTI training frames);
    ``ratio_sigma``: a measured ratio's (2 %); ``gap_sigma``: the prediction's where no ratio was measured (the
    length then follows the frame interval: constant speed); ``huber``: ground measurements beyond this many
    sigma are down-weighted."""

    ground_sigma: float = 0.076
    ratio_sigma: float = 0.02
    gap_sigma: float = 0.1
    huber: float = 2.0

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._x: float | None = None  # log length of the last step
        self._P = 0.0
        self._dt: float | None = None

    def interrupt(self) -> None:
        """The chain broke (a step without a measured translation): the next ground length sets the length."""
        self._P = max(self._P, 1.0)

    @property
    def length(self) -> float | None:
        return None if self._x is None else float(np.exp(self._x))

    def update(self, dt: float, ground_m: float | None, log_ratio: float | None) -> float | None:
        """The length of a step taking ``dt`` seconds, given its ground length and its ratio to the previous step
        (either may be None); None until a first ground length arrived."""
        dt = max(float(dt), 1e-3)
        z = np.log(ground_m) if ground_m is not None and np.isfinite(ground_m) and ground_m > 0 else None
        if self._x is None:
            if z is None:
                return None
            self._x, self._P = float(z), self.ground_sigma ** 2
        else:
            if log_ratio is not None and np.isfinite(log_ratio):
                self._x += float(log_ratio)
                self._P += self.ratio_sigma ** 2
            else:
                self._x += float(np.log(dt / self._dt))
                self._P += self.gap_sigma ** 2
            if z is not None:
                self._x, self._P = huber_update(self._x, self._P, float(z), self.ground_sigma ** 2, self.huber)
        self._dt = dt
        return self.length


@dataclass
class SpeedFilter:
    """The speed (m/s) carried through frames whose length nothing measured (hybrid mode, ground scale).

    A measured step (a ground length, or the tracks' "no translation") sets the speed. A frame without one predicts
    it unchanged with the variance of ``acceleration_std`` × the frame's interval added (a platform's speed changes
    at most about that fast); where the network runs, its calibrated speed corrects the prediction with the noise
    its lengths show (:meth:`fuse`). Without the network the speed is held: the last
    measured step's, as before the filter. Linear in speed, so standing still (0 m/s) is a state like any other."""

    acceleration_std: float = 1.0
    huber: float = 2.0

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.speed: float | None = None
        self._P = 0.0

    def measured(self, speed: float, rel_sigma: float = 0.05) -> None:
        """A step whose speed was measured (``rel_sigma``: its relative noise)."""
        self.speed = float(speed)
        self._P = (rel_sigma * self.speed) ** 2

    def predict(self, dt: float) -> float | None:
        """The speed over a step of ``dt`` seconds with nothing measured (None before any measurement)."""
        if self.speed is not None:
            self._P += (self.acceleration_std * max(float(dt), 0.0)) ** 2
        return self.speed

    def fuse(self, speed: float, sigma: float) -> float:
        """Correct the predicted speed with a measurement of std ``sigma`` (m/s), down-weighted beyond ``huber``
        sigma (one wild reading does not take the speed with it); returns the new speed."""
        if self.speed is None:
            self.speed, self._P = float(speed), float(sigma) ** 2
            return self.speed
        R = float(sigma) ** 2
        if self._P + R <= 0:
            return self.speed
        speed, self._P = huber_update(self.speed, self._P, float(speed), R, self.huber)
        self.speed = max(0.0, speed)
        return self.speed
