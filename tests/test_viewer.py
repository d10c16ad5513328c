"""The Rerun recording of a run (deep-vision evaluate BAG --record run.rrd): read back, it holds what the viewer
shows, one entry per frame or keyframe as the pipeline produced them; the viewer never blocks the pipeline."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import REPO, REVISIT_FRAMES

pytest.importorskip("rerun")
pytest.importorskip("gtsam")

FRAMES = REVISIT_FRAMES  # the revisit_bag fixture's route: its second lap revisits the first


def _entities(path) -> Counter:
    from rerun.chunk import RrdReader

    rows: Counter = Counter()
    for chunk in RrdReader(path).stream():
        rows[chunk.entity_path.lstrip("/")] += chunk.num_rows
    return rows


def _params(tmp_path, **images):
    """The shipped parameter file with the classical place descriptor (the route is short for PlaceNet)."""
    import yaml

    params = yaml.safe_load((REPO / "config" / "perception.yaml").read_text())
    sections = {k.split("/")[-1]: v["ros__parameters"] for k, v in params.items()}
    sections["place_recognition_node"].update(descriptor="sad", sad_width=64, sad_height=24, exclude_recent_s=4.0,
                                              keyframe_interval_s=0.3)
    for name in ("homography_node", "place_recognition_node", "odometry_node"):
        sections[name].update(images)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path / "params.yaml"


def _keyframes_seen(viewer) -> list:
    """The loop-closure outputs handed to ``viewer`` (its submit, wrapped), to count what it should draw."""
    seen, submit = [], viewer.submit

    def spy(stage, stamp_ns, frame, out, latency_ms=None):
        if stage == "loop_closure":
            seen.append(out)
        submit(stage, stamp_ns, frame, out, latency_ms)

    viewer.submit = spy
    return seen


def _assert_candidates_drawn(rows: Counter, keyframes: list) -> None:
    """Every keyframe with candidates is drawn beside all of them, rejected ones too, one box each."""
    with_candidates = [k for k in keyframes if k.candidates]
    assert len(with_candidates) > sum(bool(k.verified) for k in keyframes) >= 1  # some rejected: shown too
    assert rows["loop_closure/candidates"] == rows["loop_closure/candidates/boxes"] == len(with_candidates)
    # and a line to each in the world view, where the VO has drawn both keyframes' positions (threads race)
    assert rows["world/loop_candidates"] >= 1


def test_the_recording_holds_images_tracks_loop_closures_and_trajectories(revisit_bag, tmp_path):
    from deep_vision.pipeline.evaluate import evaluate_bag
    from deep_vision.viz.recorder import RunRecorder

    _params(tmp_path)
    viewer = RunRecorder(tmp_path / "run.rrd")
    keyframes = _keyframes_seen(viewer)
    try:
        metrics, _ = evaluate_bag(revisit_bag, tmp_path / "eval", params_file=tmp_path / "params.yaml",
                                  viewer=viewer)
    finally:
        viewer.close()
    rows = _entities(tmp_path / "run.rrd")
    assert viewer.dropped == 0
    assert rows["camera/image"] == FRAMES == metrics["vo"]["processed"]
    assert rows["world/vo/position"] == FRAMES
    assert rows["world/vo"] == (FRAMES - 1) // 10 + 2  # every 10th frame from the first, and once at the end
    assert rows["latency/vo"] == FRAMES and rows["latency/homography"] == metrics["homography"]["processed"]
    # the hybrid VO's inliers on every frame after the first; the homography grid on every valid pair
    assert rows["camera/image/tracks"] == FRAMES - 1
    assert FRAMES - 5 <= rows["camera/image/homography"] <= FRAMES - 1
    assert rows["latency/loop_closure"] == metrics["loop_closure"]["keyframes"]
    # the second lap closes loops: a line for each verified one in the world view
    assert viewer.loops_drawn == sum(len(k.verified) for k in keyframes) >= 1 and rows["world/loop_closures"] >= 1
    # each keyframe with a verified loop closure beside its match, with the RANSAC inliers between them
    assert rows["loop_closure/pair"] == sum(bool(k.verified) for k in keyframes)
    assert rows["loop_closure/pair/inliers"] == rows["loop_closure/pair"]
    _assert_candidates_drawn(rows, keyframes)
    assert rows["world/pose_graph"] >= 1 and rows["world/ground_truth"] == rows["world/vo"]  # drawn together
    # the ground truth in the VO's frame: the paths start together and end the report's final drift apart
    # (measured 6.10 against 6.17 m: base_link against camera positions; bound 10 %)
    gap = np.linalg.norm(np.array(viewer._gt_path) - np.array(viewer._vo_path), axis=1)
    assert gap[0] < 1e-9
    assert gap[-1] == pytest.approx(metrics["vo"]["final_drift_m"], rel=0.1)


def test_the_nodes_feed_the_same_recording(revisit_bag, tmp_path):
    """deep-vision run --record FILE.rrd: the four nodes over DDS hand their outputs to the recorder; it holds one
    frame per odometry message they published and one grid per homography. Played at the bag's own rate: at twice
    it, on a host half as fast as the one of the committed latency figures (bench/vo_latency.py: the shipped VO
    70 ms per KITTI frame instead of 33), the odometry node's full queue dropped 7-13 of the 140 frames, which is
    the queue doing its job, not the recording failing."""
    from conftest import require_ros

    require_ros()
    from deep_vision.nodes.registry import DEFAULT_NODES
    from deep_vision.nodes.runner import run
    from deep_vision.viz.recorder import RunRecorder

    params = _params(tmp_path, image_qos="reliable", queue_depth=100)
    viewer = RunRecorder(tmp_path / "nodes.rrd")
    keyframes = _keyframes_seen(viewer)
    try:
        summary = run(params, DEFAULT_NODES, bag=revisit_bag, rate=1.0, drain_s=60.0, viewer=viewer)
    finally:
        viewer.close()
    rows = _entities(tmp_path / "nodes.rrd")
    published = summary["published"]
    assert viewer.dropped == 0 and published["odometry"] == FRAMES
    assert rows["camera/image"] == rows["world/vo/position"] == published["odometry"]
    assert FRAMES - 5 <= rows["camera/image/homography"] <= published["homography"]  # the valid ones
    # every keyframe; the node publishes only those with candidates (publish_empty: false)
    assert rows["latency/loop_closure"] > published["loop_closures"] >= 1
    # a line per verified loop closure, also where its keyframe's VO position came after it
    assert viewer.loops_drawn == sum(len(k.verified) for k in keyframes) >= 1
    assert rows["world/pose_graph"] >= 1
    _assert_candidates_drawn(rows, keyframes)
    # the bag's ground truth with the VO, as in evaluate's recording (final gap measured there: 6.10 m; 10 %)
    assert rows["world/ground_truth"] == rows["world/vo"] >= 2
    gap = np.linalg.norm(np.array(viewer._gt_path) - np.array(viewer._vo_path), axis=1)
    assert gap[0] < 1e-9 and gap[-1] == pytest.approx(6.10, rel=0.1)


def test_loop_lines_wait_for_the_vo_and_forget_frames_it_dropped(tmp_path):
    """A loop closure that reaches the recorder before the VO's position of its keyframe is drawn when the position
    comes; one whose keyframe the VO dropped (no position ever) is not kept waiting."""
    from types import SimpleNamespace as NS

    from deep_vision.viz.recorder import RunRecorder

    frame = NS(grey=np.zeros((8, 16), np.uint8))

    def vo(stamp):
        pose = np.eye(4)
        pose[0, 3] = stamp
        return NS(pose=pose, result=NS(points=None, reset=None))

    def loop(stamp, match):
        c = NS(match_stamp_ns=match, match_id=0, similarity=0.9, inliers=50, verified=True, verification=None)
        return NS(stamp_ns=stamp, candidates=[c], verified=[c])

    viewer = RunRecorder(tmp_path / "loops.rrd")
    try:
        viewer.submit("loop_closure", 5, None, loop(5, 1))  # before the VO: waits
        viewer.submit("loop_closure", 8, None, loop(8, 2))
        for stamp in (1, 2, 3, 4, 6, 7):  # frame 5 dropped by the VO
            viewer.submit("vo", stamp, frame, vo(stamp))
    finally:
        viewer.close()
    assert viewer.loops_drawn == 0 and viewer._loops_waiting == [(8, 2)]  # 5 forgotten, 8 still to come
    viewer = RunRecorder(tmp_path / "loops2.rrd")
    try:
        viewer.submit("loop_closure", 8, None, loop(8, 2))
        for stamp in (1, 2, 8):
            viewer.submit("vo", stamp, frame, vo(stamp))
    finally:
        viewer.close()
    assert viewer.loops_drawn == 1 and not viewer._loops_waiting
    np.testing.assert_allclose(viewer._loops[0][:, 0], [8, 2])  # the query's and the match's VO positions


def test_a_full_queue_drops_viewer_items_not_pipeline_frames(tmp_path):
    """submit() never blocks: with the worker held up, items past the queue's size are dropped and counted, and
    ten submits take far less than one blocked wait would (bound 1 s; a put that waits 0.2 s for room takes 1.2 s)."""
    import threading
    import time

    from deep_vision.viz.recorder import RunRecorder

    viewer = RunRecorder(tmp_path / "run.rrd", max_queue=4)
    gate = threading.Event()
    original = viewer._log
    viewer._log = lambda *a: (gate.wait(), original(*a))
    try:
        t0 = time.perf_counter()
        for i in range(10):
            viewer.submit("homography", i, None, None, 1.0)
        assert time.perf_counter() - t0 < 1.0
        assert viewer.dropped >= 5  # at most 4 queued + 1 taken by the held worker
    finally:
        gate.set()
        viewer.close()
    assert _entities(tmp_path / "run.rrd")["latency/homography"] == 10 - viewer.dropped


def test_a_recording_must_be_an_rrd_file(tmp_path):
    from deep_vision.errors import ConfigError
    from deep_vision.viz.recorder import RunRecorder

    with pytest.raises(ConfigError, match=r"\.rrd"):
        RunRecorder(tmp_path / "run.bag")


def test_a_viewer_that_cannot_start_is_one_clear_error(tmp_path, monkeypatch):
    """--view where no Rerun viewer executable exists: a ConfigError naming --view, not a traceback."""
    import sys

    from deep_vision.errors import ConfigError
    from deep_vision.viz.recorder import RunRecorder

    import socket

    with socket.socket() as s:  # a port no viewer listens on (spawn would use one that does)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # its bin/ holds no viewer
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="--view: the Rerun viewer did not start"):
        RunRecorder(spawn=True, port=port)
