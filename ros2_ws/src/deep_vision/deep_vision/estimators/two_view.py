"""Two-view geometry from tracked features: the classical monocular VO step.

Shi–Tomasi corners in the previous frame are tracked into the current one with
pyramidal Lucas–Kanade (forward–backward checked), then the essential matrix is
estimated with RANSAC and decomposed (``cv2.findEssentialMat`` /
``cv2.recoverPose``, Nistér's five-point solver). The translation comes out as
a unit direction: monocular geometry has no scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class TwoViewMotion:
    """Motion of the current camera relative to the previous one (T_prev_curr), translation unit-length."""

    R: np.ndarray  # [3 x 3] rotation of the current camera in the previous camera's frame
    t_dir: np.ndarray  # [3] unit translation direction, previous camera frame
    inliers: int
    tracked: int
    parallax_px: float  # median feature displacement (low parallax: direction unreliable)


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

    def motion(self, prev: np.ndarray, curr: np.ndarray, K: np.ndarray) -> TwoViewMotion | None:
        """Relative rotation and translation direction, or None when the geometry is not determined."""
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
        return TwoViewMotion(R_pc, t_pc / norm if norm > 0 else t_pc, int(n), int(len(p0)), parallax)
