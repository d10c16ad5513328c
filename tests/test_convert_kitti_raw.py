"""KITTI raw → rosbag2 on small drives fabricated in the raw layout (date folder with the three calibration files,
``*_sync`` and ``*_extract`` drive folders, oxts lines with known values). There is no KITTI raw drive in
../shared/data (only odometry sequence 00), so no real-data test here."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from deep_vision.cli.main import main
from deep_vision.errors import DatasetError
from deep_vision.estimators.geolocation import LocalTangentPlane
from deep_vision.io.bag import BagSequence
from deep_vision.io.convert import kitti_raw_to_bag
from deep_vision.io.kitti_raw import read_timestamps

# Calibration files in the format and with values of the kind of KITTI's 2011_09_26 recordings.
CAM_TO_CAM = """calib_time: 09-Jan-2012 13:57:47
corner_dist: 9.950000e-02
S_00: 1.392000e+03 5.120000e+02
K_00: 9.842439e+02 0.000000e+00 6.900000e+02 0.000000e+00 9.808141e+02 2.331966e+02 0.000000e+00 0.000000e+00 1.000000e+00
D_00: -3.728755e-01 2.037299e-01 2.219027e-03 1.383707e-03 -7.233722e-02
R_00: 1.000000e+00 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00
T_00: 2.573699e-16 -1.059758e-16 1.614870e-16
S_rect_00: 1.242000e+03 3.750000e+02
R_rect_00: 9.999239e-01 9.837760e-03 -7.445048e-03 -9.869795e-03 9.999421e-01 -4.278459e-03 7.402527e-03 4.351614e-03 9.999631e-01
P_rect_00: 7.215377e+02 0.000000e+00 6.095593e+02 0.000000e+00 0.000000e+00 7.215377e+02 1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00
S_01: 1.392000e+03 5.120000e+02
K_01: 9.895267e+02 0.000000e+00 7.020000e+02 0.000000e+00 9.878386e+02 2.455590e+02 0.000000e+00 0.000000e+00 1.000000e+00
D_01: -3.644661e-01 1.790019e-01 1.148107e-03 -6.298563e-04 -5.314062e-02
R_01: 9.993513e-01 1.860866e-02 -3.083487e-02 -1.887662e-02 9.997863e-01 -8.421873e-03 3.067156e-02 8.998467e-03 9.994890e-01
T_01: -5.370000e-01 4.822061e-03 -1.252488e-02
S_rect_01: 1.242000e+03 3.750000e+02
R_rect_01: 9.996878e-01 -8.976826e-03 2.331651e-02 8.876121e-03 9.999508e-01 4.418952e-03 -2.335503e-02 -4.210612e-03 9.997184e-01
P_rect_01: 7.215377e+02 0.000000e+00 6.095593e+02 -3.875744e+02 0.000000e+00 7.215377e+02 1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00
S_02: 1.392000e+03 5.120000e+02
K_02: 9.597910e+02 0.000000e+00 6.960217e+02 0.000000e+00 9.569251e+02 2.241806e+02 0.000000e+00 0.000000e+00 1.000000e+00
D_02: -3.691481e-01 1.968681e-01 1.353473e-03 5.677587e-04 -6.770705e-02
R_02: 9.999758e-01 -5.267463e-03 -4.552439e-03 5.251945e-03 9.999804e-01 -3.413835e-03 4.570332e-03 3.389843e-03 9.999838e-01
T_02: 5.956621e-02 2.900141e-04 2.577209e-03
S_rect_02: 1.242000e+03 3.750000e+02
R_rect_02: 9.998817e-01 1.511453e-02 -2.841595e-03 -1.511724e-02 9.998853e-01 -9.338510e-04 2.827154e-03 9.766976e-04 9.999955e-01
P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03
S_03: 1.392000e+03 5.120000e+02
K_03: 9.037596e+02 0.000000e+00 6.957519e+02 0.000000e+00 9.019653e+02 2.242509e+02 0.000000e+00 0.000000e+00 1.000000e+00
D_03: -3.639558e-01 1.788651e-01 6.029694e-04 -3.922424e-04 -5.382460e-02
R_03: 9.995599e-01 1.699522e-02 -2.431313e-02 -1.704422e-02 9.998531e-01 -1.809756e-03 2.427880e-02 2.223358e-03 9.997028e-01
T_03: -4.731050e-01 5.551470e-03 -5.250882e-03
S_rect_03: 1.242000e+03 3.750000e+02
R_rect_03: 9.998321e-01 -7.193136e-03 1.685599e-02 7.232804e-03 9.999712e-01 -2.293585e-03 -1.683901e-02 2.415116e-03 9.998553e-01
P_rect_03: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02 1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03
"""
IMU_TO_VELO = """calib_time: 25-May-2012 16:47:16
R: 9.999976e-01 7.553071e-04 -2.035826e-03 -7.854027e-04 9.998898e-01 -1.482298e-02 2.024406e-03 1.482454e-02 9.998881e-01
T: -8.086759e-01 3.195559e-01 -7.997231e-01
"""
VELO_TO_CAM = """calib_time: 15-Mar-2012 11:37:16
R: 7.533745e-03 -9.999714e-01 -6.166020e-04 1.480249e-02 7.280733e-04 -9.998902e-01 9.998621e-01 7.523790e-03 1.480755e-02
T: -4.069766e-03 -7.631618e-02 -2.717806e-01
delta_f: 0.000000e+00 0.000000e+00
delta_c: 0.000000e+00 0.000000e+00
"""
CALIB_FILES = {"calib_cam_to_cam.txt": CAM_TO_CAM, "calib_imu_to_velo.txt": IMU_TO_VELO,
               "calib_velo_to_cam.txt": VELO_TO_CAM}

T0_TEXT = "2011-09-26 13:02:25.964389445"
T0_NS = int(datetime(2011, 9, 26, 13, 2, 25, tzinfo=UTC).timestamp()) * 10**9 + 964_389_445
ORIGIN = (49.011212804408, 8.4228850417969, 112.83492279053)  # lat, lon, alt near Karlsruhe
RGB = (200, 100, 30)
ROLL, PITCH = 0.02, -0.01
SIZE = (12, 20)  # (height, width) of the fabricated images; the calibration is for 375x1242


def stamp_text(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}"


def oxts_line(t_s: float, north_m: float, yaw: float, posacc: float) -> str:
    """An oxts row of a car driving north at 10 m/s, climbing 5 cm a metre, turning left at 0.5 rad/s."""
    lat, lon, alt = LocalTangentPlane(*ORIGIN).to_geodetic(np.array([0.0, north_m, 0.05 * north_m]))
    values = [lat, lon, alt, ROLL, PITCH, yaw, 10.0, 0.0, 10.0, 0.0, 0.0,
              0.1, 0.0, 9.81, 0.1, 0.0, 9.81, 0.0, 0.0, 0.5, 0.0, 0.0, 0.5, posacc, 0.05, 4, 10, 4, 4, 0]
    return " ".join(f"{v:.15g}" for v in values) + "\n"


def write_images(drive, camera: int, stamps_ns: list[int]) -> None:
    folder = drive / f"image_{camera:02d}"
    (folder / "data").mkdir(parents=True)
    rng = np.random.default_rng(camera)
    for i in range(len(stamps_ns)):
        if camera in (0, 1):
            img = rng.integers(0, 255, SIZE, dtype=np.uint8)
        else:
            img = np.zeros(SIZE + (3,), np.uint8)
            img[:] = RGB[::-1]  # cv2 writes BGR
        cv2.imwrite(str(folder / "data" / f"{i:010d}.png"), img)
    (folder / "timestamps.txt").write_text("".join(stamp_text(t) + "\n" for t in stamps_ns))


def write_oxts(drive, stamps_ns: list[int], lines: list[str]) -> None:
    (drive / "oxts" / "data").mkdir(parents=True)
    for i, line in enumerate(lines):
        (drive / "oxts" / "data" / f"{i:010d}.txt").write_text(line)
    (drive / "oxts" / "timestamps.txt").write_text("".join(stamp_text(t) + "\n" for t in stamps_ns))


def expected_pose(north_m: float, yaw: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("ZYX", [yaw, PITCH, ROLL]).as_matrix()
    T[:3, 3] = [0.0, north_m, 0.05 * north_m]
    return T


@pytest.fixture
def date_dir(tmp_path):
    date = tmp_path / "2011_09_26"
    date.mkdir()
    for name, text in CALIB_FILES.items():
        (date / name).write_text(text)
    return date


@pytest.fixture
def sync_drive(date_dir):
    """5 rectified frames of cameras 0 and 2 at ~10 Hz, one oxts row each (2 ms off, as in *_sync drives)."""
    drive = date_dir / "2011_09_26_drive_0001_sync"
    stamps = [T0_NS + k * 103_616_254 for k in range(5)]
    write_images(drive, 0, stamps)
    write_images(drive, 2, [t + 1_000 for t in stamps])
    write_oxts(drive, [t + 2_000_000 for t in stamps],
               [oxts_line(0.1 * k, 1.0 * k, np.pi / 2 + 0.05 * k, 0.0 if k == 3 else 0.2) for k in range(5)])
    return drive


def test_timestamps_keep_nanoseconds(sync_drive):
    stamps = read_timestamps(sync_drive / "image_00" / "timestamps.txt")
    assert (sync_drive / "image_00" / "timestamps.txt").read_text().startswith(T0_TEXT)
    assert stamps[0] == T0_NS and stamps[1] - stamps[0] == 103_616_254


def test_sync_drive(sync_drive, tmp_path):
    calls = []
    counts = kitti_raw_to_bag(sync_drive, tmp_path / "bag", progress=lambda k, n: calls.append((k, n)))
    assert calls == [(k, 5) for k in range(1, 6)]
    assert counts == {"/camera/image_raw": 5, "/camera/camera_info": 5, "/ground_truth/odometry": 5,
                      "/tf_static": 1, "/gps/fix": 5}
    bag = BagSequence(tmp_path / "bag")
    frames = list(bag)
    assert [f.encoding for f in frames] == ["mono8"] * 5 and frames[0].image.shape == SIZE
    topic, t, _ = next(iter(bag.messages(["/tf_static", "/camera/image_raw"])))
    assert topic == "/tf_static" and t == T0_NS  # before the first image, at its stamp
    assert [f.stamp_ns for f in frames] == [T0_NS + k * 103_616_254 for k in range(5)]

    info = next(m for _, _, m in bag.messages(["/camera/camera_info"]))
    K = np.array([[721.5377, 0, 609.5593], [0, 721.5377, 172.854], [0, 0, 1]])
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), K)
    np.testing.assert_allclose(np.reshape(info.p, (3, 4)), np.hstack([K, np.zeros((3, 1))]))
    assert (info.width, info.height) == (SIZE[1], SIZE[0]) and not np.any(info.d)

    # base_link is the IMU: camera 0 looks along its x, ~1.08 m ahead, 0.32 m right, 0.72 m above it.
    T_base_cam = bag.extrinsic("camera_optical_frame")
    np.testing.assert_allclose(T_base_cam[:3, 2], [1.0, 0.0, 0.0], atol=0.03)  # optical z = forward
    np.testing.assert_allclose(T_base_cam[:3, 0], [0.0, -1.0, 0.0], atol=0.03)  # optical x = right
    np.testing.assert_allclose(T_base_cam[:3, 3], [1.08, -0.32, 0.72], atol=0.03)

    # Ground truth: the oxts poses (ENU) relative to the first.
    stamps, poses = bag.ground_truth
    assert list(stamps) == [f.stamp_ns for f in frames]
    for k in range(5):
        want = np.linalg.inv(expected_pose(0.0, np.pi / 2)) @ expected_pose(1.0 * k, np.pi / 2 + 0.05 * k)
        np.testing.assert_allclose(poses[k], want, atol=1e-6)
    np.testing.assert_allclose(poses[4][:3, 3], [4.0, 0.0, 0.2], atol=0.1)  # driving forward (north, yaw 90 deg)
    odom = [m for _, _, m in bag.messages(["/ground_truth/odometry"])]
    assert (odom[0].header.frame_id, odom[0].child_frame_id) == ("map", "base_link")
    lin = Rotation.from_euler("YX", [PITCH, ROLL]).as_matrix().T @ [10.0, 0.0, 0.0]
    v, w = odom[2].twist.twist.linear, odom[2].twist.twist.angular
    np.testing.assert_allclose([v.x, v.y, v.z], lin, atol=1e-9)
    np.testing.assert_allclose([v.x, v.y, v.z], [10.0, 0.0, 0.0], atol=0.2)
    assert w.z == pytest.approx(0.5, abs=0.01)

    fixes = [m for _, _, m in bag.messages(["/gps/fix"])]
    lat, lon, alt = LocalTangentPlane(*ORIGIN).to_geodetic(np.array([0.0, 2.0, 0.1]))
    assert (fixes[2].latitude, fixes[2].longitude, fixes[2].altitude) == pytest.approx((lat, lon, alt), abs=1e-9)
    np.testing.assert_allclose(fixes[0].position_covariance, np.diag([0.04] * 3).ravel())
    assert fixes[0].position_covariance_type == 2 and fixes[3].position_covariance_type == 0  # posacc 0: unknown
    assert fixes[0].header.frame_id == "base_link" and fixes[0].header.stamp.nanosec == (T0_NS + 2_000_000) % 10**9


@pytest.mark.parametrize("camera, encoding", [(1, "mono8"), (3, "rgb8")])
def test_right_cameras(sync_drive, tmp_path, camera, encoding):
    write_images(sync_drive, camera, [T0_NS + k * 103_616_254 for k in range(5)])
    kitti_raw_to_bag(sync_drive, tmp_path / "bag", camera_index=camera)
    frame = next(iter(BagSequence(tmp_path / "bag")))
    assert frame.encoding == encoding and frame.image.shape == (SIZE if camera == 1 else SIZE + (3,))


def test_colour_camera_stride_and_calib_dir_from_cli(sync_drive, tmp_path, capsys):
    calib = tmp_path / "calib"
    calib.mkdir()
    for name in CALIB_FILES:
        (sync_drive.parent / name).rename(calib / name)
    assert main(["convert", "kitti-raw", str(sync_drive), "--out", str(tmp_path / "b0"), "--calib", str(calib)]) == 0
    assert main(["convert", "kitti-raw", str(sync_drive), "--out", str(tmp_path / "b2"), "--calib", str(calib),
                 "--camera", "2", "--start", "1", "--stride", "2"]) == 0
    assert "/gps/fix" in capsys.readouterr().out
    bag = BagSequence(tmp_path / "b2")
    frames = list(bag)
    assert len(frames) == 2 and frames[0].encoding == "rgb8" and frames[0].image.shape == SIZE + (3,)
    np.testing.assert_allclose(frames[1].image.reshape(-1, 3).mean(0), RGB, atol=1)
    assert [f.stamp_ns for f in frames] == [T0_NS + k * 103_616_254 + 1_000 for k in (1, 3)]
    # map is frame 1's pose; frame 3 is 2 m further north, 0.1 rad more to the left.
    want = np.linalg.inv(expected_pose(1.0, np.pi / 2 + 0.05)) @ expected_pose(3.0, np.pi / 2 + 0.15)
    np.testing.assert_allclose(frames[0].gt_pose, np.eye(4), atol=1e-9)
    np.testing.assert_allclose(frames[1].gt_pose, want, atol=1e-6)
    # Camera 2 sits 6 cm left of camera 0 (t = K^-1 P_rect_02[:, 3]), same axes.
    T0 = BagSequence(tmp_path / "b0").extrinsic("camera_optical_frame")
    T2 = bag.extrinsic("camera_optical_frame")
    np.testing.assert_allclose(T2[:3, :3], T0[:3, :3], atol=1e-12)
    assert T2[1, 3] - T0[1, 3] == pytest.approx(0.0598, abs=0.001)
    assert abs(T2[0, 3] - T0[0, 3]) < 0.005 and abs(T2[2, 3] - T0[2, 3]) < 0.005


def test_extract_drive_matches_oxts_by_time(date_dir, tmp_path, caplog):
    """Raw images (distortion in CameraInfo) with 100 Hz oxts: each frame takes the nearest row; a frame past the
    end of the oxts gets no ground truth; every fix from 0.5 s before the first frame to 0.5 s after the last
    is written."""
    drive = date_dir / "2011_09_26_drive_0001_extract"
    offsets_ms = [3, 8, 2, 6]
    write_images(drive, 0, [T0_NS + (100 * k + d) * 1_000_000 for k, d in enumerate(offsets_ms)] + [T0_NS + 10**9])
    oxts_ms = list(range(-600, 810, 10)) + list(range(1060, 1510, 10))  # none within 50 ms of the 1 s frame
    write_oxts(drive, [T0_NS + t * 1_000_000 for t in oxts_ms],
               [oxts_line(t / 1000, 0.01 * t, np.pi / 2, 0.2) for t in oxts_ms])
    with caplog.at_level(logging.WARNING, logger="deep_vision.io.convert"):
        counts = kitti_raw_to_bag(drive, tmp_path / "bag")
    assert counts["/camera/image_raw"] == 5 and counts["/ground_truth/odometry"] == 4 and counts["/gps/fix"] == 175  # -490 ... 1500 ms
    # one line names the frames without ground truth and the gap (1000 ms frame, nearest row at 1060 ms)
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records if r.name == "deep_vision.io.convert"] == [
        "1 of 5 frames have no oxts row within 0.050 s (largest gap 0.060 s); they get no ground truth"]
    bag = BagSequence(tmp_path / "bag")
    _, poses = bag.ground_truth
    for pose, row_ms in zip(poses, [0, 110, 200, 310]):  # the rows nearest to 3, 108, 202, 306 ms
        want = np.linalg.inv(expected_pose(0.0, np.pi / 2)) @ expected_pose(0.01 * row_ms, np.pi / 2)
        np.testing.assert_allclose(pose, want, atol=1e-6)
    info = next(m for _, _, m in bag.messages(["/camera/camera_info"]))
    assert info.k[0] == pytest.approx(984.2439) and info.d[0] == pytest.approx(-0.3728755)
    np.testing.assert_allclose(bag.extrinsic("camera_optical_frame")[:3, 2], [1.0, 0.0, 0.0], atol=0.03)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "oxts" / "data" / "0000000002.txt").write_text("49.011212 8.422885 112.83 0.02\n"),
     r"0000000002\.txt:1: expected one line of 30 numbers"),
    (lambda d: (d / "image_00" / "timestamps.txt").write_text(
        (d / "image_00" / "timestamps.txt").read_text().replace("13:02:26.171", "13:02:2x.171")),
     r"image_00/timestamps\.txt:3: expected"),
    (lambda d: (d.parent / "calib_velo_to_cam.txt").unlink(), r"calibration not found: .*calib_velo_to_cam\.txt"),
    (lambda d: (d.parent / "calib_cam_to_cam.txt").write_text(CAM_TO_CAM.replace("P_rect_00", "P_rect_0")),
     r"calib_cam_to_cam\.txt: no P_rect_00"),
    (lambda d: (d / "oxts" / "timestamps.txt").write_text(stamp_text(T0_NS) + "\n"),
     r"oxts/timestamps\.txt: 1 stamps, but .*0000000004\.txt needs line 5"),
])
def test_errors_name_file_and_line(sync_drive, tmp_path, damage, message):
    damage(sync_drive)
    with pytest.raises(DatasetError, match=message):
        kitti_raw_to_bag(sync_drive, tmp_path / "bag")


def test_missing_folders(date_dir, sync_drive, tmp_path):
    with pytest.raises(DatasetError, match="drive folder not found"):
        kitti_raw_to_bag(date_dir / "2011_09_26_drive_0002_sync", tmp_path / "a")
    with pytest.raises(DatasetError, match=r"image folder not found: .*image_01/data"):
        kitti_raw_to_bag(sync_drive, tmp_path / "b", camera_index=1)
    with pytest.raises(DatasetError, match="camera index must be 0-3"):
        kitti_raw_to_bag(sync_drive, tmp_path / "c", camera_index=4)
