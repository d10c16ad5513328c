"""RobotCar → rosbag2 on a small folder fabricated in the dataset's format (images, timestamps, SDK models and
extrinsics, gps/ins.csv, vo/vo.csv); the real SDK calibration files when ../shared/data is present."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from deep_vision.cli.main import main
from deep_vision.io.bag import BagSequence
from deep_vision.io.convert import robotcar_to_bag
from deep_vision.io.robotcar import read_vo, se3_from_xyzrpy

T0 = 1_418_381_798_086_398  # µs, a RobotCar-like stamp
MODEL = "964.8 964.8 643.8 484.4\n0 0 1 0\n1 0 0 0\n0 1 0 0\n0 0 0 1\n"  # format of the SDK's models/*.txt


def bayer_gbrg(rgb: np.ndarray) -> np.ndarray:
    out = np.zeros(rgb.shape[:2], np.uint8)
    out[0::2, 0::2] = rgb[0::2, 0::2, 1]  # G
    out[0::2, 1::2] = rgb[0::2, 1::2, 2]  # B
    out[1::2, 0::2] = rgb[1::2, 0::2, 0]  # R
    out[1::2, 1::2] = rgb[1::2, 1::2, 1]  # G
    return out


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "2014-12-12-10-45-15"
    (run / "stereo" / "centre").mkdir(parents=True)
    stamps = [T0 + k * 62_500 for k in range(5)]  # 16 Hz
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 30
    for t in stamps:
        cv2.imwrite(str(run / "stereo" / "centre" / f"{t}.png"), bayer_gbrg(rgb))
    (run / "stereo.timestamps").write_text("".join(f"{t} 1\n" for t in stamps))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "stereo_narrow_left.txt").write_text(MODEL)
    (tmp_path / "extrinsics").mkdir()
    (tmp_path / "extrinsics" / "stereo.txt").write_text("0 0 0 0 0 0\n")
    (tmp_path / "extrinsics" / "ins.txt").write_text("-1.7132 0.1181 1.1948 0 0 0\n")  # INS aligned with the car
    (run / "gps").mkdir()
    with (run / "gps" / "ins.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "ins_status", "latitude", "longitude", "altitude", "northing", "easting", "down",
                    "utm_zone", "velocity_north", "velocity_east", "velocity_down", "roll", "pitch", "yaw"])
        for k in range(-40, 40):  # 50 Hz from 0.8 s before the first frame, driving north at 10 m/s
            t = T0 + k * 20_000
            north = 5735000.0 + 10.0 * k * 0.02
            w.writerow([t, "INS_SOLUTION_GOOD", 51.76 + 1e-7 * k, -1.26, 110.0, north, 620000.0, -109.0, "30U",
                        10.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    (run / "vo").mkdir()
    with (run / "vo" / "vo.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source_timestamp", "destination_timestamp", "x", "y", "z", "roll", "pitch", "yaw"])
        for a, b in zip(stamps[1:], stamps[:-1]):
            w.writerow([a, b, 0.625, 0.0, 0.0, 0.0, 0.0, 0.0])
    return run


def test_ins_ground_truth_bayer_kept(run_dir, tmp_path):
    counts = robotcar_to_bag(run_dir, tmp_path / "bag")
    assert counts["/camera/image_raw"] == 5 and counts["/ground_truth/odometry"] == 5
    # INS rows from 0.5 s before the first frame to 0.5 s after the last (0.25 s): -500 ... +740 ms, 50 Hz
    assert counts["/gps/fix"] == 63
    bag = BagSequence(tmp_path / "bag")
    frames = list(bag)
    assert frames[0].encoding == "bayer_gbrg8" and frames[0].image.shape == (48, 64)
    assert frames[1].stamp_ns - frames[0].stamp_ns == 62_500_000
    topic, t, _ = next(iter(bag.messages(["/tf_static", "/camera/image_raw"])))
    assert topic == "/tf_static" and t == frames[0].stamp_ns  # before the first image, at its stamp
    assert frames[0].camera.fx == pytest.approx(964.8)
    # 10 m/s north with yaw 0: base_link moves forward (+x) 0.625 m per frame.
    np.testing.assert_allclose(frames[4].gt_pose[:3, 3], [2.5, 0.0, 0.0], atol=1e-6)
    # The camera optical frame looks along base_link's +x: optical z = base x.
    T_base_cam = bag.extrinsic("camera_optical_frame")
    np.testing.assert_allclose(T_base_cam[:3, 2], [1.0, 0.0, 0.0], atol=1e-9)
    fixes = [m for _, _, m in bag.messages(["/gps/fix"])]
    assert fixes[0].latitude == pytest.approx(51.76 - 25e-7, abs=1e-9) and fixes[0].status.status == 0
    v = [m for _, _, m in bag.messages(["/ground_truth/odometry"])][2].twist.twist.linear
    np.testing.assert_allclose([v.x, v.y, v.z], [10.0, 0.0, 0.0], atol=1e-4)  # forward at 10 m/s (measured 10.00002)


def test_vo_ground_truth_and_debayer(run_dir, tmp_path, capsys):
    assert main(["convert", "robotcar", str(run_dir), "--out", str(tmp_path / "b"), "--ground-truth", "vo",
                 "--debayer", "--stride", "2"]) == 0
    bag = BagSequence(tmp_path / "b")
    frames = list(bag)
    assert len(frames) == 3 and frames[0].encoding == "rgb8"
    np.testing.assert_allclose(frames[1].image[10:30, 10:30].reshape(-1, 3).mean(0), [200, 100, 30], atol=3)
    np.testing.assert_allclose(frames[2].gt_pose[:3, 3], [2.5, 0.0, 0.0], atol=1e-6)
    stamps, poses = read_vo(run_dir / "vo" / "vo.csv")
    assert len(stamps) == 5 and poses[-1][0, 3] == pytest.approx(2.5)


def test_automatic_ground_truth_takes_the_first_source_present(run_dir, tmp_path):
    (run_dir / "gps" / "ins.csv").unlink()
    assert robotcar_to_bag(run_dir, tmp_path / "vo")["/ground_truth/odometry"] == 5  # vo.csv, no fixes
    np.testing.assert_allclose(BagSequence(tmp_path / "vo").ground_truth[1][4][:3, 3], [2.5, 0.0, 0.0], atol=1e-6)
    (run_dir / "vo" / "vo.csv").unlink()
    assert "/ground_truth/odometry" not in robotcar_to_bag(run_dir, tmp_path / "none")


def test_base_link_is_the_vehicle_frame_turned_about_x():
    """REP 103 base_link (x forward, y left, z up) from the vehicle frame (x forward, y right, z down)."""
    from deep_vision.io.convert import T_BASE_VEHICLE

    np.testing.assert_array_equal(T_BASE_VEHICLE @ [1, 2, 3, 1], [1, -2, -3, 1])
    np.testing.assert_array_equal(T_BASE_VEHICLE @ [0, 0, 0, 1], [0, 0, 0, 1])


def test_sdk_transform_convention():
    T = se3_from_xyzrpy(1, 2, 3, 0.0, 0.0, np.pi / 2)
    np.testing.assert_allclose(T[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)  # yaw turns x towards y


def test_real_sdk_calibration(run_dir, tmp_path, shared_data):
    calib = shared_data / "robotcar_calib"
    counts = robotcar_to_bag(run_dir, tmp_path / "real", models_dir=calib / "models",
                             extrinsics_dir=calib / "extrinsics", ground_truth="ins")
    assert counts["/camera/image_raw"] == 5
    bag = BagSequence(tmp_path / "real")
    assert bag.camera.fx == pytest.approx(964.828979)
    assert np.allclose(bag.extrinsic("camera_optical_frame")[:3, 2], [1, 0, 0], atol=1e-6)
