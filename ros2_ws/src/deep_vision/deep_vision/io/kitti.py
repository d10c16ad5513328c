"""KITTI odometry sequences as distributed: ``sequences/XX/{image_0..3, times.txt, calib.txt}``, ``poses/XX.txt``.

``calib.txt`` lines are ``P0: …`` (12 numbers) in the official files; some copies
drop the labels (one 3×4 matrix per line, P0 first). Both are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deep_vision.errors import DatasetError
from deep_vision.geometry.camera import PinholeCamera
from deep_vision.geometry.kitti import read_kitti_poses


def read_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Projection matrices of a KITTI ``calib.txt`` ({"P0": [3 x 4], ...}), labelled or not."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"KITTI calibration not found: {path}")
    out: dict[str, np.ndarray] = {}
    unlabeled = 0
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if ":" in line:
            key, values = line.split(":", 1)
        else:
            key, values = f"P{unlabeled}", line
            unlabeled += 1
        numbers = np.array(values.split(), dtype=np.float64)
        if numbers.size != 12:
            raise DatasetError(f"{path}:{n}: expected 12 numbers for {key.strip()}, got {numbers.size}")
        out[key.strip()] = numbers.reshape(3, 4)
    if "P0" not in out:
        raise DatasetError(f"{path}: no P0 projection matrix")
    return out


#: Frame files a KITTI sequence folder may hold: the official PNGs, or JPEG re-encodes (one format per folder).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class KittiSequence:
    """One KITTI odometry sequence folder (``…/sequences/XX``)."""

    root: Path
    camera_index: int = 0  # 0/1 grey left/right, 2/3 colour left/right
    poses_path: Path | None = None  # default: …/poses/XX.txt when it exists

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.image_dir = self.root / f"image_{self.camera_index}"
        if not self.image_dir.is_dir():
            raise DatasetError(f"KITTI image folder not found: {self.image_dir}")
        self.files = sorted(f for f in self.image_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise DatasetError(f"Could not find any image in root: {self.image_dir}")
        if len({f.stem for f in self.files}) != len(self.files):
            raise DatasetError(f"{self.image_dir}: frames in two formats (the same name as .png and .jpg); keep one")
        times = self.root / "times.txt"
        self.times = np.loadtxt(times, ndmin=1) if times.is_file() else np.arange(len(self.files)) * 0.1
        if len(self.times) < len(self.files):
            raise DatasetError(f"{times}: {len(self.times)} stamps for {len(self.files)} images")
        self.times = self.times[: len(self.files)]
        self.calib = read_calib(self.root / "calib.txt")
        if self.poses_path is None:
            candidate = self.root.parent.parent / "poses" / f"{self.root.name}.txt"
            self.poses_path = candidate if candidate.is_file() else None
        self.poses = read_kitti_poses(self.poses_path)[: len(self.files)] if self.poses_path else None
        if self.poses is not None and len(self.poses) < len(self.files):
            raise DatasetError(f"{self.poses_path}: {len(self.poses)} poses for {len(self.files)} images")

    def __len__(self) -> int:
        return len(self.files)

    @property
    def camera(self) -> PinholeCamera:
        h, w = cv2.imread(str(self.files[0]), cv2.IMREAD_UNCHANGED).shape[:2]
        return PinholeCamera.from_K(self.calib[f"P{self.camera_index}"][:, :3], w, h)

    def image(self, i: int) -> np.ndarray:
        """Frame i: [H x W] uint8 grey (image_0/1) or [H x W x 3] RGB (image_2/3)."""
        return read_image(self.files[i], colour=self.camera_index in (2, 3))


def read_image(path: Path, colour: bool) -> np.ndarray:
    """A KITTI frame (PNG or JPEG; odometry or raw) as [H x W] uint8 grey or, with ``colour``, [H x W x 3] RGB."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise DatasetError(f"cannot read {path}")
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
