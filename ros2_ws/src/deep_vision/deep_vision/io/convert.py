"""Dataset → rosbag2 converters (deep_vision's bag layout, see :mod:`deep_vision.io.bag`).

KITTI odometry: ``deep-vision convert kitti …/sequences/XX --out BAG [--poses …/poses/XX.txt]``.
Images keep their encoding (mono8 for image_0/1, rgb8 for image_2/3); CameraInfo
comes from ``calib.txt``; ground truth (when poses exist) becomes
``nav_msgs/Odometry`` of ``base_link`` in ``map``; ``/tf_static`` carries
``base_link → camera_optical_frame``. KITTI odometry has no vehicle frame: base_link
is put on the ground 1.65 m under camera 0 (KITTI's camera height), axes per
REP 103. Stamps are ``--start-time`` plus ``times.txt`` (KITTI gives no absolute time).

KITTI raw: ``deep-vision convert kitti-raw …/2011_09_26/2011_09_26_drive_0001_sync --out BAG``, see
:func:`kitti_raw_to_bag`. RobotCar: ``deep-vision convert robotcar RUN_DIR --out BAG``, see :func:`robotcar_to_bag`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deep_vision.errors import DatasetError
from deep_vision.geometry.transforms import (
    OPTICAL_FROM_BODY,
    body_velocities,
    invert_transform,
    make_transform,
)
from deep_vision.io import bag as bagio
from deep_vision.io import rosmsg
from deep_vision.io.kitti import KittiSequence

logger = logging.getLogger(__name__)

KITTI_CAMERA_HEIGHT_M = 1.65
KITTI_START_TIME_S = 1_317_000_000.0  # late September 2011, when KITTI was recorded
GPS_MARGIN_NS = 500_000_000  # fixes are written from this long before the first frame to this long after the last


def _frame_indices(n: int, start: int, end: int | None, stride: int, source: str | Path) -> list[int]:
    """The frames to convert: ``start``, ``start + stride``, … before ``end`` (default: the last of ``n``)."""
    if stride < 1:
        raise DatasetError(f"--stride must be at least 1, got {stride}")
    idx = list(range(start, n if end is None else min(end, n), stride))
    if not idx:
        raise DatasetError(f"{source}: no frame in [{start}, {end}) with stride {stride}")
    return idx


def _write_fixes(bag: bagio.BagWriter, stamps_ns: np.ndarray, lla: np.ndarray, first_ns: int, last_ns: int,
                 frame_id: str, covariances: list[np.ndarray | None] | None = None) -> None:
    """``sensor_msgs/NavSatFix`` on ``/gps/fix`` for each fix ([N] stamps, [N x 3] lat/lon/alt, optional [3 x 3]
    covariances in m²) stamped within GPS_MARGIN_NS of [first_ns, last_ns]."""
    for k, (t, (lat, lon, alt)) in enumerate(zip(stamps_ns, lla)):
        if first_ns - GPS_MARGIN_NS <= t <= last_ns + GPS_MARGIN_NS:
            cov = None if covariances is None else covariances[k]
            bag.write(bagio.GPS_TOPIC, "sensor_msgs/msg/NavSatFix", int(t),
                      rosmsg.navsatfix_msg(lat, lon, alt, int(t), frame_id, cov))


def kitti_to_bag(sequence_dir: str | Path, out: str | Path, *, poses: str | Path | None = None,
                 camera_index: int = 0, start: int = 0, end: int | None = None, stride: int = 1,
                 storage: str = "mcap", start_time_s: float = KITTI_START_TIME_S,
                 frame_id: str = "camera_optical_frame",
                 progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Write a KITTI odometry sequence (``…/sequences/XX``) to a rosbag2; returns messages per topic."""
    seq = KittiSequence(Path(sequence_dir), camera_index=camera_index, poses_path=Path(poses) if poses else None)
    idx = _frame_indices(len(seq), start, end, stride, sequence_dir)
    camera = seq.camera
    T_base_cam = make_transform(OPTICAL_FROM_BODY.T, [0.0, 0.0, KITTI_CAMERA_HEIGHT_M])
    stamps = (np.round((start_time_s + seq.times[idx]) * 1e9)).astype(np.int64)
    T_map_base = None
    if seq.poses is not None:
        cam = invert_transform(seq.poses[idx[0]]) @ seq.poses[idx]
        T_map_base = T_base_cam @ cam @ invert_transform(T_base_cam)
        lin, ang = body_velocities(T_map_base, stamps / 1e9)
    with bagio.BagWriter(out, storage=storage) as bag:
        bag.write_static_transform(T_base_cam, int(stamps[0]), "base_link", frame_id)
        for k, i in enumerate(idx):
            image = seq.image(i)
            stamp = int(stamps[k])
            bag.write_camera_frame(stamp, image, "mono8" if image.ndim == 2 else "rgb8", camera, frame_id)
            if T_map_base is not None:
                bag.write_ground_truth(stamp, T_map_base[k], lin[k], ang[k])
            if progress:
                progress(k + 1, len(idx))
        return dict(bag.counts)


def kitti_raw_to_bag(drive_dir: str | Path, out: str | Path, *, camera_index: int = 0,
                     calib_dir: str | Path | None = None, start: int = 0, end: int | None = None, stride: int = 1,
                     storage: str = "mcap", frame_id: str = "camera_optical_frame", max_oxts_gap_s: float = 0.05,
                     progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Write one camera and the OXTS of a KITTI raw drive (``…/2011_09_26/2011_09_26_drive_0001_sync``) to a
    rosbag2; returns messages per topic. Reading and conventions: :mod:`deep_vision.io.kitti_raw`.

    - images keep their encoding (mono8 for image_00/01, rgb8 for image_02/03), stamped by ``timestamps.txt``;
      CameraInfo from ``calib_cam_to_cam.txt`` of ``calib_dir`` (default: the date folder): ``P_rect_0X`` for
      rectified (``*_sync``) images, ``K_0X`` with distortion ``D_0X`` for raw (``*_extract``) ones; P is K [I | 0],
      as for any monocular camera (the stereo offset is in /tf_static);
    - base_link is the OXTS IMU frame (x forward, y left, z up: REP 103); /tf_static base_link → ``frame_id``
      chains the IMU → velodyne → camera 0 calibration, ``R_rect_00`` and the camera's offset in ``P_rect_0X``;
    - ground truth: the oxts row nearest each frame in time (none for a frame with no row within
      ``max_oxts_gap_s``): position in east-north-up metres (the repository's LocalTangentPlane, not the devkit's
      Mercator), attitude Rz(yaw) Ry(pitch) Rx(roll), ``map`` = the first matched frame's pose; twist from
      ``vf vl vu`` / ``wf wl wu`` turned into the body frame;
    - every oxts row within 0.5 s of the frames' span is a NavSatFix on /gps/fix (lat, lon, alt; variance posacc²
      on the diagonal where posacc > 0, else unknown), in base_link: OXTS reports the IMU's own position.
    """
    from deep_vision.io.kitti_raw import KittiRawDrive, oxts_body_twist, oxts_poses_enu

    drive = KittiRawDrive(Path(drive_dir), camera_index, Path(calib_dir) if calib_dir else None)
    idx = _frame_indices(len(drive), start, end, stride, drive_dir)
    camera, calib, oxts = drive.camera, drive.calibration, drive.oxts
    stamps = drive.stamps_ns[idx]
    rows, gaps = oxts.nearest(stamps)
    matched = gaps <= max_oxts_gap_s * 1e9
    if not matched.all():
        logger.warning("%s: %d of %d frames have no oxts row within %.3f s (largest gap %.3f s); they get no "
                       "ground truth", drive_dir, int((~matched).sum()), len(idx), max_oxts_gap_s, gaps.max() / 1e9)
    T_map_base = None
    if matched.any():
        first = int(np.argmax(matched))
        T_enu_base = oxts_poses_enu(oxts, rows, origin_row=int(rows[first]))
        T_map_base = invert_transform(T_enu_base[first]) @ T_enu_base
        lin, ang = oxts_body_twist(oxts, rows)
    posacc = oxts.column("posacc")
    covariances = [np.eye(3) * a * a if np.isfinite(a) and a > 0 else None for a in posacc]
    encoding = "mono8" if camera_index in (0, 1) else "rgb8"
    with bagio.BagWriter(out, storage=storage) as bag:
        bag.write_static_transform(invert_transform(calib.T_cam_imu), int(stamps[0]), "base_link", frame_id)
        _write_fixes(bag, oxts.stamps_ns, oxts.values[:, :3], int(stamps[0]), int(stamps[-1]), "base_link",
                     covariances)
        for k, i in enumerate(idx):
            stamp = int(stamps[k])
            bag.write_camera_frame(stamp, drive.image(i), encoding, camera, frame_id, calib.distortion)
            if T_map_base is not None and matched[k]:
                bag.write_ground_truth(stamp, T_map_base[k], lin[k], ang[k])
            if progress:
                progress(k + 1, len(idx))
        return dict(bag.counts)


# base_link (REP 103: x forward, y left, z up) from RobotCar's vehicle frame (x forward, y right, z down).
T_BASE_VEHICLE = np.diag([1.0, -1.0, -1.0, 1.0])


def robotcar_to_bag(run_dir: str | Path, out: str | Path, *, camera: str = "stereo/centre",
                    models_dir: str | Path | None = None, extrinsics_dir: str | Path | None = None,
                    ground_truth: str = "auto", debayer: bool = False, start: int = 0, end: int | None = None,
                    stride: int = 1, storage: str = "mcap", frame_id: str = "camera_optical_frame",
                    progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Write one camera of an Oxford RobotCar run to a rosbag2; returns messages per topic.

    Images stay Bayer (``bayer_gbrg8``) unless ``debayer``; ground truth from ``gps/ins.csv``
    (``ground_truth="ins"``), ``vo/vo.csv`` (``"vo"``), the first that exists (``"auto"``) or none;
    INS fixes become ``sensor_msgs/NavSatFix`` on ``/gps/fix``. base_link is the vehicle (stereo
    camera) frame turned to REP 103 axes.
    """
    from deep_vision.io.image import to_rgb8
    from deep_vision.io.robotcar import (
        BAYER_ENCODING,
        RobotCarRun,
        read_extrinsics,
        read_ins,
        read_vo,
    )

    run = RobotCarRun(Path(run_dir), camera, Path(models_dir) if models_dir else None,
                      Path(extrinsics_dir) if extrinsics_dir else None)
    idx = _frame_indices(len(run), start, end, stride, run_dir)
    cam, _ = run.camera_model()
    stamps_us = run.stamps_us[idx]
    stamps_ns = stamps_us * 1000
    T_base_optical = T_BASE_VEHICLE @ run.T_vehicle_optical()
    root = Path(run_dir)
    source = ground_truth
    if source == "auto":
        source = "ins" if (root / "gps" / "ins.csv").is_file() else "vo" if (root / "vo" / "vo.csv").is_file() else "none"
    T_map_base = None
    ins = None
    if source == "ins":
        ins = read_ins(root / "gps" / "ins.csv")
        T_world_ins, _ = ins.interpolate(stamps_us)
        T_vehicle_ins = read_extrinsics(run.extrinsics_dir / "ins.txt")
        T_world_base = T_world_ins @ invert_transform(T_vehicle_ins) @ invert_transform(T_BASE_VEHICLE)
        T_map_base = invert_transform(T_world_base[0]) @ T_world_base
    elif source == "vo":
        vo_stamps, vo_poses = read_vo(root / "vo" / "vo.csv")
        from deep_vision.io.robotcar import InsTrack

        track = InsTrack(vo_stamps, vo_poses, np.zeros((len(vo_stamps), 3)))
        T_v0_v, _ = track.interpolate(stamps_us)
        T_world_base = T_BASE_VEHICLE @ T_v0_v @ invert_transform(T_BASE_VEHICLE)
        T_map_base = invert_transform(T_world_base[0]) @ T_world_base
    elif source != "none":
        raise DatasetError(f"ground truth must be auto, ins, vo or none, got {ground_truth!r}")
    if T_map_base is not None:
        lin, ang = body_velocities(T_map_base, stamps_ns / 1e9)
    with bagio.BagWriter(out, storage=storage) as bag:
        bag.write_static_transform(T_base_optical, int(stamps_ns[0]), "base_link", frame_id)
        if ins is not None:
            _write_fixes(bag, ins.stamps_us * 1000, ins.lla, int(stamps_ns[0]), int(stamps_ns[-1]), "gps")
        for k, i in enumerate(idx):
            raw = run.raw(i)
            image, encoding = (to_rgb8(raw, BAYER_ENCODING), "rgb8") if debayer else (raw, BAYER_ENCODING)
            stamp = int(stamps_ns[k])
            bag.write_camera_frame(stamp, image, encoding, cam, frame_id)
            if T_map_base is not None:
                bag.write_ground_truth(stamp, T_map_base[k], lin[k], ang[k])
            if progress:
                progress(k + 1, len(idx))
        return dict(bag.counts)
