"""odometry_node: frames, stamps and camera -> base_link conversion (exact with a ground-truth motion source),
covariance, resets and bad input; the model is loaded through the real path at start-up."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_ros, small_world_config
from deep_vision.geometry.transforms import (
    euler_zyx_from_rotation,
    invert_transform,
    rotation_from_quaternion,
)

FRAMES = 10


@pytest.fixture(scope="module")
def vo_model(random_vo_model):
    return random_vo_model


def _record_drive(tmp_path_factory, name: str, width: int, height: int):
    from deep_vision.synthetic import SyntheticSequence
    from deep_vision.synthetic.recording import record

    config = small_world_config(frames=FRAMES, width=width, height=height)
    out = tmp_path_factory.mktemp(name) / "bag"
    record(config, out, workers=1)
    return out, SyntheticSequence(config)


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    return _record_drive(tmp_path_factory, "drive", 320, 120)


@pytest.fixture(scope="module")
def drive_wide(tmp_path_factory):
    """The same drive at 620 x 188: enough road below the horizon for the ground plane."""
    return _record_drive(tmp_path_factory, "drive_wide", 620, 188)


class TruthBackend:
    """Replaces the network's output with the true camera motion, its length times ``length`` (and counts
    calls)."""

    def __init__(self, inner, poses, length=1.0):
        self.inner, self.poses, self.k, self.length = inner, poses, 0, length
        self.label, self.precision = inner.label, inner.precision

    def run(self, feeds):
        out = self.inner.run(feeds)  # the real network runs: shapes and state are real
        rel = invert_transform(self.poses[self.k]) @ self.poses[self.k + 1]
        self.k += 1
        out["motion"] = np.concatenate([rel[:3, 3] * self.length,
                                        euler_zyx_from_rotation(rel[:3, :3])])[None].astype(np.float32)
        return out


def _factory(vo_model, seq=None, length=1.0, **overrides):
    from deep_vision.nodes.odometry_node import OdometryNode
    from rclpy.parameter import Parameter

    T = seq.T_base_cam if seq is not None else np.eye(4)
    from deep_vision.geometry.transforms import quaternion_from_rotation

    pose = [float(v) for v in T[:3, 3]] + [float(v) for v in quaternion_from_rotation(T[:3, :3])]
    params = {"model_path": str(vo_model), "backend": "onnxruntime", "image_qos": "reliable", "camera_pose": pose,
              **overrides}

    def make(context):
        node = OdometryNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        if seq is not None:
            node.stage.vo.backend = TruthBackend(node.stage.vo.backend, seq.kitti_poses, length)
        return node

    return make


def test_odometry_matches_ground_truth_in_base_link(ros_harness, vo_model, drive):
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import Image

    bag, seq = drive
    h = ros_harness
    from tf2_msgs.msg import TFMessage

    h.add_node(_factory(vo_model, seq))
    out = h.collect("odometry", Odometry)
    tf_out = h.collect("/tf", TFMessage, 100)
    probe = h.publisher("image", Image)
    h.wait_for_subscribers(probe)
    h.publish_bag(bag, {"/camera/image_raw": "image"}, between=lambda: h.spin_for(0.05))
    h.wait_for(out, FRAMES, timeout=30.0)
    h.wait_for(tf_out, FRAMES, timeout=10.0)
    # odom -> base_link on /tf: one per estimate, the published pose
    tfs = [m.transforms[0] for m in tf_out]
    assert [(t.header.frame_id, t.child_frame_id) for t in tfs] == [("odom", "base_link")] * FRAMES
    for t, o in zip(tfs, out):
        assert t.header.stamp == o.header.stamp
        np.testing.assert_allclose([t.transform.translation.x, t.transform.translation.y, t.transform.translation.z],
                                   [o.pose.pose.position.x, o.pose.pose.position.y, o.pose.pose.position.z], atol=1e-9)
    traces = []
    for i, msg in enumerate(out):
        assert msg.header.frame_id == "odom" and msg.child_frame_id == "base_link"
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == seq.stamps_ns[i]
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        np.testing.assert_allclose([p.x, p.y, p.z], seq.T_map_base[i][:3, 3], atol=1e-4)
        np.testing.assert_allclose(rotation_from_quaternion([q.x, q.y, q.z, q.w]), seq.T_map_base[i][:3, :3], atol=1e-4)
        cov = np.asarray(msg.pose.covariance).reshape(6, 6)
        np.testing.assert_allclose(cov, cov.T, atol=1e-12)
        traces.append(np.trace(cov))
    assert traces[0] == 0 and all(b > a for a, b in zip(traces[1:], traces[2:]))
    # The covariance is in base_link's axes (x forward, y left, z up), not the camera's (z forward): after 9 m
    # straight ahead, heading noise makes the sideways and vertical positions the least certain and couples
    # them with yaw (about z) and pitch (about y). Measured 2026-12-05: var x / var y 0.89, var x / var z 0.90,
    # correlation(y, rot z) -0.30, (z, rot y) +0.30; in camera axes they would be 1.12 and about 0.
    c = np.asarray(out[-1].pose.covariance).reshape(6, 6)
    assert c[0, 0] < 0.95 * min(c[1, 1], c[2, 2]), np.diag(c)
    corr = c / np.sqrt(np.outer(np.diag(c), np.diag(c)))
    assert corr[1, 5] < -0.2 and corr[2, 4] > 0.2, corr
    # Twist in base_link: forward at the route's speed, no sideways motion.
    tw = out[5].twist.twist.linear
    assert tw.x == pytest.approx(seq.config.route.speed_mps, rel=0.05) and abs(tw.y) < 0.3
    assert np.all(np.diag(np.asarray(out[5].twist.covariance).reshape(6, 6)) > 0)


def test_hybrid_mode_with_the_ground_plane_scale(ros_harness, vo_model, drive_wide):
    """mode hybrid + scale_source ground: a network whose steps are 30 % short; after camera_info the step
    lengths come from the ground plane and the camera's height (camera_pose), so the speed is near the
    route's (this small, coarsely textured world gives noisy planes: ±25 % per frame)."""
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import CameraInfo, Image

    bag, seq = drive_wide
    h = ros_harness
    h.add_node(_factory(vo_model, seq, length=0.7, mode="hybrid", scale_source="ground"))
    out = h.collect("odometry", Odometry)
    probe = h.publisher("image", Image)
    info = h.publisher("camera_info", CameraInfo)
    h.wait_for_subscribers(probe)
    h.wait_for_subscribers(info)
    h.publish_bag(bag, {"/camera/image_raw": "image", "/camera/camera_info": "camera_info"},
                  between=lambda: h.spin_for(0.05))
    h.wait_for(out, FRAMES, timeout=30.0)
    speeds = [m.twist.twist.linear.x for m in out[2:]]
    network = 0.7 * seq.config.route.speed_mps
    assert sum(abs(v - network) < 0.05 for v in speeds) <= 1, speeds  # the network's length: before the first plane
    assert np.median(speeds) == pytest.approx(seq.config.route.speed_mps, rel=0.15), speeds
    p = out[-1].pose.pose.position
    travelled = np.linalg.norm(seq.T_map_base[-1][:3, 3] - seq.T_map_base[0][:3, 3])
    assert np.linalg.norm([p.x, p.y, p.z] - seq.T_map_base[-1][:3, 3]) < 0.25 * travelled


def test_reset_and_bad_frames(ros_harness, vo_model, drive):
    from deep_vision.io.image import numpy_to_image_fields
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import Image

    _, seq = drive
    h = ros_harness
    h.add_node(_factory(vo_model, mode="network", scale_source="network"))
    out = h.collect("odometry", Odometry)
    diags = h.collect("/diagnostics", DiagnosticArray)
    pub = h.publisher("image", Image)
    h.wait_for_subscribers(pub)

    def msg(i, stamp, truncate=False):
        f = numpy_to_image_fields(seq.image(i), "mono8")
        m = Image(height=f.height, width=f.width, encoding=f.encoding, step=f.step,
                  data=f.data.tobytes()[: -5 if truncate else None])
        m.header.stamp.sec, m.header.stamp.nanosec = divmod(int(stamp), 10**9)
        m.header.frame_id = "camera_optical_frame"
        return m

    s = seq.stamps_ns
    for m in (msg(0, s[0]), msg(1, s[1]), msg(2, s[2], truncate=True), msg(3, s[3]), msg(4, s[1])):
        pub.publish(m)
        h.spin_for(0.1)
    h.wait_for(out, 4, timeout=20.0)
    h.spin_for(1.2)
    assert len(out) == 4
    last = out[-1].pose.pose.position
    assert (last.x, last.y, last.z) == (0.0, 0.0, 0.0)  # time went backwards: a new trajectory
    assert np.trace(np.asarray(out[-1].pose.covariance).reshape(6, 6)) == 0
    values = {kv.key: kv.value for kv in diags[-1].status[0].values}
    assert values["bad_frames"] == "1" and values["reset_time_backwards"] == "1"


def test_bad_parameters_fail_at_start(vo_model):
    require_ros()
    import rclpy
    from deep_vision.errors import ConfigError

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ConfigError, match="parameter 'model_path'.*missing.onnx"):
            _factory("/missing.onnx")(context)
        with pytest.raises(ConfigError, match="camera_pose"):
            _factory(vo_model, camera_pose=[0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 2.0])(context)
        with pytest.raises(ConfigError, match="'scale_source' is ground, which needs 'mode' hybrid"):
            _factory(vo_model, mode="network", scale_source="ground")(context)
        with pytest.raises(ConfigError, match="'camera_pose'/'camera_height_m'.*height must be positive"):
            _factory(vo_model, mode="hybrid", scale_source="ground")(context)  # camera_pose: identity, height 0
    finally:
        rclpy.shutdown(context=context)
