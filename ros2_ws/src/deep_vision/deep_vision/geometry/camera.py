"""Pinhole camera intrinsics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PinholeCamera:
    """An undistorted pinhole camera (pixel centres at integer coordinates)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

    @property
    def K(self) -> np.ndarray:
        """[3 x 3] calibration matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def P(self) -> np.ndarray:
        """[3 x 4] projection matrix of a monocular camera, K [I | 0]."""
        return np.hstack([self.K, np.zeros((3, 1))])

    @classmethod
    def from_K(cls, K: np.ndarray, width: int, height: int) -> "PinholeCamera":
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        return cls(int(width), int(height), float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project [N x 3] points in the optical frame; returns ([N x 2] pixels, [N] depths)."""
        points = np.asarray(points, dtype=np.float64)
        z = points[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.fx * points[:, 0] / z + self.cx
            v = self.fy * points[:, 1] / z + self.cy
        return np.stack([u, v], axis=1), z

    def scaled(self, sx: float, sy: float | None = None) -> "PinholeCamera":
        """Intrinsics of the image resized by (sx, sy) (pixel-centre convention)."""
        sy = sx if sy is None else sy
        return PinholeCamera(
            width=int(round(self.width * sx)),
            height=int(round(self.height * sy)),
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
        )
