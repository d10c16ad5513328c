"""What we measure is what we ship: one bag through the nodes over DDS and through ``deep-vision evaluate``.

The four nodes run in one process (``deep-vision run``'s runner, the launch file's node table) and a
recorder writes what they publish; ``evaluate_bag`` runs the same stages offline and writes its output bag.
Both bags must hold the same messages, field by field: homographies, odometry, loop closures, ``/tf``
(``odom → base_link`` and ``map → odom``), ``/tf_static`` and the pose graph's path.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import yaml

pytest.importorskip("gtsam")

from conftest import REPO, REVISIT_FRAMES, require_ros  # noqa: E402

FRAMES = REVISIT_FRAMES  # the revisit_bag fixture's route


@pytest.fixture(scope="module")
def loop_bag(revisit_bag):
    return revisit_bag


def _params_file(path, vo_model):
    """The shipped parameter file with a classical place descriptor, the hybrid VO with ground scale, and
    reliable deep queues for the images (nothing dropped, so both runs see every frame)."""
    data = yaml.safe_load((REPO / "config" / "perception.yaml").read_text())
    images = {"image_qos": "reliable", "queue_depth": 100, "backend": "onnxruntime"}
    sections = {k.split("/")[-1]: v["ros__parameters"] for k, v in data.items()}
    sections["homography_node"].update(images)
    sections["place_recognition_node"].update(images, descriptor="sad", sad_width=64, sad_height=24,
                                              exclude_recent_s=4.0, keyframe_interval_s=0.3)
    sections["odometry_node"].update(images, model_path=str(vo_model), mode="hybrid", scale_source="ground",
                                     threads=1)
    path.write_text(yaml.safe_dump(data))
    return path


def _read(bag) -> dict[str, list]:
    from deep_vision.io.rosmsg import typestore
    from rosbags.rosbag2 import Reader

    store, out = typestore(), defaultdict(list)
    with Reader(bag) as reader:
        for conn, _, raw in reader.messages():
            out[conn.topic].append(store.deserialize_cdr(raw, conn.msgtype))
    return out


def _ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _pose(p) -> np.ndarray:
    return np.array([p.position.x, p.position.y, p.position.z,
                     p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w])


def _transform(t) -> np.ndarray:
    return np.array([t.translation.x, t.translation.y, t.translation.z,
                     t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w])


def _by_stamp(msgs) -> dict[int, object]:
    out = {}
    for m in msgs:
        assert _ns(m.header.stamp) not in out, "two messages with one stamp"
        out[_ns(m.header.stamp)] = m
    return out


@pytest.fixture(scope="module")
def evaluated(loop_bag, random_vo_model, tmp_path_factory):
    """(parameter file, ``deep-vision evaluate``'s output folder) of the loop bag, offline."""
    from deep_vision.pipeline.evaluate import evaluate_bag

    folder = tmp_path_factory.mktemp("one_system_eval")
    params = _params_file(folder / "params.yaml", random_vo_model)
    evaluate_bag(loop_bag, folder / "eval", params_file=params, mode="offline")
    return params, folder / "eval"


def test_nodes_over_dds_publish_what_evaluate_writes(loop_bag, evaluated, tmp_path):
    require_ros()
    from deep_vision.nodes.registry import DEFAULT_NODES
    from deep_vision.nodes.runner import run

    params, eval_dir = evaluated
    # At the bag's own rate: at twice it, a host half as fast as that of the committed latency figures filled the
    # nodes' frame queues and dropped frames
    summary = run(params, DEFAULT_NODES, bag=loop_bag, rate=1.0, drain_s=60.0, record=tmp_path / "nodes")
    assert summary["played"]["/camera/image_raw"] == FRAMES
    nodes, ev = _read(tmp_path / "nodes"), _read(eval_dir / "outputs")

    # Homographies: every pair, same fields.
    hn, he = _by_stamp(nodes["/homography"]), _by_stamp(ev["/homography"])
    assert len(he) == FRAMES - 1 and hn.keys() == he.keys()
    for s, a in he.items():
        b = hn[s]
        assert (a.header.frame_id, _ns(a.source_stamp), a.valid, a.width, a.height) == \
            (b.header.frame_id, _ns(b.source_stamp), b.valid, b.width, b.height) and (a.width, a.height) == (640, 192)
        np.testing.assert_allclose(b.matrix, a.matrix, rtol=1e-9, atol=1e-9)
        assert b.corner_uncertainty_px == pytest.approx(a.corner_uncertainty_px, rel=1e-6, nan_ok=True)

    # Odometry: pose, covariance, twist and its covariance, frames.
    on, oe = _by_stamp(nodes["/odometry"]), _by_stamp(ev["/odometry"])
    assert len(oe) == FRAMES and on.keys() == oe.keys()
    for s, a in oe.items():
        b = on[s]
        assert (a.header.frame_id, a.child_frame_id) == (b.header.frame_id, b.child_frame_id) == ("odom", "base_link")
        np.testing.assert_allclose(_pose(b.pose.pose), _pose(a.pose.pose), atol=1e-9)
        np.testing.assert_allclose(b.pose.covariance, a.pose.covariance, rtol=1e-9, atol=1e-15)
        tb = [b.twist.twist.linear.x, b.twist.twist.linear.y, b.twist.twist.linear.z, b.twist.twist.angular.z]
        ta = [a.twist.twist.linear.x, a.twist.twist.linear.y, a.twist.twist.linear.z, a.twist.twist.angular.z]
        np.testing.assert_allclose(tb, ta, atol=1e-9)
        np.testing.assert_allclose(b.twist.covariance, a.twist.covariance, rtol=1e-9, atol=1e-15)

    # Loop closures: each keyframe's candidates, best first.
    ln, le = _by_stamp(nodes["/loop_closures"]), _by_stamp(ev["/loop_closures"])
    assert le.keys() == ln.keys()
    verified = 0
    for s, a in le.items():
        b = ln[s]
        assert a.header.frame_id == b.header.frame_id and len(a.candidates) == len(b.candidates)
        for ca, cb in zip(a.candidates, b.candidates, strict=True):
            fields = ("query_id", "match_id", "query_session", "match_session", "verified", "inliers",
                      "has_relative_pose", "metric_translation", "frame_id")
            assert [getattr(ca, f) for f in fields] == [getattr(cb, f) for f in fields]
            assert _ns(ca.match_stamp) == _ns(cb.match_stamp) and _ns(ca.query_stamp) == _ns(cb.query_stamp) == s
            assert cb.similarity == pytest.approx(ca.similarity, abs=1e-6)
            np.testing.assert_allclose(_pose(cb.relative_pose.pose), _pose(ca.relative_pose.pose), atol=1e-9)
            np.testing.assert_allclose(cb.relative_pose.covariance, ca.relative_pose.covariance, rtol=1e-6,
                                       atol=1e-12)
            verified += ca.verified
    assert verified >= 5, "the route's revisit gave too few verified loop closures to compare the graph on"

    # /tf: odom -> base_link per frame (odometry_node), map -> odom per frame (pose_graph_node).
    def edges(msgs):
        out = defaultdict(dict)
        for m in msgs:
            for tf in m.transforms:
                out[(tf.header.frame_id, tf.child_frame_id)][_ns(tf.header.stamp)] = _transform(tf.transform)
        return out

    tn, te = edges(nodes["/tf"]), edges(ev["/tf"])
    assert set(te) == set(tn) == {("odom", "base_link"), ("map", "odom")}
    for edge in te:
        assert len(te[edge]) == FRAMES and te[edge].keys() == tn[edge].keys()
    for s, T in te[("odom", "base_link")].items():
        np.testing.assert_allclose(tn[("odom", "base_link")][s], T, atol=1e-9)
    # The pose graph meets odometry and loop closures in arrival order over DDS, and map -> odom goes out with
    # odometry: a loop closure that comes after the next frame's odometry (or after the last frame's, when the
    # place node lags) shows in a later map -> odom, or only in the path. So: before the first loop closure the
    # two runs agree exactly; the node's map -> odom is always the correction of a graph it published as its path;
    # and the final graphs agree (below).
    first_loop = min(s for s, a in le.items() if any(c.verified and c.metric_translation for c in a.candidates))
    for s, T in te[("map", "odom")].items():
        if s < first_loop:
            np.testing.assert_allclose(tn[("map", "odom")][s], T, atol=1e-9)
    last = max(te[("map", "odom")])
    assert np.linalg.norm(te[("map", "odom")][last][:3]) > 0.1, "no loop closure moved the map"
    odom = {s: _matrix(m.pose.pose) for s, m in on.items()}

    def corrections(paths):
        return [_matrix(p.poses[-1].pose) @ np.linalg.inv(odom[_ns(p.poses[-1].header.stamp)]) for p in paths]

    node_tf = _matrix7(tn[("map", "odom")][last])
    assert min(np.abs(C - node_tf).max() for C in corrections(nodes["/path"])) < 1e-6, \
        "the node's last map -> odom is not the correction of any graph it published"
    sn, se = edges(nodes["/tf_static"]), edges(ev["/tf_static"])  # the bag's camera mounting, as played
    assert set(se) == set(sn) == {("base_link", "camera_optical_frame")}
    for edge in se:
        assert se[edge].keys() == sn[edge].keys()
        for s, T in se[edge].items():
            np.testing.assert_array_equal(sn[edge][s], T)

    # The optimised path: the last one holds every keyframe at the same place, up to iSAM2's incremental
    # solution (it relinearises a variable only when its update exceeds 0.01): replaying this bag's messages
    # with every loop closure after the last odometry moved the final keyframes by 1.3e-3 m (1-12 frames late:
    # 2.6e-6 m); bound 5e-3 m.
    pn, pe = nodes["/path"][-1], ev["/path"][-1]
    assert pn.header.frame_id == pe.header.frame_id == "map"
    assert [_ns(p.header.stamp) for p in pn.poses] == [_ns(p.header.stamp) for p in pe.poses]
    np.testing.assert_allclose([_pose(p.pose) for p in pn.poses], [_pose(p.pose) for p in pe.poses], atol=5e-3)


def _matrix7(v) -> np.ndarray:
    """4x4 of (x, y, z, qx, qy, qz, qw)."""
    from deep_vision.geometry.transforms import make_transform, rotation_from_quaternion

    return make_transform(rotation_from_quaternion(v[3:]), v[:3])


def _matrix(p) -> np.ndarray:
    return _matrix7(_pose(p))


def _adjoint(T: np.ndarray) -> np.ndarray:
    """(translation, rotation) adjoint: T exp(ξ) = exp(Ad ξ) T, written out here (not the package's)."""
    R, t = T[:3, :3], T[:3, 3]
    skew = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    A = np.zeros((6, 6))
    A[:3, :3], A[:3, 3:], A[3:, 3:] = R, skew @ R, R
    return A


def test_a_back_end_rebuilds_the_pose_graph_from_the_output_bag_alone(loop_bag, evaluated):
    """What a SLAM back end would do with our outputs, with GTSAM directly and nothing of the package's graph:
    keyframes every ``keyframe_distance_m`` / ``keyframe_angle_deg`` of odometry (the parameter file's values),
    between factors from consecutive keyframes' odometry poses (covariance: the growth of the odometry's
    covariance between them), and each LoopClosureArray's first verified metric candidate as a between factor
    of the keyframes at or before its two stamps (the odometry carries each end onto its keyframe), with the
    message's covariance (moved from the left, query axes, to GTSAM's right perturbation) and a Cauchy kernel
    (2 sigma, as the node). Batch Levenberg-Marquardt. Its keyframes must be the pose graph node's (the last
    /path) and have the same ATE against the ground truth, within 1 %."""
    import gtsam

    from deep_vision.eval.trajectory_metrics import ate_rpe
    from deep_vision.geometry.transforms import make_transform, rotation_from_quaternion
    from deep_vision.io.bag import BagSequence

    params, eval_dir = evaluated
    graph_params = yaml.safe_load(params.read_text())["/**/pose_graph_node"]["ros__parameters"]
    step_m, step_rad = graph_params["keyframe_distance_m"], np.deg2rad(graph_params["keyframe_angle_deg"])
    out = _read(eval_dir / "outputs")
    odom = sorted(out["/odometry"], key=lambda m: _ns(m.header.stamp))
    stamps = [_ns(m.header.stamp) for m in odom]
    poses = [_matrix(m.pose.pose) for m in odom]
    covs = [np.asarray(m.pose.covariance).reshape(6, 6) for m in odom]
    local = [_adjoint(np.linalg.inv(T)) @ C @ _adjoint(np.linalg.inv(T)).T for T, C in zip(poses, covs)]  # body axes
    order = [3, 4, 5, 0, 1, 2]  # ROS (x y z rx ry rz) -> GTSAM (rx ry rz x y z)

    def noise(cov_right):
        cov = 0.5 * (cov_right + cov_right.T)
        w, V = np.linalg.eigh(cov)
        cov = (V * np.maximum(w, 1e-8)) @ V.T
        return gtsam.noiseModel.Gaussian.Covariance(cov[np.ix_(order, order)])

    def angle(R):
        return np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))

    keyframes, frame_kf = [0], []  # odometry indices of the keyframes; each frame's keyframe at or before it
    for i, T in enumerate(poses):
        rel = np.linalg.inv(poses[keyframes[-1]]) @ T
        if i and (np.linalg.norm(rel[:3, 3]) >= step_m or angle(rel[:3, :3]) >= step_rad):
            keyframes.append(i)
        frame_kf.append(len(keyframes) - 1)
    graph, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
    graph.add(gtsam.PriorFactorPose3(0, gtsam.Pose3(poses[0]), gtsam.noiseModel.Isotropic.Sigma(6, 1e-4)))
    for k, i in enumerate(keyframes):
        values.insert(k, gtsam.Pose3(poses[i]))
        if k:
            j = keyframes[k - 1]
            rel = np.linalg.inv(poses[j]) @ poses[i]
            A = _adjoint(np.linalg.inv(rel))
            graph.add(gtsam.BetweenFactorPose3(k - 1, k, gtsam.Pose3(rel), noise(local[i] - A @ local[j] @ A.T)))
    index = {s: i for i, s in enumerate(stamps)}
    loops = 0
    kernel = gtsam.noiseModel.mEstimator.Cauchy.Create(2.0)  # the pose graph node's default
    for msg in out["/loop_closures"]:
        c = next((c for c in msg.candidates if c.verified and c.has_relative_pose and c.metric_translation), None)
        if c is None:
            continue
        assert c.frame_id == "base_link"
        q, m = index[_ns(c.query_stamp)], index[_ns(c.match_stamp)]
        kq, km = frame_kf[q], frame_kf[m]
        if kq == km:
            continue
        T_kq_q = np.linalg.inv(poses[keyframes[kq]]) @ poses[q]
        T_km_m = np.linalg.inv(poses[keyframes[km]]) @ poses[m]
        T = _matrix(c.relative_pose.pose)  # T_query_match
        A = _adjoint(T_km_m) @ _adjoint(np.linalg.inv(T))
        cov = A @ np.asarray(c.relative_pose.covariance).reshape(6, 6) @ A.T
        graph.add(gtsam.BetweenFactorPose3(kq, km, gtsam.Pose3(T_kq_q @ T @ np.linalg.inv(T_km_m)),
                                           gtsam.noiseModel.Robust.Create(kernel, noise(cov))))
        loops += 1
    result = gtsam.LevenbergMarquardtOptimizer(graph, values).optimize()

    # The pose graph node's final keyframes, and the ground truth (camera poses -> base_link by /tf_static).
    path = out["/path"][-1]
    kf_stamps = [_ns(p.header.stamp) for p in path.poses]
    assert kf_stamps == [stamps[i] for i in keyframes], "the node's keyframes are not the documented rule's"
    node_kf = np.array([_matrix(p.pose) for p in path.poses])
    rebuilt = np.array([result.atPose3(k).matrix() for k in range(len(keyframes))])
    tf = next(t for m in out["/tf_static"] for t in m.transforms if t.child_frame_id == "camera_optical_frame")
    assert tf.header.frame_id == "base_link"
    X = make_transform(rotation_from_quaternion(_transform(tf.transform)[3:]), _transform(tf.transform)[:3])
    gt_stamps, cams = BagSequence(loop_bag).camera_poses_kitti("camera_optical_frame")  # the truth: input bag
    gt_index = {int(s): i for i, s in enumerate(gt_stamps)}
    truth = np.array([X @ cams[gt_index[s]] @ np.linalg.inv(X) for s in kf_stamps])  # base_link, first frame's
    t_s = (np.array(kf_stamps) - kf_stamps[0]) / 1e9
    node_ate = ate_rpe(truth, node_kf, t_s)["ate_m"]
    rebuilt_ate = ate_rpe(truth, rebuilt, t_s)["ate_m"]
    raw_ate = ate_rpe(truth, np.array([poses[i] for i in keyframes]), t_s)["ate_m"]
    assert loops >= 5 and len(kf_stamps) >= 20
    assert rebuilt_ate < raw_ate and node_ate < raw_ate, (raw_ate, node_ate, rebuilt_ate)
    assert abs(rebuilt_ate - node_ate) <= 0.01 * node_ate, (raw_ate, node_ate, rebuilt_ate, loops)
