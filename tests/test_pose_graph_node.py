"""pose_graph_node with the node harness: drifting odometry around a loop + verified loop closures (one arriving
before its odometry) -> an optimised path nearer the truth and map -> odom; bad odometry, a time jump backwards,
a restart, a loop closure whose odometry never comes; the wiring to the other nodes' topics."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from conftest import REPO, require_ros

pytest.importorskip("gtsam")

from deep_vision.geometry.transforms import (  # noqa: E402
    adjoint,
    invert_transform,
    make_transform,
    quaternion_from_rotation,
    rotation_from_quaternion,
    rotation_z,
)

RADIUS, FRAMES_PER_LAP, EXTRA = 20.0, 120, 50  # ~1.05 m per frame
T0_NS, DT_NS = 1_000 * 10**9, 100_000_000


def _route(n: int) -> np.ndarray:
    """base_link poses (REP 103, z up) on a circle starting at the origin heading +x; later laps 0.8 m outwards,
    so that loop closures have a translation direction."""
    poses = np.empty((n, 4, 4))
    for i in range(n):
        a = 2 * np.pi * i / FRAMES_PER_LAP
        r = RADIUS + (0.8 if i >= FRAMES_PER_LAP else 0.0)
        poses[i] = make_transform(rotation_z(a), [r * np.sin(a), RADIUS - r * np.cos(a), 0.0])
    return poses


def _drifting_odometry(gt: np.ndarray, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """The true steps with a yaw bias, a 3 % scale error and noise, integrated; covariance in the odom frame."""
    rng = np.random.default_rng(seed)
    est, covs, cov_local = [gt[0].copy()], [np.zeros((6, 6))], np.zeros((6, 6))
    for i in range(1, len(gt)):
        step = invert_transform(gt[i - 1]) @ gt[i]
        noisy = step.copy()
        noisy[:3, 3] = noisy[:3, 3] * 1.03 + rng.normal(0, 0.01, 3)
        noisy[:3, :3] = noisy[:3, :3] @ rotation_z(0.0012 + rng.normal(0, 1e-3))
        est.append(est[-1] @ noisy)
        q = np.diag([(0.03 * np.linalg.norm(step[:3, 3]) + 0.01) ** 2] * 3 + [0.005**2] * 3)
        A = adjoint(invert_transform(noisy))
        cov_local = A @ cov_local @ A.T + q
        W = adjoint(est[-1])
        covs.append(W @ cov_local @ W.T)
    return np.array(est), covs


def _odometry_msg(stamp: int, T: np.ndarray, cov: np.ndarray):
    from nav_msgs.msg import Odometry

    msg = Odometry()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp), 10**9)
    msg.header.frame_id, msg.child_frame_id = "odom", "base_link"
    p, o = msg.pose.pose.position, msg.pose.pose.orientation
    p.x, p.y, p.z = (float(v) for v in T[:3, 3])
    o.x, o.y, o.z, o.w = (float(v) for v in quaternion_from_rotation(T[:3, :3]))
    msg.pose.covariance = [float(v) for v in np.asarray(cov).reshape(36)]
    return msg


def _loop_msg(query_stamp: int, match_stamp: int, T_query_match: np.ndarray | None = None):
    """A LoopClosureArray as place_recognition_node publishes it with publish_unverified: a verified candidate
    (metric T_query_match between base_link frames) and an unverified one."""
    from deep_vision_msgs.msg import LoopClosure, LoopClosureArray

    T = np.eye(4) if T_query_match is None else T_query_match
    out = LoopClosureArray()
    out.header.stamp.sec, out.header.stamp.nanosec = divmod(int(query_stamp), 10**9)
    out.header.frame_id = "camera_optical_frame"
    lc = LoopClosure(verified=True, has_relative_pose=True, metric_translation=True, inliers=80, similarity=0.9,
                     frame_id="base_link")
    lc.query_stamp.sec, lc.query_stamp.nanosec = divmod(int(query_stamp), 10**9)
    lc.match_stamp.sec, lc.match_stamp.nanosec = divmod(int(match_stamp), 10**9)
    pose = lc.relative_pose.pose
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in T[:3, 3])
    o = pose.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in quaternion_from_rotation(T[:3, :3]))
    lc.relative_pose.covariance = [float(v) for v in np.diag([0.01, 0.01, 0.01, 1e-4, 1e-4, 1e-4]).reshape(36)]
    unverified = LoopClosure(verified=False)
    unverified.relative_pose.pose.orientation.w = 1.0
    out.candidates = [lc, unverified]
    return out


def _node(h, **overrides):
    from deep_vision.nodes.pose_graph_node import PoseGraphNode
    from rclpy.parameter import Parameter

    params = {"keyframe_distance_m": 3.0, "queue_depth": 1000, **overrides}
    return h.add_node(lambda context: PoseGraphNode(
        context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))


def _io(h):
    from deep_vision_msgs.msg import LoopClosureArray
    from nav_msgs.msg import Odometry, Path

    path = h.collect("path", Path)
    odo_pub = h.publisher("odometry", Odometry, 1000)
    loop_pub = h.publisher("loop_closures", LoopClosureArray, 100)
    h.wait_for_subscribers(odo_pub)
    h.wait_for_subscribers(loop_pub)
    return path, odo_pub, loop_pub


def _send(h, node, pub, msg, counter: str, timeout: float = 5.0) -> None:
    """Publish and spin until the node counted it."""
    want = node.diag.counts()[counter] + 1
    pub.publish(msg)
    assert h.spin_until(lambda: node.diag.counts()[counter] >= want, timeout), f"{counter} stayed below {want}"


def _latest_path(h, node, path):
    """The newest Path once it holds every keyframe (the harness receives it after the node published it)."""
    assert h.spin_until(lambda: path and len(path[-1].poses) == node.stage.graph.stats.keyframes, 5.0)
    return path[-1]


def _path_positions(msg) -> tuple[np.ndarray, np.ndarray]:
    stamps = np.array([p.header.stamp.sec * 10**9 + p.header.stamp.nanosec for p in msg.poses], np.int64)
    xyz = np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in msg.poses])
    return stamps, xyz


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum((a - b) ** 2, axis=1))))


def test_loop_closures_pull_the_path_to_the_truth(ros_harness):
    h = ros_harness
    from tf2_msgs.msg import TFMessage

    from visualization_msgs.msg import Marker, MarkerArray

    tf_msgs = h.collect("/tf", TFMessage, 100)
    markers = h.collect("loop_closure_markers", MarkerArray)
    node = _node(h, publish_markers=True)
    path, odo_pub, loop_pub = _io(h)
    n = FRAMES_PER_LAP + EXTRA
    gt = _route(n)
    odo, covs = _drifting_odometry(gt)
    stamps = T0_NS + np.arange(n, dtype=np.int64) * DT_NS
    loops = [i for i in range(FRAMES_PER_LAP, n) if i % 10 == 0]
    early = loops[0]  # its loop closure comes 3 frames before its odometry
    path_before = None
    for i in range(n):
        if i == early - 3:
            _send(h, node, loop_pub, _loop_msg(stamps[early], stamps[early - FRAMES_PER_LAP],
                                               invert_transform(gt[early]) @ gt[early - FRAMES_PER_LAP]),
                  "loop_msgs")
            assert node.diag.counts()["pending_loops"] == 1 and node.diag.counts()["loops_received"] == 0
        if i == 50:  # a broken odometry message between two frames: counted, skipped
            bad = odo[i].copy()
            bad[0, 3] = np.nan
            _send(h, node, odo_pub, _odometry_msg(stamps[i] - DT_NS // 2, bad, covs[i]), "frames_in")
        if i == early:
            path_before = _latest_path(h, node, path)
        _send(h, node, odo_pub, _odometry_msg(stamps[i], odo[i], covs[i]), "frames_in")
        if i == early:
            assert node.diag.counts()["pending_loops"] == 0 and node.diag.counts()["loops_accepted"] == 1, \
                (dict(node.diag.counts()), node.stage.graph.decisions)
        elif i in loops:
            _send(h, node, loop_pub, _loop_msg(stamps[i], stamps[i - FRAMES_PER_LAP],
                                               invert_transform(gt[i]) @ gt[i - FRAMES_PER_LAP]),
                  "loop_msgs")
    last_path = _latest_path(h, node, path)

    c = node.diag.counts()
    assert c["bad_odometry"] == 1 and c["frames_out"] == n
    assert c["loops_received"] == c["loops_accepted"] == len(loops), dict(c)
    assert c["loops_unverified"] == len(loops) and c["pending_dropped"] == 0 and c["resets"] == 0
    assert c["keyframes"] == node.stage.graph.stats.keyframes > 30

    # The path: optimised keyframes in the map frame, stamped with the odometry's stamps.
    assert last_path.header.frame_id == "map" and len(last_path.poses) == c["keyframes"]
    kf_stamps, after = _path_positions(last_path)
    idx = ((kf_stamps - T0_NS) // DT_NS).astype(int)
    np.testing.assert_array_equal(stamps[idx], kf_stamps)
    raw = _rms(odo[idx][:, :3, 3], gt[idx][:, :3, 3])
    corrected = _rms(after, gt[idx][:, :3, 3])
    before_stamps, before = _path_positions(path_before)
    before_idx = ((before_stamps - T0_NS) // DT_NS).astype(int)
    assert raw > 2.0, raw  # the simulated odometry drifts
    np.testing.assert_allclose(before, odo[before_idx][:, :3, 3], atol=1e-3)  # no loop yet: the odometry
    assert corrected < 0.5 * raw, (raw, corrected)

    # Loop-closure markers (publish_markers): with the last path, a line per accepted loop closure between two of
    # its keyframes' optimised positions.
    assert h.spin_until(lambda: markers and len(markers[-1].markers[0].points) == 2 * len(loops), 2.0)
    (m,) = markers[-1].markers
    assert m.type == Marker.LINE_LIST and m.action == Marker.ADD and m.header.frame_id == "map"
    ends = np.array([[q.x, q.y, q.z] for q in m.points]).reshape(-1, 2, 3)
    for a, b in ends:
        da, db = np.linalg.norm(after - a, axis=1), np.linalg.norm(after - b, axis=1)
        assert da.min() < 1e-6 and db.min() < 1e-6
        assert idx[np.argmin(da)] - idx[np.argmin(db)] >= FRAMES_PER_LAP - 30  # a lap apart

    # map -> odom: the latest keyframe's correction, with the last odometry stamp.
    def last_tf():
        sent = [m.transforms[0] for m in tf_msgs if m.transforms[0].child_frame_id == "odom"]
        return sent[-1] if sent and sent[-1].header.stamp.sec * 10**9 + sent[-1].header.stamp.nanosec == stamps[-1] \
            else None

    assert h.spin_until(lambda: last_tf() is not None, 2.0)
    tf = last_tf()
    assert tf.header.frame_id == "map" and tf.child_frame_id == "odom"
    assert tf.header.stamp.sec * 10**9 + tf.header.stamp.nanosec == stamps[-1]
    t, q = tf.transform.translation, tf.transform.rotation
    T_map_odom = make_transform(rotation_from_quaternion([q.x, q.y, q.z, q.w]), [t.x, t.y, t.z])
    np.testing.assert_allclose((T_map_odom @ odo[idx[-1]])[:3, 3], after[-1], atol=1e-4)
    assert np.linalg.norm(T_map_odom[:3, 3]) > 0.5  # the loops moved the map away from the odometry

    values = {}
    assert h.spin_until(lambda: _diagnostics(h, values), 3.0)
    assert values["loops_accepted"] == str(len(loops)) and values["bad_frames"] == "1"


def _diagnostics(h, values: dict) -> bool:
    """Collect the pose graph's /diagnostics (first call subscribes); True once one arrived."""
    from diagnostic_msgs.msg import DiagnosticArray

    if "collector" not in values:
        values["collector"] = h.collect("/diagnostics", DiagnosticArray)
    for msg in values["collector"]:
        for status in msg.status:
            if status.name.startswith("pose_graph_node"):
                values.update({kv.key: kv.value for kv in status.values})
                return True
    return False


def test_map_to_odom_on_tf(ros_harness):
    """map -> odom reaches /tf (through tf2_ros, else tf2_msgs, which set-up builds where ROS 2 lacks it)."""
    from tf2_msgs.msg import TFMessage

    h = ros_harness
    node = _node(h)
    tf_msgs = h.collect("/tf", TFMessage, 100)
    _, odo_pub, _ = _io(h)
    for i in range(3):
        _send(h, node, odo_pub, _odometry_msg(T0_NS + i * DT_NS, make_transform(np.eye(3), [i, 0, 0]), np.eye(6) * i),
              "frames_in")
    assert h.spin_until(lambda: any(m.transforms[0].child_frame_id == "odom" for m in tf_msgs), 3.0)
    tf = next(m.transforms[0] for m in tf_msgs if m.transforms[0].child_frame_id == "odom")
    assert tf.header.frame_id == "map" and node.out.sent["/tf"] == 3


def test_time_jump_backwards_keeps_the_map_and_late_loops_time_out(ros_harness):
    h = ros_harness
    node = _node(h, keyframe_distance_m=2.0, pending_timeout_s=5.0)
    path, odo_pub, loop_pub = _io(h)

    def straight(i: int) -> np.ndarray:
        return make_transform(np.eye(3), [float(i), 0.0, 0.0])

    def cov(i: int) -> np.ndarray:
        return np.diag([0.01] * 3 + [1e-4] * 3) * i

    for i in range(20):  # first pass: 1 m per frame along x
        _send(h, node, odo_pub, _odometry_msg(T0_NS + i * DT_NS, straight(i), cov(i)), "frames_in")
    first_pass = len(_latest_path(h, node, path).poses)
    for i in range(10):  # the bag played again: same stamps, the odometry starts again from the identity
        _send(h, node, odo_pub, _odometry_msg(T0_NS + i * DT_NS, straight(i), cov(i)), "frames_in")
    c = node.diag.counts()
    assert c["resets"] == c["reset_time_backwards"] == 1 and node.stage.graph.stats.resets == 1
    stamps, _ = _path_positions(_latest_path(h, node, path))
    assert len(stamps) > first_pass and stamps[first_pass] == T0_NS  # old keyframes kept, new chain appended

    # Replay frame 9 sees first-pass frame 12 (a stamp only the first pass has): the two chains are joined.
    rel = invert_transform(straight(9)) @ straight(12)
    _send(h, node, loop_pub, _loop_msg(T0_NS + 9 * DT_NS, T0_NS + 12 * DT_NS, rel), "loop_msgs")
    d = node.stage.graph.decisions[-1]
    assert d.accepted and d.match_key < first_pass <= d.query_key, d

    # An odometry restart at a later stamp (identity, zero covariance) is a reset too.
    _send(h, node, odo_pub, _odometry_msg(T0_NS + 10 * DT_NS, np.eye(4), np.zeros((6, 6))), "frames_in")
    c = node.diag.counts()
    assert c["reset_restart"] == 1 and node.stage.graph.stats.resets == 2

    # Loop closures for frames the odometry never reaches wait, then time out (message time).
    far = T0_NS + 100 * 10**9
    _send(h, node, loop_pub, _loop_msg(far, T0_NS), "loop_msgs")
    assert node.diag.counts()["pending_loops"] == 1
    _send(h, node, loop_pub, _loop_msg(far + 6 * 10**9, T0_NS), "loop_msgs")
    c = node.diag.counts()
    assert c["pending_dropped_timeout"] == 1 and c["pending_loops"] == 1


def test_stamp_epochs_keep_graph_stamps_increasing_across_time_jumps():
    require_ros()
    from deep_vision.stages.pose_graph import StampEpochs

    s = 10**9
    e = StampEpochs()
    graph = [e.add(t * s) for t in (10, 20, 30, 10, 20)]  # the bag played again from 10 s
    assert all(b > a for a, b in pairwise(graph)) and e.last == 20 * s
    assert e.to_graph(20 * s) == graph[4]  # the newest pass first
    assert e.to_graph(20 * s, before=graph[4]) == graph[1]  # the same stamp as the query: the earlier pass
    assert e.to_graph(30 * s) == graph[2] and e.to_graph(35 * s) is None
    assert [e.to_message(g) for g in graph] == [t * s for t in (10, 20, 30, 10, 20)]


def test_bad_parameters_fail_at_start():
    require_ros()
    import rclpy
    from deep_vision.errors import ConfigError
    from deep_vision.nodes.pose_graph_node import PoseGraphNode
    from rclpy.parameter import Parameter

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        for name, value, match in [("loop_kernel", "tukey", "loop_kernel"),
                                   ("keyframe_distance_m", 0.0, "pose_graph_node: .*keyframe_distance_m"),
                                   ("loop_max_distance_m", 0.0, "loop_max_distance_m")]:
            overrides = [Parameter(name, value=value)]
            if name == "keyframe_distance_m":
                overrides.append(Parameter("keyframe_angle_deg", value=0.0))
            with pytest.raises(ConfigError, match=match):
                PoseGraphNode(context=context, parameter_overrides=overrides)
    finally:
        rclpy.shutdown(context=context)


def test_inputs_are_the_other_nodes_outputs_and_the_runner_starts_it():
    """odometry and loop_closures are the relative names odometry_node and place_recognition_node publish
    (listed in runner.OUTPUT_TOPICS), so launch file and runner connect them without remapping."""
    require_ros()
    import rclpy
    from deep_vision.nodes.bridge import type_name
    from deep_vision.nodes.runner import OUTPUT_TOPICS, start_nodes

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        (node,) = start_nodes(context, ["pose_graph"], REPO / "config" / "perception.yaml")
        subs = {s.topic_name.lstrip("/"): type_name(s.msg_type) for s in node.subscriptions}
        subs.pop("tf_static", None)  # the camera pose, where tf2_ros is not installed
        assert subs == {"odometry": OUTPUT_TOPICS["odometry"], "loop_closures": OUTPUT_TOPICS["loop_closures"]}
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_two_odometry_sources_on_one_topic_and_bad_covariances(ros_harness):
    """Two odometry publishers on one topic (two trajectories, stamps interleaved and often going back) and a
    message with a NaN covariance: the node never dies, counts what it skipped and the new trajectories, keeps
    its graph and still publishes the path."""
    h = ros_harness
    node = _node(h, keyframe_distance_m=1.0)
    path, odo_pub, _ = _io(h)
    for i in range(40):
        stamp = T0_NS + i * DT_NS // 2 - (i % 2) * 3 * DT_NS  # the second source runs 0.3 s behind
        T = make_transform(np.eye(3), [0.5 * i if i % 2 == 0 else -0.7 * i, 0.1 * (i % 2), 0.0])
        _send(h, node, odo_pub, _odometry_msg(stamp, T, np.eye(6) * 1e-3 * (1 + i)), "frames_in")
    bad = _odometry_msg(T0_NS + 100 * DT_NS, np.eye(4), np.full((6, 6), np.nan))
    _send(h, node, odo_pub, bad, "frames_in")
    assert node.diag.counts()["bad_odometry"] == 1 and node.diag.counts()["resets"] >= 10
    assert node.stage.graph.stats.keyframes >= 10 and path
    _send(h, node, odo_pub, _odometry_msg(T0_NS + 101 * DT_NS, make_transform(np.eye(3), [30.0, 0, 0]), np.eye(6)),
          "frames_in")  # and it goes on
    assert node.diag.counts()["frames_out"] == 41  # every finite message processed
