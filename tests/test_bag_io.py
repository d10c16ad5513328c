"""Bag round trip (mcap and sqlite3) of a synthetic recording; lazy reading; bad frames skipped."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_world_config

from deep_vision.errors import BagError
from deep_vision.geometry import read_kitti_poses
from deep_vision.io import rosmsg
from deep_vision.io.bag import (
    CAMERA_INFO_TOPIC,
    GROUND_TRUTH_TOPIC,
    IMAGE_TOPIC,
    TF_STATIC_TOPIC,
    BagSequence,
    BagWriter,
)
from deep_vision.io.image import numpy_to_image_fields
from deep_vision.synthetic import SyntheticSequence
from deep_vision.synthetic.recording import GROUND_TRUTH_HOMOGRAPHY_TOPIC, read_revisits, record

FRAMES = 10


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def recording(request, tmp_path_factory):
    config = small_world_config(frames=FRAMES)
    out = tmp_path_factory.mktemp(request.param) / "bag"
    rec = record(config, out, storage=request.param, workers=1)
    return request.param, rec, SyntheticSequence(config)


def test_counts_and_files(recording):
    storage, rec, seq = recording
    assert rec.frames == FRAMES
    assert rec.message_counts == {
        IMAGE_TOPIC: FRAMES, CAMERA_INFO_TOPIC: FRAMES, GROUND_TRUTH_TOPIC: FRAMES,
        TF_STATIC_TOPIC: 1, GROUND_TRUTH_HOMOGRAPHY_TOPIC: FRAMES - 1,
    }
    assert (rec.bag / "metadata.yaml").is_file()
    assert list(rec.bag.glob("*.mcap" if storage == "mcap" else "*.db3"))
    assert rec.preview.is_file() and rec.preview.stat().st_size > 10_000
    for name in ("poses.txt", "times.txt", "calib.txt", "homographies.txt", "revisits.csv", "world.yaml"):
        assert (rec.ground_truth / name).is_file(), name


def test_frames_stamps_ids_and_intrinsics(recording):
    _, rec, seq = recording
    bag = BagSequence(rec.bag)
    assert len(bag) == FRAMES
    frames = list(bag)
    assert [f.stamp_ns for f in frames] == list(seq.stamps_ns)
    assert np.all(np.diff(seq.stamps_ns) == 100_000_000)  # 10 Hz
    for f in frames:
        assert f.frame_id == "camera_optical_frame" and f.encoding == "mono8"
        assert f.camera == seq.camera
        np.testing.assert_array_equal(f.image, seq.image(f.index))
        np.testing.assert_allclose(f.gt_pose, seq.T_map_base[f.index], atol=1e-9)
    assert bag.camera == seq.camera
    np.testing.assert_allclose(bag.camera.K, seq.camera.K)


def test_ground_truth_frames_and_extrinsic(recording):
    _, rec, seq = recording
    bag = BagSequence(rec.bag)
    msgs = list(bag.messages([GROUND_TRUTH_TOPIC, TF_STATIC_TOPIC, CAMERA_INFO_TOPIC]))
    odom = [m for t, _, m in msgs if t == GROUND_TRUTH_TOPIC]
    assert all(m.header.frame_id == "map" and m.child_frame_id == "base_link" for m in odom)
    assert odom[3].twist.twist.linear.x == pytest.approx(seq.config.route.speed_mps, rel=0.05)
    (tf,) = [m for t, _, m in msgs if t == TF_STATIC_TOPIC]
    assert tf.transforms[0].header.frame_id == "base_link"
    assert tf.transforms[0].child_frame_id == "camera_optical_frame"
    info = next(m for t, _, m in msgs if t == CAMERA_INFO_TOPIC)
    assert info.header.frame_id == "camera_optical_frame" and info.distortion_model == "plumb_bob"
    np.testing.assert_allclose(np.asarray(info.p).reshape(3, 4), seq.camera.P)
    np.testing.assert_allclose(bag.extrinsic("camera_optical_frame"), seq.T_base_cam, atol=1e-12)
    stamps, kitti = bag.camera_poses_kitti("camera_optical_frame")
    np.testing.assert_allclose(kitti, seq.kitti_poses, atol=1e-9)
    np.testing.assert_allclose(read_kitti_poses(rec.ground_truth / "poses.txt"), seq.kitti_poses, atol=1e-7)


def test_ground_truth_homography_topic(recording):
    _, rec, seq = recording
    bag = BagSequence(rec.bag)
    hs = [m for _, _, m in bag.messages([GROUND_TRUTH_HOMOGRAPHY_TOPIC])]
    assert len(hs) == FRAMES - 1
    for k, m in enumerate(hs, start=1):
        assert rosmsg.stamp_to_ns(m.header.stamp) == seq.stamps_ns[k]
        assert rosmsg.stamp_to_ns(m.source_stamp) == seq.stamps_ns[k - 1]
        np.testing.assert_allclose(np.asarray(m.matrix).reshape(3, 3), seq.ground_homographies[k], rtol=1e-12)
        assert m.valid
    assert np.loadtxt(rec.ground_truth / "homographies.txt").shape == (FRAMES, 9)


def test_lazy_slicing(recording):
    _, rec, seq = recording
    bag = BagSequence(rec.bag)
    assert [f.index for f in bag.frames(start=2, stop=8, stride=3)] == [2, 5]


def test_revisits_file(tmp_path):
    config = small_world_config(frames=300)
    seq = SyntheticSequence(config)
    from deep_vision.synthetic.recording import write_ground_truth_files

    write_ground_truth_files(seq, tmp_path)
    pairs = read_revisits(tmp_path / "revisits.csv")
    assert pairs == [(r.query, r.match) for r in seq.revisits] and len(pairs) > 50


def test_bad_frames_are_counted_and_skipped(tmp_path):
    out = tmp_path / "bad"
    good = numpy_to_image_fields(np.full((4, 6), 7, np.uint8), "mono8")
    with BagWriter(out, storage="mcap") as w:
        for i, fields in enumerate([good, good._replace(data=good.data[:-3]), good._replace(encoding="yuv422"), good]):
            w.write(IMAGE_TOPIC, "sensor_msgs/msg/Image", i, rosmsg.image_msg(fields, 1000 + i, "cam"))
    bag = BagSequence(out)
    frames = list(bag)
    assert [f.index for f in frames] == [0, 3]
    assert bag.bad_frames == 2
    assert frames[0].camera is None and frames[0].gt_pose is None


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(BagError, match="no metadata.yaml"):
        BagSequence(tmp_path)
    out = tmp_path / "b"
    with BagWriter(out) as w:
        w.write("/other", "std_msgs/msg/String", 1, rosmsg._cls("std_msgs/msg/String")(data="x"))
    with pytest.raises(BagError, match="no topic '/camera/image_raw'; topics: /other"):
        BagSequence(out)
    with pytest.raises(BagError, match="already exists"):
        BagWriter(out)
    with pytest.raises(BagError, match="unknown bag storage 'rosbag1'"):
        BagWriter(tmp_path / "c", storage="rosbag1")
