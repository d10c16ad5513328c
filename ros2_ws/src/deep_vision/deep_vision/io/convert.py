"""Dataset → rosbag2 converters (deep_vision's bag layout, see :mod:`deep_vision.io.bag`).

KITTI odometry: ``deep-vision convert kitti …/sequences/XX --out BAG [--poses …/poses/XX.txt]``.
Images keep their encoding (mono8 for image_0/1, rgb8 for image_2/3); CameraInfo
comes from ``calib.txt``; ground truth (when poses exist) becomes
``nav_msgs/Odometry`` of ``base_link`` in ``map``; ``/tf_static`` carries
``base_link → camera_optical_frame``. KITTI odometry has no vehicle frame: base_link
is put on the ground 1.65 m under camera 0 (KITTI's camera height), axes per
REP 103. Stamps are ``--start-time`` plus ``times.txt`` (KITTI gives no absolute time).
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


def kitti_to_bag(sequence_dir: str | Path, out: str | Path, *, poses: str | Path | None = None,
                 camera_index: int = 0, start: int = 0, end: int | None = None, stride: int = 1,
                 storage: str = "mcap", start_time_s: float = KITTI_START_TIME_S,
                 frame_id: str = "camera_optical_frame",
                 progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Write a KITTI odometry sequence (``…/sequences/XX``) to a rosbag2; returns messages per topic."""
    seq = KittiSequence(Path(sequence_dir), camera_index=camera_index, poses_path=Path(poses) if poses else None)
    if stride < 1:
        raise DatasetError(f"--stride must be at least 1, got {stride}")
    idx = list(range(start, len(seq) if end is None else min(end, len(seq)), stride))
    if not idx:
        raise DatasetError(f"{sequence_dir}: no frame in [{start}, {end}) with stride {stride}")
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


GPS_TOPIC = "/gps/fix"
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
    if stride < 1:
        raise DatasetError(f"--stride must be at least 1, got {stride}")
    idx = list(range(start, len(run) if end is None else min(end, len(run)), stride))
    if not idx:
        raise DatasetError(f"{run_dir}: no frame in [{start}, {end}) with stride {stride}")
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
            lo, hi = stamps_us[0] - 500_000, stamps_us[-1] + 500_000
            for t, (lat, lon, alt) in zip(ins.stamps_us, ins.lla):
                if lo <= t <= hi:
                    bag.write(GPS_TOPIC, "sensor_msgs/msg/NavSatFix", int(t) * 1000,
                              rosmsg.navsatfix_msg(lat, lon, alt, int(t) * 1000, "gps"))
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
