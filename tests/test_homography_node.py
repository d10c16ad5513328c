"""homography_node on a synthetic bag: stamps, agreement with the ground-plane homography, resets, bad input."""

from __future__ import annotations


import numpy as np
import pytest
from conftest import REPO, require_ros, small_world_config

from deep_vision.geometry.homography import apply_homography
from deep_vision.io.image import numpy_to_image_fields

MODEL = REPO / "models" / "homography.onnx"


def _node_factory(**overrides):
    from rclpy.parameter import Parameter

    from deep_vision.nodes.homography_node import HomographyNode

    params = {"model_path": str(MODEL), "backend": "onnxruntime", "image_qos": "reliable", **overrides}

    def make(context):
        return HomographyNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])

    return make


@pytest.fixture(scope="module")
def ground_bag(tmp_path_factory):
    """A half-KITTI-size drive where the ground is the only surface (no buildings)."""
    from deep_vision.synthetic.recording import record

    config = small_world_config(frames=8, width=620, height=188)
    config.scene.building_gap_m = [1000.0, 1001.0]  # no building fits along any edge
    out = tmp_path_factory.mktemp("ground") / "bag"
    record(config, out, workers=1)
    return out, config


def _image_msg(array, stamp_ns, encoding="mono8"):
    from sensor_msgs.msg import Image

    f = numpy_to_image_fields(array, encoding)
    msg = Image(height=f.height, width=f.width, encoding=f.encoding, is_bigendian=f.is_bigendian, step=f.step,
                data=f.data.tobytes())
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = "camera_optical_frame"
    return msg


def test_publishes_ground_homography(ros_harness, ground_bag):
    from deep_vision_msgs.msg import Homography
    from sensor_msgs.msg import Image

    from deep_vision.synthetic import SyntheticSequence

    bag, config = ground_bag
    seq = SyntheticSequence(config)
    h = ros_harness
    h.add_node(_node_factory(refine_width=640))  # ECC at full resolution: sub-pixel at 620 px
    out = h.collect("homography", Homography)
    probe = h.publisher("image", Image)
    h.wait_for_subscribers(probe)
    h.publish_bag(bag, {"/camera/image_raw": "image"}, between=lambda: h.spin_for(0.05))
    h.wait_for(out, len(seq) - 1, timeout=60.0)
    # Ground region: lower-central part of the image.
    ys, xs = np.mgrid[140:185:5, 160:460:20]
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(float)
    errors = []
    for k, msg in enumerate(out, start=1):
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == seq.stamps_ns[k]
        assert msg.source_stamp.sec * 10**9 + msg.source_stamp.nanosec == seq.stamps_ns[k - 1]
        assert msg.header.frame_id == "camera_optical_frame"
        H = np.asarray(msg.matrix).reshape(3, 3)
        errors.append(np.linalg.norm(apply_homography(H, pts) - apply_homography(seq.ground_homographies[k], pts), axis=1).mean())
        assert msg.valid
    identity = np.mean([np.linalg.norm(apply_homography(seq.ground_homographies[k], pts) - pts, axis=1).mean()
                        for k in range(1, len(seq))])
    assert np.median(errors) < 1.0, (errors, identity)
    assert identity > 10 * np.median(errors)


def test_resets_and_bad_frames(ros_harness):
    from deep_vision_msgs.msg import Homography
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    h = ros_harness
    h.add_node(_node_factory(refine=False))
    out = h.collect("homography", Homography)
    diags = h.collect("/diagnostics", DiagnosticArray)
    pub = h.publisher("image", Image)
    h.wait_for_subscribers(pub)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 200), dtype=np.uint8)
    t = 1_700_000_000_000_000_000
    sequence = [
        _image_msg(img, t),                       # first frame: no pair
        _image_msg(img, t + 100_000_000),         # pair 1
        _image_msg(np.zeros((60, 100), np.uint8), t + 200_000_000),  # size change: reset, no pair
        _image_msg(np.zeros((60, 100), np.uint8), t + 300_000_000),  # pair 2
        _image_msg(np.zeros((60, 100), np.uint8), t + 250_000_000),  # time backwards: reset
        _image_msg(np.zeros((60, 100), np.uint8), t + 350_000_000),  # pair 3
    ]
    bad = _image_msg(img, t + 400_000_000)
    bad.data = bad.data[:-7]  # truncated
    sequence += [bad, _image_msg(np.zeros((60, 100), np.uint8), t + 450_000_000)]  # pair 4 (bad one skipped)
    for msg in sequence:
        pub.publish(msg)
        h.spin_for(0.1)
    h.wait_for(out, 4, timeout=20.0)
    h.spin_for(1.5)
    assert len(out) == 4
    assert [m.source_stamp.nanosec for m in out] == [0, 200_000_000, 250_000_000, 350_000_000]
    values = {kv.key: kv.value for kv in diags[-1].status[0].values}
    assert values["bad_frames"] == "1"
    assert values["reset_size_change"] == "1" and values["reset_time_backwards"] == "1"
    assert values["backend"].startswith("onnxruntime")


def test_missing_model_fails_at_start_naming_the_parameter():
    require_ros()
    import rclpy

    from deep_vision.errors import ConfigError

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ConfigError, match="parameter 'model_path'.*does-not-exist.onnx"):
            _node_factory(model_path="/does-not-exist.onnx")(context)
    finally:
        rclpy.shutdown(context=context)
