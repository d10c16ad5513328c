"""Classical homography baselines: local features (SIFT or ORB) + RANSAC (OpenCV)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from deep_vision.errors import ConfigError


@dataclass
class FeatureHomography:
    """Homography from keypoint matches: Lowe's ratio test, then RANSAC (``cv2.findHomography``)."""

    method: str = "sift"  # sift | orb
    max_features: int = 2000
    ratio: float = 0.8  # Lowe's ratio test threshold
    ransac_px: float = 3.0  # RANSAC reprojection threshold
    min_inliers: int = 8

    def __post_init__(self) -> None:
        if self.method == "sift":
            self._detector = cv2.SIFT_create(nfeatures=self.max_features)
            self._norm = cv2.NORM_L2
        elif self.method == "orb":
            self._detector = cv2.ORB_create(nfeatures=self.max_features)
            self._norm = cv2.NORM_HAMMING
        else:
            raise ConfigError(f"unknown feature method {self.method!r}; choose sift or orb")
        self._matcher = cv2.BFMatcher(self._norm)
        self.last_inliers = 0

    def estimate(self, prev: np.ndarray, curr: np.ndarray) -> np.ndarray | None:
        """H mapping ``prev`` pixels into ``curr`` (grey uint8), or None when too few inliers."""
        self.last_inliers = 0
        kp1, d1 = self._detector.detectAndCompute(prev, None)
        kp2, d2 = self._detector.detectAndCompute(curr, None)
        if d1 is None or d2 is None or len(kp1) < 4 or len(kp2) < 2:
            return None
        good = [m[0] for m in self._matcher.knnMatch(d1, d2, k=2) if len(m) == 2 and m[0].distance < self.ratio * m[1].distance]
        if len(good) < self.min_inliers:
            return None
        src = np.float32([kp1[m.queryIdx].pt for m in good])
        dst = np.float32([kp2[m.trainIdx].pt for m in good])
        H, mask = cv2.findHomography(src, dst, cv2.RANSAC, self.ransac_px)
        if H is None or mask is None or int(mask.sum()) < self.min_inliers:
            return None
        self.last_inliers = int(mask.sum())
        return H / H[2, 2]
