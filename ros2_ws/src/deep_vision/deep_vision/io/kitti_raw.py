"""KITTI raw drives as distributed: ``<date>/<date>_drive_NNNN_{sync,extract}/`` and the date's calibration.

Layout (raw data devkit, ``readme.txt``):

- ``image_00..03/data/NNNNNNNNNN.png`` (00/01 grey, 02/03 colour), one line a frame in ``image_0X/timestamps.txt``;
- ``oxts/data/NNNNNNNNNN.txt``: one line of the 30 numbers of :data:`OXTS_FIELDS`; ``oxts/timestamps.txt``;
- in the date folder: ``calib_cam_to_cam.txt``, ``calib_imu_to_velo.txt``, ``calib_velo_to_cam.txt``,
  ``key: numbers`` lines (``calib_time: …`` is text and skipped).

Timestamps read ``2011-09-26 13:02:25.964389445``; they carry no zone and are read as UTC, nanoseconds kept.
``*_sync`` images are rectified (intrinsics ``P_rect_0X``, size ``S_rect_0X``) and their oxts rows were resampled to
the frames; ``*_extract`` images are raw (``K_0X``, plumb_bob ``D_0X``, ``S_0X``, pose ``R_0X|T_0X``) and their oxts
run at 100 Hz. In both, a frame gets the oxts row nearest in time (:meth:`OxtsTrack.nearest`).

OXTS conventions (devkit): the IMU frame is x forward, y left, z up (REP 103); roll 0 level, positive left side up;
pitch positive front down; yaw 0 east, positive counter-clockwise: the IMU's attitude in east-north-up is
Rz(yaw) Ry(pitch) Rx(roll). ``vf, vl, vu`` and ``wf, wl, wu`` are along forward/left/up axes that follow the heading
but stay level; ``vx…``/``wx…`` along the body axes.
"""

from __future__ import annotations

import calendar
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deep_vision.errors import DatasetError
from deep_vision.geometry.camera import PinholeCamera
from deep_vision.geometry.transforms import make_transform, rotation_from_euler_zyx
from deep_vision.io.kitti import read_image

logger = logging.getLogger(__name__)

OXTS_FIELDS = ("lat", "lon", "alt", "roll", "pitch", "yaw", "vn", "ve", "vf", "vl", "vu", "ax", "ay", "az", "af",
               "al", "au", "wx", "wy", "wz", "wf", "wl", "wu", "posacc", "velacc", "navstat", "numsats", "posmode",
               "velmode", "orimode")
_COL = {name: i for i, name in enumerate(OXTS_FIELDS)}
_STAMP = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?")


def read_timestamps(path: str | Path) -> np.ndarray:
    """[N] int64 nanoseconds since the epoch of a KITTI raw ``timestamps.txt`` (UTC; trailing blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"KITTI raw timestamps not found: {path}")
    lines = path.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    out = np.empty(len(lines), np.int64)
    for n, line in enumerate(lines, start=1):
        m = _STAMP.fullmatch(line.strip())
        try:
            seconds = calendar.timegm(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) if m else None
        except ValueError:
            seconds = None
        if seconds is None:
            raise DatasetError(f"{path}:{n}: expected 'YYYY-MM-DD hh:mm:ss.fffffffff', got {line.strip()!r}")
        out[n - 1] = seconds * 1_000_000_000 + int((m[2] or "0").ljust(9, "0"))
    return out


def read_calib_file(path: str | Path) -> dict[str, np.ndarray]:
    """The ``key: numbers`` lines of a KITTI raw calibration file ({"P_rect_00": [12], ...}); ``calib_time`` skipped."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"KITTI raw calibration not found: {path}")
    out: dict[str, np.ndarray] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, values = line.partition(":")
        key = key.strip()
        if not sep:
            raise DatasetError(f"{path}:{n}: expected 'key: numbers', got {line.strip()[:60]!r}")
        if key == "calib_time":
            continue
        try:
            out[key] = np.array(values.split(), dtype=np.float64)
        except ValueError:
            raise DatasetError(f"{path}:{n}: {key}: expected numbers, got {values.strip()[:60]!r}") from None
    return out


def _entry(calib: dict[str, np.ndarray], path: Path, key: str, size: int) -> np.ndarray:
    if key not in calib:
        raise DatasetError(f"{path}: no {key}")
    if calib[key].size != size:
        raise DatasetError(f"{path}: {key}: expected {size} numbers, got {calib[key].size}")
    return calib[key]


def _rigid(path: Path) -> np.ndarray:
    """[4 x 4] transform of a calibration file with ``R`` (9, row-major) and ``T`` (3): x_to = R x_from + T."""
    calib = read_calib_file(path)
    return make_transform(_entry(calib, path, "R", 9).reshape(3, 3), _entry(calib, path, "T", 3))


@dataclass
class RawCameraCalibration:
    """One camera of a KITTI raw calibration."""

    K: np.ndarray  # [3 x 3] intrinsics of the stored images
    size: tuple[int, int]  # (width, height) the calibration was made for (S_rect_0X or S_0X)
    distortion: np.ndarray | None  # [5] plumb_bob (k1, k2, p1, p2, k3) of raw images; None for rectified ones
    T_cam_imu: np.ndarray  # [4 x 4] camera optical frame from the IMU (OXTS) frame


def read_raw_calibration(calib_dir: str | Path, camera_index: int, rectified: bool = True) -> RawCameraCalibration:
    """Camera ``camera_index`` (0-3) of the three calibration files in ``calib_dir`` (a date folder).

    Chain (devkit): x_cam0 = T_velo_to_cam · T_imu_to_velo · x_imu (unrectified camera 0). Rectified camera X:
    x = P_rect_0X · R_rect_00 · x_cam0 with P_rect_0X = K [I | t], so x_camX = R_rect_00 x_cam0 + t,
    t = K⁻¹ P_rect_0X[:, 3]. That is the devkit's baseline offset b = P[0, 3] / P[0, 0] along x when
    P[1:, 3] = 0 (cameras 0 and 1); cameras 2 and 3 also have small y/z terms, kept here. Raw camera X:
    x_camX = R_0X x_cam0 + T_0X.
    """
    calib_dir = Path(calib_dir)
    if camera_index not in (0, 1, 2, 3):
        raise DatasetError(f"KITTI raw camera index must be 0-3, got {camera_index}")
    cam_path = calib_dir / "calib_cam_to_cam.txt"
    cam = read_calib_file(cam_path)
    T_cam0_imu = _rigid(calib_dir / "calib_velo_to_cam.txt") @ _rigid(calib_dir / "calib_imu_to_velo.txt")
    x = f"{camera_index:02d}"
    if rectified:
        P = _entry(cam, cam_path, f"P_rect_{x}", 12).reshape(3, 4)
        K = P[:, :3]
        T_camx_cam0 = (make_transform(np.eye(3), np.linalg.solve(K, P[:, 3]))
                       @ make_transform(_entry(cam, cam_path, "R_rect_00", 9).reshape(3, 3), np.zeros(3)))
        size, distortion = _entry(cam, cam_path, f"S_rect_{x}", 2), None
    else:
        K = _entry(cam, cam_path, f"K_{x}", 9).reshape(3, 3)
        T_camx_cam0 = make_transform(_entry(cam, cam_path, f"R_{x}", 9).reshape(3, 3),
                                     _entry(cam, cam_path, f"T_{x}", 3))
        size, distortion = _entry(cam, cam_path, f"S_{x}", 2), _entry(cam, cam_path, f"D_{x}", 5)
    width, height = (int(v) for v in np.rint(size))
    return RawCameraCalibration(K, (width, height), distortion, T_camx_cam0 @ T_cam0_imu)


@dataclass
class OxtsTrack:
    """OXTS rows in time order."""

    stamps_ns: np.ndarray  # [N] int64
    values: np.ndarray  # [N x 30] in the order of OXTS_FIELDS

    def column(self, name: str) -> np.ndarray:
        return self.values[:, _COL[name]]

    def nearest(self, stamps_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([M] row indices nearest in time to ``stamps_ns``, [M] their absolute gaps in ns)."""
        stamps_ns = np.asarray(stamps_ns, np.int64)
        i = np.clip(np.searchsorted(self.stamps_ns, stamps_ns), 0, len(self.stamps_ns) - 1)
        j = np.clip(i - 1, 0, len(self.stamps_ns) - 1)
        best = np.where(np.abs(self.stamps_ns[i] - stamps_ns) <= np.abs(self.stamps_ns[j] - stamps_ns), i, j)
        return best, np.abs(self.stamps_ns[best] - stamps_ns)


def read_oxts(oxts_dir: str | Path) -> OxtsTrack:
    """``oxts/data/NNNNNNNNNN.txt`` with ``oxts/timestamps.txt`` (line NNNNNNNNNN + 1 stamps file NNNNNNNNNN)."""
    oxts_dir = Path(oxts_dir)
    if not (oxts_dir / "data").is_dir():
        raise DatasetError(f"KITTI raw oxts folder not found: {oxts_dir / 'data'}")
    files = sorted(f for f in (oxts_dir / "data").glob("*.txt") if f.stem.isdigit())
    if not files:
        raise DatasetError(f"Could not find any oxts file in: {oxts_dir / 'data'}")
    stamps = _stamps_of(files, read_timestamps(oxts_dir / "timestamps.txt"), oxts_dir / "timestamps.txt")
    rows = np.empty((len(files), len(OXTS_FIELDS)))
    for k, f in enumerate(files):
        lines = [line for line in f.read_text().splitlines() if line.strip()]
        try:
            numbers = [float(v) for v in lines[0].split()] if len(lines) == 1 else []
        except ValueError:
            numbers = []
        if len(numbers) != len(OXTS_FIELDS):
            got = f"{len(lines)} lines" if len(lines) != 1 else f"{lines[0].strip()[:60]!r}"
            raise DatasetError(f"{f}:1: expected one line of {len(OXTS_FIELDS)} numbers "
                               f"({' '.join(OXTS_FIELDS[:3])} … {OXTS_FIELDS[-1]}), got {got}")
        rows[k] = numbers
    order = np.argsort(stamps, kind="stable")
    return OxtsTrack(stamps[order], rows[order])


def _stamps_of(files: list[Path], stamps: np.ndarray, stamps_path: Path) -> np.ndarray:
    """The stamp of each data file: the line its number names (the files of a drive may start past 0)."""
    index = np.array([int(f.stem) for f in files])
    if index.max() >= len(stamps):
        raise DatasetError(f"{stamps_path}: {len(stamps)} stamps, but {files[int(np.argmax(index))]} needs "
                           f"line {index.max() + 1}")
    return stamps[index]


def oxts_poses_enu(track: OxtsTrack, rows: np.ndarray, origin_row: int) -> np.ndarray:
    """[M x 4 x 4] T_enu_imu of ``rows``: attitude Rz(yaw) Ry(pitch) Rx(roll), position in east-north-up metres
    (:class:`~deep_vision.estimators.geolocation.LocalTangentPlane`, WGS-84 through ECEF) around ``origin_row``.

    The devkit's ``convertOxtsToPose`` uses a Mercator projection of a sphere, scaled at the first latitude,
    instead; distances differ by a few parts per thousand (sphere vs WGS-84 ellipsoid, Mercator scale). Yaw is
    taken from the local east at each row; over a drive (km) its turn from the origin's east is ~1e-4 rad.
    """
    from deep_vision.estimators.geolocation import LocalTangentPlane

    lat, lon, alt = (track.column(c) for c in ("lat", "lon", "alt"))
    plane = LocalTangentPlane(lat[origin_row], lon[origin_row], alt[origin_row])
    T = np.tile(np.eye(4), (len(rows), 1, 1))
    T[:, :3, :3] = rotation_from_euler_zyx(np.stack([track.column(c)[rows] for c in ("yaw", "pitch", "roll")], 1))
    T[:, :3, 3] = plane.to_enu(lat[rows], lon[rows], alt[rows])
    return T


def oxts_body_twist(track: OxtsTrack, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([M x 3] linear m/s, [M x 3] angular rad/s) of ``rows`` in the IMU (body) frame.

    ``vf vl vu`` / ``wf wl wu`` are along level axes that follow the heading; the body frame is that frame turned by
    Ry(pitch) Rx(roll), so v_body = (Ry(pitch) Rx(roll))ᵀ v_level. With roll = pitch = 0 they are the same.
    """
    zeros = np.zeros(len(rows))
    R_level_body = rotation_from_euler_zyx(np.stack([zeros, track.column("pitch")[rows],
                                                     track.column("roll")[rows]], 1))
    lin = np.stack([track.column(c)[rows] for c in ("vf", "vl", "vu")], 1)
    ang = np.stack([track.column(c)[rows] for c in ("wf", "wl", "wu")], 1)
    return (np.einsum("nji,nj->ni", R_level_body, lin), np.einsum("nji,nj->ni", R_level_body, ang))


@dataclass
class KittiRawDrive:
    """One camera and the OXTS of a KITTI raw drive folder (``…/2011_09_26/2011_09_26_drive_0001_sync``)."""

    root: Path
    camera_index: int = 0  # 0/1 grey left/right, 2/3 colour left/right
    calib_dir: Path | None = None  # default: the date folder (root's parent)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise DatasetError(f"KITTI raw drive folder not found: {self.root}")
        if self.camera_index not in (0, 1, 2, 3):
            raise DatasetError(f"KITTI raw camera index must be 0-3, got {self.camera_index}")
        camera_dir = self.root / f"image_{self.camera_index:02d}"
        image_dir = camera_dir / "data"
        if not image_dir.is_dir():
            raise DatasetError(f"KITTI raw image folder not found: {image_dir}")
        self.files = sorted(f for f in image_dir.glob("*.png") if f.stem.isdigit())
        if not self.files:
            raise DatasetError(f"Could not find any image in root: {image_dir}")
        stamps_path = camera_dir / "timestamps.txt"
        self.stamps_ns = _stamps_of(self.files, read_timestamps(stamps_path), stamps_path)
        if np.any(np.diff(self.stamps_ns) <= 0):
            k = int(np.argmax(np.diff(self.stamps_ns) <= 0))
            raise DatasetError(f"{stamps_path}: stamps of {self.files[k].name} and {self.files[k + 1].name} "
                               "are not increasing")
        # *_extract folders hold the raw (distorted) images; everything else is taken as rectified (*_sync).
        self.rectified = not self.root.name.endswith("_extract")
        self.calib_dir = Path(self.calib_dir) if self.calib_dir else self.root.parent
        self.calibration = read_raw_calibration(self.calib_dir, self.camera_index, self.rectified)
        self.oxts = read_oxts(self.root / "oxts")

    def __len__(self) -> int:
        return len(self.files)

    @property
    def camera(self) -> PinholeCamera:
        """Intrinsics at the size of the stored images (a size other than the calibration's is logged)."""
        h, w = self.image(0).shape[:2]
        if (w, h) != self.calibration.size:
            logger.warning("%s: images are %dx%d, the calibration is for %dx%d; intrinsics kept as calibrated",
                           self.root, w, h, *self.calibration.size)
        return PinholeCamera.from_K(self.calibration.K, w, h)

    def image(self, i: int) -> np.ndarray:
        """Frame i: [H x W] uint8 grey (image_00/01) or [H x W x 3] RGB (image_02/03)."""
        return read_image(self.files[i], colour=self.camera_index in (2, 3))
