"""deep_vision_msgs is built and usable; the node harness runs a node and carries bag messages."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_ros, small_world_config

from deep_vision.io import rosmsg
from deep_vision.io.image import image_to_numpy


def test_homography_publisher_to_subscriber(ros_harness):
    from builtin_interfaces.msg import Time
    from deep_vision_msgs.msg import Homography

    h = ros_harness
    out = h.collect("homography", Homography)
    pub = h.publisher("homography", Homography)
    h.wait_for_subscribers(pub)
    msg = Homography()
    msg.header.stamp = Time(sec=12, nanosec=5)
    msg.header.frame_id = "camera_optical_frame"
    msg.source_stamp = Time(sec=11, nanosec=900_000_005)
    msg.matrix = [1.0, 0.01, 3.0, -0.02, 1.0, 4.0, 1e-5, 0.0, 1.0]
    msg.corner_uncertainty_px = 0.75
    msg.valid = True
    pub.publish(msg)
    (got,) = h.wait_for(out, 1, timeout=10.0)
    assert got.header.stamp.sec == 12 and got.source_stamp.nanosec == 900_000_005
    np.testing.assert_allclose(got.matrix, msg.matrix)
    assert got.corner_uncertainty_px == pytest.approx(0.75) and got.valid


def test_loop_closure_array_fields(ros_harness):
    from deep_vision_msgs.msg import LoopClosure, LoopClosureArray

    h = ros_harness
    out = h.collect("loop_closures", LoopClosureArray)
    pub = h.publisher("loop_closures", LoopClosureArray)
    h.wait_for_subscribers(pub)
    lc = LoopClosure(query_id=7, match_id=2, similarity=0.9, verified=True, inliers=120,
                     has_relative_pose=True, metric_translation=False)
    lc.relative_pose.covariance = [0.1] * 36
    pub.publish(LoopClosureArray(candidates=[lc, LoopClosure(query_id=7, match_id=1)]))
    (got,) = h.wait_for(out, 1)
    assert [c.match_id for c in got.candidates] == [2, 1]
    assert got.candidates[0].verified and got.candidates[0].inliers == 120
    assert len(got.candidates[0].relative_pose.covariance) == 36


def test_rosbags_typestore_matches_generated_messages():
    """The .msg files the package ships (for rosbags) describe the same messages colcon built."""
    require_ros()
    from deep_vision.nodes.bridge import rclpy_to_rosbags, rosbags_to_rclpy

    h = rosmsg.homography_msg(np.arange(9.0).reshape(3, 3), 1_500_000_000_123, 1_400_000_000_000, "cam", 0.5, False)
    r = rosbags_to_rclpy(h, "deep_vision_msgs/msg/Homography")
    assert r.header.stamp.sec == 1500 and r.header.stamp.nanosec == 123 and r.valid is False
    np.testing.assert_allclose(r.matrix, np.arange(9.0))
    back = rclpy_to_rosbags(r)
    np.testing.assert_allclose(back.matrix, h.matrix)
    assert back.source_stamp.sec == 1400


def _echo_node_class():
    """A minimal node under test: publishes the mean intensity of each image as a Homography scale."""
    from deep_vision_msgs.msg import Homography
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    class MeanNode(Node):
        def __init__(self, **kwargs):
            super().__init__("mean_node", **kwargs)
            self.pub = self.create_publisher(Homography, "homography", 10)
            self.create_subscription(Image, "image", self.on_image, 10)

        def on_image(self, msg):
            out = Homography()
            out.header = msg.header
            out.matrix = [float(image_to_numpy(msg).mean())] + [0.0] * 8
            out.valid = True
            self.pub.publish(out)

    return MeanNode


def test_harness_plays_a_bag_into_a_node(ros_harness, tmp_path):
    from deep_vision_msgs.msg import Homography

    from deep_vision.synthetic import SyntheticSequence
    from deep_vision.synthetic.recording import record

    config = small_world_config(frames=5)
    rec = record(config, tmp_path / "bag", workers=1)
    seq = SyntheticSequence(config)
    h = ros_harness
    h.add_node(_echo_node_class())
    out = h.collect("homography", Homography)
    # Wait until the node's image subscription is matched before playing.
    probe = h.publisher("image", __import__("sensor_msgs.msg", fromlist=["Image"]).Image)
    h.wait_for_subscribers(probe)
    sent = h.publish_bag(rec.bag, {"/camera/image_raw": "image"}, between=lambda: h.spin_for(0.05))
    assert sent == 5
    h.wait_for(out, 5, timeout=10.0)
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in out]
    assert stamps == list(seq.stamps_ns)
    for m, i in zip(out, range(5)):
        assert m.matrix[0] == pytest.approx(seq.image(i).mean(), rel=1e-6)


def test_wait_for_times_out_with_topic_named(ros_harness):
    from std_msgs.msg import String

    out = ros_harness.collect("nothing_here", String)
    with pytest.raises(TimeoutError, match="0 of 1 message.*'nothing_here'"):
        ros_harness.wait_for(out, 1, timeout=0.3)
