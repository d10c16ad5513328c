"""The whole pipeline on a synthetic bag with two loops: offline and realtime runs, metrics, report, output bag.

The VO network is a randomly initialised DeepVO whose output is replaced by the true motion with a yaw bias
and a scale error (a drifting odometry of known size); homography, place recognition, verification and the
pose graph are the real ones.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("gtsam")

from conftest import REPO, record_route  # noqa: E402
from deep_vision.geometry.transforms import (  # noqa: E402
    euler_zyx_from_rotation,
    invert_transform,
    rotation_from_euler_zyx,
)

SMALL_ROUTE = {"corners": [[0.0, 0.0], [40.0, 0.0], [40.0, 20.0], [0.0, 20.0]], "corner_radius_m": 8.0}
FRAMES = 240  # about 2.2 laps of 106 m at 10 m/s


@pytest.fixture(scope="module")
def loop_bag(tmp_path_factory):
    from deep_vision.synthetic import SyntheticSequence

    out, config = record_route(tmp_path_factory.mktemp("loops"), SMALL_ROUTE, FRAMES, 416, 128)
    return out, SyntheticSequence(config)


@pytest.fixture(scope="module")
def vo_model(random_vo_model):
    return random_vo_model


class DriftingBackend:
    """The real network runs (shapes, state); its motion is replaced by the truth with a yaw bias and 4 % scale error."""

    def __init__(self, inner, poses, yaw_bias_rad=0.002, scale=1.04):
        self.inner, self.poses, self.k = inner, poses, 0
        self.yaw_bias, self.scale = yaw_bias_rad, scale
        self.label, self.precision = inner.label, inner.precision

    def run(self, feeds):
        out = self.inner.run(feeds)
        rel = invert_transform(self.poses[self.k]) @ self.poses[self.k + 1]
        self.k += 1
        R = rel[:3, :3] @ rotation_from_euler_zyx(np.array([0.0, self.yaw_bias, 0.0]))  # about the camera's y
        out["motion"] = np.concatenate([rel[:3, 3] * self.scale, euler_zyx_from_rotation(R)])[None].astype(np.float32)
        return out


def _params(vo_model):
    from deep_vision.pipeline import load_params
    params = load_params(REPO / "config" / "perception.yaml")
    # Network mode: DriftingBackend injects a known drift through the network's steps for the graph to remove.
    params["odometry_node"].update(model_path=str(vo_model), backend="onnxruntime", mode="network",
                                   scale_source="network", rot_noise_abs=0.003, trans_noise_rel=0.05)
    params["place_recognition_node"].update(exclude_recent_s=6.0, keyframe_interval_s=0.3)
    return params


def _pipeline(vo_model, seq, **kwargs):
    from deep_vision.pipeline import Pipeline

    pipe = Pipeline(_params(vo_model), **kwargs)
    pipe.vo.vo.backend = DriftingBackend(pipe.vo.vo.backend, seq.kitti_poses)
    return pipe


def test_offline_pipeline_closes_loops_and_reduces_drift(loop_bag, vo_model, tmp_path):
    from deep_vision.io.bag import BagSequence
    from deep_vision.pipeline.report import (
        compute_metrics,
        write_output_bag,
        write_report,
    )

    path, seq = loop_bag
    bag = BagSequence(path)
    pipe = _pipeline(vo_model, seq)
    out = pipe.run(bag, "offline")
    assert out.frames == FRAMES
    m, plots = compute_metrics(out, bag, pipe, mode="offline")
    for stage in ("homography", "loop_closure", "vo", "pose_graph"):
        assert m[stage]["dropped"] == 0
        assert m[stage]["latency_ms"]["p50"] is not None
    assert m["homography"]["processed"] == FRAMES
    assert m["homography"]["ground_error_px"]["p50"] < m["homography"]["ground_error_identity_px"]["p50"]
    lc = m["loop_closure"]
    assert lc["loops"] > 5 and lc["precision"] >= 0.9 and lc["recall"] > 0.5, lc
    pg = m["pose_graph"]
    assert pg["loops_accepted"] >= 3, pg
    assert pg["accepted_correct"] == pg["loops_accepted"], pg
    assert m["vo"]["ate_m"] > 2.0, m["vo"]  # the injected drift is there ...
    assert pg["ate_m"] < 0.5 * m["vo"]["ate_m"], (pg, m["vo"])  # ... and the graph removes most of it
    # report, plots and the output bag
    md = write_report(tmp_path / "eval", m, plots, "test")
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["frames"] == FRAMES and saved["vo"]["ate_m"] == pytest.approx(m["vo"]["ate_m"])
    for png in ("trajectory.png", "loop_closure_pr.png", "latency.png"):
        assert (tmp_path / "eval" / png).stat().st_size > 5000
    assert "pose graph" in md.read_text()
    # TUM trajectories for evo (evo_ape tum ground_truth.tum pose_graph.tum -a)
    from evo.tools import file_interface

    for name in ("ground_truth", "vo", "pose_graph"):
        traj = file_interface.read_tum_trajectory_file(str(tmp_path / "eval" / "trajectories" / f"{name}.tum"))
        assert traj.num_poses == FRAMES
    write_output_bag(tmp_path / "eval" / "outputs", out, bag)
    from rosbags.rosbag2 import Reader

    with Reader(tmp_path / "eval" / "outputs") as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/homography"] == FRAMES - 1 and counts["/odometry"] == FRAMES
    # the path after each new keyframe or accepted loop, as pose_graph_node publishes it
    assert counts["/loop_closures"] > 5 and counts["/path"] >= pg["keyframes"]
    # /tf: odom -> base_link (odometry_node) and map -> odom (pose_graph_node) per frame; the bag's /tf_static
    assert counts["/tf"] == 2 * FRAMES and counts["/tf_static"] >= 1
    edges = {(tf.header.frame_id, tf.child_frame_id) for _, _, m in BagSequence(tmp_path / "eval" / "outputs",
                                                                                image_topic="/odometry").messages(["/tf"])
             for tf in m.transforms}
    assert edges == {("odom", "base_link"), ("map", "odom")}


def test_realtime_counts_every_frame_as_processed_dropped_or_skipped(loop_bag, vo_model):
    from deep_vision.io.bag import BagSequence

    path, seq = loop_bag
    pipe = _pipeline(vo_model, seq, stages=("homography", "loop_closure", "vo"), queue_depth=1)
    # 40x the bag's rate (400 Hz) with one waiting frame per stage: stages cannot keep up
    out = pipe.run(BagSequence(path), "realtime", rate=40.0, limit=120)
    assert out.frames == 120
    dropped = 0
    for stage in ("homography", "loop_closure", "vo"):
        s = out.stats[stage]
        assert s.frames_in == 120
        assert s.processed + s.dropped + s.skipped + s.errors == 120, (stage, s)
        dropped += s.dropped
    assert dropped > 0
    # Keyframes every 0.3 s are chosen on arrival: about 2 of 3 frames never enter the loop-closure queue.
    assert out.stats["homography"].skipped == out.stats["vo"].skipped == 0
    assert 70 <= out.stats["loop_closure"].skipped <= 85


def test_a_frame_an_estimator_fails_on_is_counted_and_the_stream_goes_on(loop_bag, vo_model, caplog):
    """As the nodes' frame queues do, offline and realtime alike: a frame whose estimator raises (here OpenCV's
    error, which is not a ValueError: offline runs once died of one) is logged in one line and counted, and the
    next frames go on."""
    import cv2
    from deep_vision.io.bag import BagSequence

    path, seq = loop_bag
    for mode in ("offline", "realtime"):
        pipe = _pipeline(vo_model, seq, stages=("vo",))
        calls, process = [], pipe.vo.process

        def failing(frame, calls=calls, process=process):
            calls.append(frame)
            if len(calls) == 5:
                raise cv2.error("remap: the map is too wide")
            return process(frame)

        pipe.vo.process = failing
        caplog.clear()
        out = pipe.run(BagSequence(path), mode, limit=20)
        s = out.stats["vo"]
        assert s.errors == 1 and s.processed + s.dropped == 19 and len(out.odometry) == s.processed, (mode, s)
        assert mode == "realtime" or s.processed == 19  # realtime may also drop a frame on a slow host
        assert f"vo: frame {4 if mode == 'offline' else ''}" in caplog.text, caplog.text
        assert "failed: error: remap: the map is too wide" in caplog.text, caplog.text


def test_realtime_at_bag_rate_keeps_up_on_small_frames(loop_bag, vo_model):
    from deep_vision.io.bag import BagSequence

    path, seq = loop_bag
    pipe = _pipeline(vo_model, seq, stages=("homography", "vo"))
    out = pipe.run(BagSequence(path), "realtime", rate=1.0, limit=30)
    for stage in ("homography", "vo"):
        assert out.stats[stage].processed == 30 and out.stats[stage].dropped == 0


def test_bad_stage_name_and_missing_vo_model_fail_with_the_parameter_named(vo_model):
    from deep_vision.errors import ConfigError
    from deep_vision.pipeline import Pipeline

    params = _params(vo_model)
    with pytest.raises(ConfigError, match="unknown pipeline stage"):
        Pipeline(params, stages=("homography", "slam"))
    params["odometry_node"]["model_path"] = "/nonexistent/vo.onnx"
    with pytest.raises(ConfigError, match="odometry_node: parameter 'model_path'"):
        Pipeline(params, stages=("vo",))


def test_evaluate_bag_writes_metrics_report_and_outputs(loop_bag, tmp_path):
    """``deep-vision evaluate BAG``'s entry point, on the shipped parameter file (homography stage only: quick)."""
    from deep_vision.pipeline.evaluate import evaluate_bag

    path, _ = loop_bag
    metrics, md = evaluate_bag(path, tmp_path / "eval", params_file=REPO / "config" / "perception.yaml",
                               stages=("homography",), limit=20)
    assert metrics["frames"] == 20 and metrics["homography"]["processed"] == 20
    assert md.is_file() and (tmp_path / "eval" / "metrics.json").is_file()
    assert (tmp_path / "eval" / "outputs" / "metadata.yaml").is_file()


def test_demo_targets_judge_the_corrected_trajectory():
    """Met only when the graph lowers both ATE and final drift, and its ATE is within 0.5 % of the route."""
    from deep_vision.pipeline.evaluate import demo_targets

    def verdicts(vo_ate, vo_drift, pg_ate, pg_drift, length=600.0):
        m = {"vo": {"ate_m": vo_ate, "final_drift_m": vo_drift, "length_m": length},
             "pose_graph": {"ate_m": pg_ate, "final_drift_m": pg_drift, "loops_accepted": 3, "accepted_correct": 3}}
        return [met for _, met, _ in demo_targets(m)]

    assert verdicts(0.75, 1.8, 0.41, 1.09) == [True, True, True]
    assert verdicts(0.75, 1.8, 0.41, 1.9) == [False, True, True]  # drift worse
    assert verdicts(0.75, 1.8, 0.80, 1.0) == [False, True, True]  # ATE worse
    assert verdicts(9.66, 28.0, 3.23, 9.0) == [True, False, True]  # 0.54 % of the route


def test_the_report_says_what_it_measures_and_when_there_is_nothing_to_measure(loop_bag, tmp_path):
    """40 frames of the route hold no revisit: precision/recall say so instead of 0 %; loop-closure latency counts
    keyframes only; report.md explains each line and carries the targets' verdicts."""
    from deep_vision.pipeline.evaluate import demo_targets, evaluate_bag

    path, _ = loop_bag
    metrics, md = evaluate_bag(path, tmp_path / "eval", params_file=REPO / "config" / "perception.yaml",
                               stages=("homography", "loop_closure"), limit=40, targets=demo_targets)
    lc = metrics["loop_closure"]
    assert lc["loops"] == 0 and lc["recall_at_100_precision"] is None
    assert lc["latency_ms"]["n"] == lc["keyframes"] < 40
    text = md.read_text()
    assert "no revisits in this bag" in text and "## What each line measures" in text
    assert "**homography error on the ground region (px)**: mean distance" in text
    assert "loop_closure latency per keyframe" in text
    metrics, md = evaluate_bag(path, tmp_path / "eval2", params_file=REPO / "config" / "perception.yaml",
                               stages=("homography", "vo", "pose_graph"), limit=5,
                               targets=lambda m: [("a target", False, "measured 1")])
    assert "- **missed**: a target: measured 1" in md.read_text()
