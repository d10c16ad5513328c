"""Two-view geometry from tracked features: the classical monocular VO step.

Shi–Tomasi corners in the previous frame are tracked into the current one with
pyramidal Lucas–Kanade (forward–backward checked), then the essential matrix is
estimated with RANSAC and decomposed (``cv2.findEssentialMat`` /
``cv2.recoverPose``, Nistér's five-point solver). The translation comes out as
a unit direction: monocular geometry has no scale.

With a motion prior (e.g. the VO network's step), ``motion(..., prior=)``
checks it against the tracks: its rotation is refined on the tracks it explains
(Sampson distance under ``prior_inlier_px``; the distance is minimised over the
rotation, robust loss, the prior's translation direction held); if the refined
prior then explains at least ``prior_support`` times as many tracks as the
RANSAC solution at RANSAC's threshold, it is kept: refined rotation, the
prior's direction. This breaks the ties of
near-degenerate geometry (repetitive texture, a dominant plane, small
baselines) that RANSAC resolves wrongly, while a prior the images contradict
is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from deep_vision.geometry.transforms import skew


@dataclass
class TwoViewMotion:
    """Motion of the current camera relative to the previous one (T_prev_curr), translation unit-length."""

    R: np.ndarray  # [3 x 3] rotation of the current camera in the previous camera's frame
    t_dir: np.ndarray  # [3] unit translation direction, previous camera frame
    inliers: int
    tracked: int
    parallax_px: float  # median feature displacement (low parallax: direction unreliable)
    source: str = "geometry"  # geometry | prior (rotation re-estimated on the prior's tracks, prior direction)
    prior_support: float | None = None  # tracks the prior explains / tracks the RANSAC solution explains
    R_geometry: np.ndarray | None = None  # RANSAC's rotation (R itself when source is geometry)

    def __post_init__(self) -> None:
        if self.R_geometry is None:
            self.R_geometry = self.R


def fundamental_from_motion(R_pc: np.ndarray, t_pc: np.ndarray, K: np.ndarray) -> np.ndarray:
    """F with x_currᵀ F x_prev = 0 (pixels) for the current camera at (R_pc, t_pc) in the previous frame."""
    R = R_pc.T
    t = -R_pc.T @ np.asarray(t_pc, dtype=np.float64).reshape(3)
    K_inv = np.linalg.inv(K)
    return K_inv.T @ skew(t) @ R @ K_inv


def sampson_error(F: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Signed first-order geometric error of each match (p0[i] → p1[i], [N x 2]) to the epipolar geometry
    x1ᵀ F x0 = 0, in the points' units (pixels for a fundamental matrix, normalised coordinates for an
    essential matrix); its absolute value is the Sampson distance."""
    x0 = np.c_[p0, np.ones(len(p0))]
    x1 = np.c_[p1, np.ones(len(p1))]
    Fx0 = x0 @ F.T
    Ftx1 = x1 @ F
    den = np.sqrt(Fx0[:, 0] ** 2 + Fx0[:, 1] ** 2 + Ftx1[:, 0] ** 2 + Ftx1[:, 1] ** 2) + 1e-15
    return np.sum(x1 * Fx0, axis=1) / den


def refine_rotation(R_pc: np.ndarray, t_pc: np.ndarray, K: np.ndarray, p0: np.ndarray, p1: np.ndarray,
                    scale_px: float = 2.0) -> np.ndarray:
    """Rotation near ``R_pc`` minimising the Sampson distances of the tracks with the direction ``t_pc`` held
    (scipy least squares, soft-L1 loss of scale ``scale_px``); ``R_pc`` itself if the solver fails."""
    from scipy.optimize import least_squares
    from scipy.spatial.transform import Rotation

    def residuals(w: np.ndarray) -> np.ndarray:
        R = R_pc @ Rotation.from_rotvec(w).as_matrix()
        return sampson_error(fundamental_from_motion(R, t_pc, K), p0, p1)

    sol = least_squares(residuals, np.zeros(3), loss="soft_l1", f_scale=scale_px, x_scale=1e-3, max_nfev=30)
    if not sol.success or not np.all(np.isfinite(sol.x)):
        return R_pc
    return R_pc @ Rotation.from_rotvec(sol.x).as_matrix()


@dataclass
class FeatureTracker:
    max_corners: int = 1500
    quality: float = 0.01
    min_distance: int = 8
    lk_window: int = 21
    lk_levels: int = 3
    fb_max_px: float = 1.0  # forward-backward tracking error allowed
    ransac_px: float = 1.0  # essential-matrix RANSAC threshold
    min_inliers: int = 30
    prior_inlier_px: float = 2.0  # Sampson distance under which a track supports a hypothesis (prior check)
    prior_support: float = 0.8  # the refined prior is used when it explains this fraction of RANSAC's support

    def track(self, prev: np.ndarray, curr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Matched points ([N x 2] in prev, [N x 2] in curr), grey uint8 frames."""
        pts = cv2.goodFeaturesToTrack(prev, self.max_corners, self.quality, self.min_distance, blockSize=7)
        if pts is None or len(pts) < 8:
            return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
        lk = dict(winSize=(self.lk_window, self.lk_window), maxLevel=self.lk_levels,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
        nxt, st, _ = cv2.calcOpticalFlowPyrLK(prev, curr, pts, None, **lk)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(curr, prev, nxt, None, **lk)
        ok = (st[:, 0] == 1) & (st2[:, 0] == 1) & (np.linalg.norm(back - pts, axis=2)[:, 0] < self.fb_max_px)
        return pts[ok, 0], nxt[ok, 0]

    def motion(self, prev: np.ndarray, curr: np.ndarray, K: np.ndarray,
               prior: tuple[np.ndarray, np.ndarray] | None = None) -> TwoViewMotion | None:
        """Relative rotation and translation direction, or None when the geometry is not determined.

        ``prior``: (R_pc, t_pc), a guess of the same motion (see the module docstring).
        """
        p0, p1 = self.track(prev, curr)
        if len(p0) < max(8, self.min_inliers):
            return None
        parallax = float(np.median(np.linalg.norm(p1 - p0, axis=1)))
        E, mask = cv2.findEssentialMat(p0, p1, K, method=cv2.RANSAC, prob=0.999, threshold=self.ransac_px)
        if E is None or E.shape != (3, 3) or mask is None:
            return None
        n, R, t, mask = cv2.recoverPose(E, p0, p1, K, mask=mask)
        if n < self.min_inliers:
            return None
        # recoverPose gives x_curr = R x_prev + t; the current camera in the previous frame is (Rᵀ, -Rᵀ t).
        R_pc = R.T
        t_pc = (-R.T @ t).reshape(3)
        norm = np.linalg.norm(t_pc)
        geometry = TwoViewMotion(R_pc, t_pc / norm if norm > 0 else t_pc, int(n), int(len(p0)), parallax)
        if prior is None or np.linalg.norm(prior[1]) < 1e-9:
            return geometry
        return self._check_prior(geometry, p0, p1, K, prior)

    def _check_prior(self, geometry: TwoViewMotion, p0: np.ndarray, p1: np.ndarray, K: np.ndarray,
                     prior: tuple[np.ndarray, np.ndarray]) -> TwoViewMotion:
        R_prior, t_prior = np.asarray(prior[0], np.float64), np.asarray(prior[1], np.float64).reshape(3)
        t_dir = t_prior / np.linalg.norm(t_prior)

        def support(R: np.ndarray, t: np.ndarray, px: float) -> np.ndarray:
            return np.abs(sampson_error(fundamental_from_motion(R, t, K), p0, p1)) < px

        # Stage 1, loose: the tracks the prior explains, on which its rotation is refined (direction held).
        prior_in = support(R_prior, t_dir, self.prior_inlier_px)
        if prior_in.sum() < self.min_inliers:
            geometry.prior_support = 0.0
            return geometry
        R = refine_rotation(R_prior, t_dir, K, p0[prior_in], p1[prior_in], self.prior_inlier_px)
        # Stage 2, at RANSAC's threshold: the refined prior must explain the tracks about as well as RANSAC's
        # solution — a wrong direction cannot be absorbed by the rotation.
        ratio = float(support(R, t_dir, self.ransac_px).sum()) / max(1, int(support(geometry.R, geometry.t_dir,
                                                                                     self.ransac_px).sum()))
        geometry.prior_support = ratio
        if ratio < self.prior_support:
            return geometry
        return TwoViewMotion(R, t_dir, int(prior_in.sum()), geometry.tracked, geometry.parallax_px, "prior", ratio,
                             geometry.R)
