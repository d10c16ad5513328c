"""KITTI → rosbag2: a fabricated sequence folder in the official layout, and the real frames when present."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deep_vision.cli.main import main
from deep_vision.errors import DatasetError
from deep_vision.geometry import OPTICAL_FROM_BODY, read_kitti_poses, write_kitti_poses
from deep_vision.geometry.transforms import make_transform, rotation_z
from deep_vision.io.bag import BagSequence
from deep_vision.io.convert import KITTI_START_TIME_S, kitti_to_bag
from deep_vision.io.kitti import KittiSequence, read_calib

P0 = "7.188560e+02 0 6.071928e+02 0 0 7.188560e+02 1.852157e+02 0 0 0 1 0"


@pytest.fixture
def fake_kitti(tmp_path):
    seq = tmp_path / "sequences" / "07"
    (seq / "image_0").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(seq / "image_0" / f"{i:06d}.png"), rng.integers(0, 255, (40, 64), dtype=np.uint8))
    (seq / "times.txt").write_text("\n".join(f"{0.1 * i:.6e}" for i in range(6)) + "\n")
    (seq / "calib.txt").write_text(f"P0: {P0}\nP1: {P0}\n")
    poses = np.stack([make_transform(rotation_z(0.0), [0.0, 0.0, 1.0 * i]) for i in range(6)])
    (tmp_path / "poses").mkdir()
    write_kitti_poses(tmp_path / "poses" / "07.txt", poses)
    return seq


def test_fabricated_sequence(fake_kitti, tmp_path):
    counts = kitti_to_bag(fake_kitti, tmp_path / "bag", start=1, stride=2)
    assert counts["/camera/image_raw"] == 3 and counts["/ground_truth/odometry"] == 3
    bag = BagSequence(tmp_path / "bag")
    frames = list(bag)
    assert [f.image.shape for f in frames] == [(40, 64)] * 3 and frames[0].encoding == "mono8"
    cam = frames[0].camera
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == pytest.approx((718.856, 718.856, 607.1928, 185.2157), abs=1e-9)
    # Stamps: the sequence's start time (KITTI's times.txt starts at 0) plus times.txt, frames 1, 3, 5.
    assert [f.stamp_ns for f in frames] == [round((KITTI_START_TIME_S + t) * 1e9) for t in (0.1, 0.3, 0.5)]
    # The camera moves 1 m forward per frame: base_link moves 2 m along +x per kept frame.
    np.testing.assert_allclose(frames[2].gt_pose[:3, 3], [4.0, 0.0, 0.0], atol=1e-9)
    _, kitti = bag.camera_poses_kitti("camera_optical_frame")
    np.testing.assert_allclose(kitti[2][:3, 3], [0.0, 0.0, 4.0], atol=1e-9)
    odom = [m for _, _, m in bag.messages(["/ground_truth/odometry"])]
    assert odom[1].twist.twist.linear.x == pytest.approx(10.0)  # 1 m per 0.1 s, in base_link


def test_camera_mounting_and_progress(fake_kitti, tmp_path):
    """/tf_static: the camera 1.65 m above base_link, optical axes, stamped at the first frame and written
    first, so a player delivers it before any image; progress counts every frame once."""
    calls = []
    kitti_to_bag(fake_kitti, tmp_path / "bag", progress=lambda k, n: calls.append((k, n)))
    assert calls == [(k, 6) for k in range(1, 7)]
    bag = BagSequence(tmp_path / "bag")
    np.testing.assert_allclose(bag.extrinsic("camera_optical_frame"),
                               make_transform(OPTICAL_FROM_BODY.T, [0.0, 0.0, 1.65]), atol=1e-12)
    (topic, t, msg), *rest = bag.messages(["/tf_static", "/camera/image_raw"])
    assert topic == "/tf_static" and t == rest[0][1] == round(KITTI_START_TIME_S * 1e9)
    assert msg.transforms[0].header.stamp.sec == int(KITTI_START_TIME_S)


def test_sequence_reader_cameras_and_stamps(fake_kitti):
    seq = KittiSequence(fake_kitti)  # image_0 by default
    assert seq.image(0).shape == (40, 64) and (seq.camera.width, seq.camera.height) == (64, 40)
    assert seq.times[1] == pytest.approx(0.1)
    rng = np.random.default_rng(1)
    for folder in ("image_1", "image_2", "image_3"):
        (fake_kitti / folder).mkdir()
        for i in range(6):
            shape = (40, 64) if folder == "image_1" else (40, 64, 3)
            cv2.imwrite(str(fake_kitti / folder / f"{i:06d}.png"), rng.integers(0, 255, shape, dtype=np.uint8))
    (fake_kitti / "calib.txt").write_text(f"P0: {P0}\nP1: {P0}\nP2: {P0}\nP3: {P0}\n")
    assert KittiSequence(fake_kitti, camera_index=1).image(0).shape == (40, 64)
    for camera in (2, 3):
        colour = KittiSequence(fake_kitti, camera_index=camera)
        bgr = cv2.imread(str(fake_kitti / f"image_{camera}" / "000000.png"))
        np.testing.assert_array_equal(colour.image(0), bgr[..., ::-1])  # RGB
        assert (colour.camera.width, colour.camera.height) == (64, 40)
    # No times.txt: 10 Hz from 0; a one-frame times.txt is still a list of one stamp.
    (fake_kitti / "times.txt").unlink()
    np.testing.assert_allclose(KittiSequence(fake_kitti).times, np.arange(6) * 0.1)
    for f in sorted((fake_kitti / "image_0").glob("*.png"))[1:]:
        f.unlink()
    (fake_kitti / "times.txt").write_text("0.0\n")
    assert list(KittiSequence(fake_kitti).times) == [0.0] and len(KittiSequence(fake_kitti)) == 1


def test_sequence_without_or_with_too_few_poses(fake_kitti):
    poses = fake_kitti.parent.parent / "poses" / "07.txt"
    rows = poses.read_text().splitlines()
    poses.write_text("\n".join(rows[:4]) + "\n")
    with pytest.raises(DatasetError, match=r"07\.txt: 4 poses for 6 images"):
        KittiSequence(fake_kitti)
    poses.unlink()
    assert KittiSequence(fake_kitti).poses is None


def test_stride_below_one_is_refused(fake_kitti, tmp_path):
    with pytest.raises(DatasetError, match="--stride must be at least 1, got 0"):
        kitti_to_bag(fake_kitti, tmp_path / "bag", stride=0)


def test_poses_file_written_into_a_new_folder(tmp_path):
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, 0, 3] = [0.0, 1.5, 3.0]
    path = write_kitti_poses(tmp_path / "results" / "00" / "poses.txt", poses)
    np.testing.assert_allclose(read_kitti_poses(path), poses)


def test_unlabelled_calibration_and_cli(fake_kitti, tmp_path, capsys):
    P1 = P0.replace("7.188560e+02 0 6", "7.000000e+02 0 6")
    (fake_kitti / "calib.txt").write_text(f"{P0}\n\n{P1}\n")
    calib = read_calib(fake_kitti / "calib.txt")  # unlabelled lines are P0, P1, ... in order; blank lines skipped
    assert sorted(calib) == ["P0", "P1"] and calib["P1"][0, 0] == 700.0 and calib["P0"][0, 0] == 718.856
    (tmp_path / "bad_calib.txt").write_text(f"P0: {P0}\nP1: 1 2 3\n")
    with pytest.raises(DatasetError, match=r"bad_calib\.txt:2: expected 12 numbers for P1, got 3"):
        read_calib(tmp_path / "bad_calib.txt")
    assert main(["convert", "kitti", str(fake_kitti), "--out", str(tmp_path / "b2"), "--storage", "sqlite3"]) == 0
    assert "/camera/image_raw" in capsys.readouterr().out
    assert len(BagSequence(tmp_path / "b2")) == 6


def test_real_kitti_frames(shared_data, tmp_path):
    seq = shared_data / "kitti" / "sequences" / "00"
    counts = kitti_to_bag(seq, tmp_path / "bag", end=20)
    assert counts["/camera/image_raw"] == 20 and counts["/ground_truth/odometry"] == 20
    bag = BagSequence(tmp_path / "bag")
    f = next(iter(bag))
    assert f.image.shape == (376, 1241) and f.camera.cx == pytest.approx(607.1928)


def test_jpeg_frames_are_read_and_mixed_formats_refused(fake_kitti, tmp_path):
    """KITTI 03 here is JPEG re-encodes: the reader (and so the converter) takes .jpg as it takes .png."""
    for f in sorted((fake_kitti / "image_0").glob("*.png")):
        cv2.imwrite(str(f.with_suffix(".jpg")), cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))
        f.unlink()
    seq = KittiSequence(fake_kitti)
    assert len(seq) == 6 and seq.image(3).shape == (40, 64) and seq.files[0].suffix == ".jpg"
    assert kitti_to_bag(fake_kitti, tmp_path / "bag")["/camera/image_raw"] == 6
    cv2.imwrite(str(fake_kitti / "image_0" / "000002.png"), np.zeros((40, 64), np.uint8))
    with pytest.raises(DatasetError, match="two formats"):
        KittiSequence(fake_kitti)


def test_real_jpeg_sequence(shared_data):
    seq = KittiSequence(shared_data / "kitti" / "sequences" / "03")
    assert len(seq) == 801 and len(seq.poses) == 801 and seq.image(800).shape == (375, 1242)
