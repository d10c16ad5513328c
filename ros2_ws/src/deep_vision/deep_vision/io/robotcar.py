"""Oxford RobotCar run folders, as the dataset and its SDK (ori-mrg/robotcar-dataset-sdk) lay them out.

- images: ``stereo/centre|left|right/<µs>.png`` or ``mono_left|right|rear/<µs>.png``, Bayer (GBRG) PNGs;
  timestamps in ``stereo.timestamps`` / ``mono_*.timestamps`` (``<µs> <chunk>`` per line) or the file names;
- camera models (SDK ``models/<name>.txt``): ``fx fy cx cy`` then the 4×4 ``G_camera_image``
  (image frame → camera frame); ``stereo/centre`` uses ``stereo_narrow_left``, ``left`` ``stereo_wide_left``,
  ``right`` ``stereo_wide_right`` (as the SDK's CameraModel);
- extrinsics (SDK ``extrinsics/<sensor>.txt``): ``x y z roll pitch yaw`` of the sensor in the vehicle frame
  (the stereo camera's: x forward, y right, z down);
- ground truth: ``gps/ins.csv`` (northing, easting, down, roll, pitch, yaw of the INS; latitude/longitude) or
  ``vo/vo.csv`` (relative poses chained as the SDK does: ``abs = abs_prev · T(x, y, z, roll, pitch, yaw)``).

Distortion: the SDK undistorts with look-up tables that are not part of the camera models; CameraInfo here
carries the pinhole intrinsics only.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from deep_vision.errors import DatasetError
from deep_vision.geometry.camera import PinholeCamera

MODEL_FOR_CAMERA = {"stereo/centre": "stereo_narrow_left", "stereo/left": "stereo_wide_left",
                    "stereo/right": "stereo_wide_right", "mono_left": "mono_left", "mono_right": "mono_right",
                    "mono_rear": "mono_rear"}
BAYER_ENCODING = "bayer_gbrg8"  # RobotCar's Bayer pattern (SDK: demosaic(img, 'gbrg'))


def se3_from_xyzrpy(x: float, y: float, z: float, roll: float, pitch: float, yaw: float) -> np.ndarray:
    """The SDK's ``build_se3_transform``: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("ZYX", [yaw, pitch, roll]).as_matrix()
    T[:3, 3] = [x, y, z]
    return T


def read_camera_model(path: str | Path, width: int, height: int) -> tuple[PinholeCamera, np.ndarray]:
    """(intrinsics, G_camera_image [4 x 4]) of an SDK camera-model file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"RobotCar camera model not found: {path}")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if len(rows) < 5 or len(rows[0]) != 4:
        raise DatasetError(f"{path}: expected 'fx fy cx cy' and a 4x4 G_camera_image")
    fx, fy, cx, cy = (float(v) for v in rows[0])
    G = np.array([[float(v) for v in r] for r in rows[1:5]])
    return PinholeCamera(width, height, fx, fy, cx, cy), G


def read_extrinsics(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"RobotCar extrinsics not found: {path}")
    values = [float(v) for v in path.read_text().split()]
    if len(values) != 6:
        raise DatasetError(f"{path}: expected 'x y z roll pitch yaw', got {len(values)} numbers")
    return se3_from_xyzrpy(*values)


@dataclass
class InsTrack:
    stamps_us: np.ndarray
    poses: np.ndarray  # [N x 4 x 4] INS pose in the local NED frame (northing, easting, down)
    lla: np.ndarray  # [N x 3] latitude, longitude, altitude

    def interpolate(self, stamps_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Poses and lat/lon/alt at ``stamps_us`` (linear / slerp; stamps outside the track are clamped)."""
        t = np.clip(stamps_us, self.stamps_us[0], self.stamps_us[-1]).astype(np.float64)
        pos = np.stack([np.interp(t, self.stamps_us, self.poses[:, i, 3]) for i in range(3)], axis=1)
        rot = Slerp(self.stamps_us.astype(np.float64), Rotation.from_matrix(self.poses[:, :3, :3]))(t).as_matrix()
        T = np.tile(np.eye(4), (len(t), 1, 1))
        T[:, :3, :3], T[:, :3, 3] = rot, pos
        lla = np.stack([np.interp(t, self.stamps_us, self.lla[:, i]) for i in range(3)], axis=1)
        return T, lla


def read_ins(path: str | Path) -> InsTrack:
    """``gps/ins.csv`` → INS track (pose from northing/easting/down + roll/pitch/yaw, as the SDK)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"RobotCar INS file not found: {path}")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    need = {"timestamp", "latitude", "longitude", "altitude", "northing", "easting", "down", "roll", "pitch", "yaw"}
    if not rows or not need <= set(rows[0]):
        raise DatasetError(f"{path}: expected columns {sorted(need)}")
    stamps = np.array([int(r["timestamp"]) for r in rows], dtype=np.int64)
    origin = np.array([float(rows[0]["northing"]), float(rows[0]["easting"]), float(rows[0]["down"])])
    poses = np.stack([se3_from_xyzrpy(float(r["northing"]) - origin[0], float(r["easting"]) - origin[1],
                                      float(r["down"]) - origin[2], float(r["roll"]), float(r["pitch"]), float(r["yaw"]))
                      for r in rows])
    lla = np.array([[float(r["latitude"]), float(r["longitude"]), float(r["altitude"])] for r in rows])
    order = np.argsort(stamps)
    return InsTrack(stamps[order], poses[order], lla[order])


def read_vo(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``vo/vo.csv`` → (stamps µs, [N x 4 x 4] vehicle poses relative to the first), chained as the SDK."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"RobotCar VO file not found: {path}")
    with path.open() as f:
        reader = csv.reader(f)
        next(reader, None)
        rows = [r for r in reader if r]
    if not rows:
        raise DatasetError(f"{path}: no rows")
    stamps = [int(rows[0][1])]  # destination of the first row: the origin
    poses = [np.eye(4)]
    for r in rows:
        poses.append(poses[-1] @ se3_from_xyzrpy(*(float(v) for v in r[2:8])))
        stamps.append(int(r[0]))
    return np.array(stamps, dtype=np.int64), np.stack(poses)


@dataclass
class RobotCarRun:
    """One camera of a RobotCar run folder."""

    root: Path
    camera: str = "stereo/centre"
    models_dir: Path | None = None  # default: <root>/models, then <root>/../models
    extrinsics_dir: Path | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.camera not in MODEL_FOR_CAMERA:
            raise DatasetError(f"unknown RobotCar camera {self.camera!r}; one of {', '.join(MODEL_FOR_CAMERA)}")
        self.image_dir = self.root / self.camera
        files = sorted(self.image_dir.glob("*.png"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
        files = [f for f in files if re.fullmatch(r"\d+", f.stem)]
        if not files:
            raise DatasetError(f"Could not find any image in root: {self.image_dir}")
        self.files = files
        ts_file = self.root / f"{self.camera.split('/')[0]}.timestamps"
        self.stamps_us = np.array([int(f.stem) for f in files], dtype=np.int64)
        if ts_file.is_file():
            listed = {int(line.split()[0]) for line in ts_file.read_text().splitlines() if line.strip()}
            missing = [t for t in self.stamps_us if t not in listed]
            if missing:
                raise DatasetError(f"{ts_file}: {len(missing)} image(s) not listed, e.g. {missing[0]}")
        self.models_dir = self._find_dir(self.models_dir, "models")
        self.extrinsics_dir = self._find_dir(self.extrinsics_dir, "extrinsics")

    def _find_dir(self, given: Path | None, name: str) -> Path:
        for candidate in ([Path(given)] if given else [self.root / name, self.root.parent / name]):
            if candidate.is_dir():
                return candidate
        raise DatasetError(f"no {name} folder for {self.root} (pass it explicitly; the SDK ships it)")

    def __len__(self) -> int:
        return len(self.files)

    def raw(self, i: int) -> np.ndarray:
        """Frame i as stored: [H x W] uint8 Bayer (GBRG)."""
        img = cv2.imread(str(self.files[i]), cv2.IMREAD_UNCHANGED)
        if img is None or img.ndim != 2:
            raise DatasetError(f"cannot read a single-channel Bayer image from {self.files[i]}")
        return img

    def camera_model(self) -> tuple[PinholeCamera, np.ndarray]:
        h, w = self.raw(0).shape
        return read_camera_model(self.models_dir / f"{MODEL_FOR_CAMERA[self.camera]}.txt", w, h)

    def T_vehicle_optical(self) -> np.ndarray:
        """Camera optical (image) frame in the vehicle frame: extrinsics · G_camera_image."""
        sensor = "stereo" if self.camera.startswith("stereo") else self.camera
        _, G = self.camera_model()
        return read_extrinsics(self.extrinsics_dir / f"{sensor}.txt") @ G
