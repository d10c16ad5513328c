"""The whole perception pipeline on a bag, without ROS: the nodes' stages, offline or at the bag's rate.

Each node's stage (:mod:`deep_vision.stages`) is driven as the node drives it:
the bag's image, camera-info, GPS and ``/tf_static`` messages go through the
stages' input functions in log order, stage outputs become messages through
:mod:`deep_vision.stages.messages`, and the pose-graph stage reads the
odometry and loop-closure *messages* the other stages produced, as
``pose_graph_node`` reads them from DDS. Every message is kept for the output
bag, which so holds what the nodes publish.

- ``offline``: every frame through every stage in order, one thread;
  deterministic and as fast as the machine goes.
- ``realtime``: a feeder releases the frames at the bag's stamps (``rate``×);
  each image stage has the node's :class:`~deep_vision.stages.queue.FrameQueue`
  of ``queue_depth`` frames and its worker thread: when a frame arrives and
  the queue is full, the oldest waiting frame is dropped and counted. With
  time-only keyframes the place stage, like its node, queues only the frames
  that will be keyframes (the others are counted as ``skipped``). The pose
  graph runs in the threads that produce its inputs, one call at a time (a
  node's callbacks).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from deep_vision.errors import ConfigError, ImageEncodingError
from deep_vision.io.bag import GPS_TOPIC, TF_STATIC_TOPIC
from deep_vision.params import validate
from deep_vision.stages import HomographyStage, OdometryStage, PlaceStage, PoseGraphStage, StaticTransforms
from deep_vision.stages.inputs import (
    camera_info_from_msg,
    frame_from_msg,
    gps_from_msg,
    loop_closures_from_msg,
    odometry_from_msg,
    stamp_ns,
)
from deep_vision.stages.messages import homography_msgs, odometry_msgs, place_msgs, pose_graph_msgs
from deep_vision.stages.queue import FrameQueue

logger = logging.getLogger(__name__)

STAGES = ("homography", "loop_closure", "vo", "pose_graph")
IMAGE_STAGES = ("homography", "loop_closure", "vo")
NODE_OF_STAGE = {"homography": "homography_node", "loop_closure": "place_recognition_node", "vo": "odometry_node",
                 "pose_graph": "pose_graph_node"}
MODES = ("offline", "realtime")


@dataclass
class StageStats:
    frames_in: int = 0
    processed: int = 0
    dropped: int = 0
    skipped: int = 0  # realtime loop closure: frames not queued, decided on arrival not to be keyframes
    errors: int = 0
    latency_ms: list[float] = field(default_factory=list)  # processing time per frame
    age_ms: list[float] = field(default_factory=list)  # frame release -> output (realtime: includes queueing)


@dataclass
class InputFrame:
    index: int
    msg: Any  # the sensor_msgs/Image (decoded by each stage's worker, as in a node)
    stamp_ns: int
    released: float = 0.0  # perf_counter when the frame became available


@dataclass
class PipelineOutputs:
    frames: int = 0
    bad_frames: int = 0
    homographies: list[Any] = field(default_factory=list)  # HomographyOut per pair
    keyframes: list[Any] = field(default_factory=list)  # QueryResult per keyframe
    odometry: list[Any] = field(default_factory=list)  # OdometryResult per frame (camera frame)
    gps_fixes: list[Any] = field(default_factory=list)  # GpsFix read from the bag
    loop_decisions: list[Any] = field(default_factory=list)  # the pose graph's LoopDecision per loop closure
    messages: list[tuple[str, str, int, Any]] = field(default_factory=list)  # (topic, type, log stamp, msg)
    stats: dict[str, StageStats] = field(default_factory=lambda: {s: StageStats() for s in STAGES})
    wall_s: float = 0.0
    bad_frame_indices: set[int] = field(default_factory=set)  # images no stage could decode


class Pipeline:
    """The stages of ``stages`` built from ``params`` (``{node name: {parameter: value}}``), as the nodes build them.

    Args:
        params: the parameter file's sections (``load_params``).
        stages: subset of :data:`STAGES`; ``pose_graph`` needs ``vo``.
        backend: inference backend for every network (overrides the parameters).
        queue_depth: realtime queue per stage (default: each node's ``queue_depth`` parameter).
        observer: called as ``observer(stage, stamp_ns, frame, output, latency_ms)`` after each stage's output
            (``vo``: OdometryOut, ``homography``: HomographyOut, ``loop_closure``: QueryResult, ``pose_graph``:
            GraphUpdate), e.g. :meth:`deep_vision.viz.recorder.RunRecorder.submit`; it must not block.
    """

    def __init__(self, params: dict[str, dict[str, Any]], stages: Iterable[str] = STAGES, *,
                 backend: str | None = None, queue_depth: int | None = None, observer: Any = None) -> None:
        stages = tuple(stages)
        unknown = sorted(set(stages) - set(STAGES))
        if unknown:
            raise ConfigError(f"unknown pipeline stage(s) {unknown}; available: {', '.join(STAGES)}")
        if "pose_graph" in stages and "vo" not in stages:
            raise ConfigError("the pose_graph stage needs the vo stage")
        self.stages = stages

        def node_params(stage: str) -> dict[str, Any]:
            p = dict(params.get(NODE_OF_STAGE[stage], {}))
            if backend:
                p["backend"] = backend
            return validate(NODE_OF_STAGE[stage], p, "--backend: " if backend else "")

        self.params = {s: node_params(s) for s in stages}
        if queue_depth is not None:
            for s in stages:
                validate(NODE_OF_STAGE[s], {"queue_depth": queue_depth}, "--queue-depth: ", complete=False)
        self.queue_depth = {s: int(queue_depth or self.params[s]["queue_depth"]) for s in stages}
        self.homography = HomographyStage.from_params(self.params["homography"]) if "homography" in stages else None
        self.place = PlaceStage.from_params(self.params["loop_closure"]) if "loop_closure" in stages else None
        self.vo = OdometryStage.from_params(self.params["vo"]) if "vo" in stages else None
        self.pose_graph = PoseGraphStage.from_params(self.params["pose_graph"]) if "pose_graph" in stages else None
        self.static = StaticTransforms()
        self._camera_pose_from_tf: set[str] = set()
        self.out = PipelineOutputs()
        self._graph_lock = threading.Lock()
        self.observer = observer

    # ------------------------------------------------------------------ messages
    def _emit(self, messages: list[tuple[str, str, Any]], stamp: int) -> None:
        for topic, msgtype, msg in messages:
            self.out.messages.append((topic if topic.startswith("/") else "/" + topic, msgtype, stamp, msg))

    def _to_pose_graph(self, messages: list[tuple[str, str, Any]], stamp: int) -> None:
        """What pose_graph_node subscribes, from the messages another stage published."""
        if self.pose_graph is None:
            return
        for topic, _, msg in messages:
            if topic not in ("odometry", "loop_closures"):
                continue
            t0 = time.perf_counter()
            with self._graph_lock:
                if topic == "odometry":
                    self.out.stats["pose_graph"].frames_in += 1
                    update = self.pose_graph.add_odometry(odometry_from_msg(msg))
                else:
                    update = self.pose_graph.add_loop_closures(loop_closures_from_msg(msg))
                if update is not None:
                    self._emit(pose_graph_msgs(update, bool(self.params["pose_graph"]["publish_tf"]),
                                               bool(self.params["pose_graph"]["publish_markers"])), stamp)
                    if self.observer is not None:
                        self.observer("pose_graph", stamp, None, update, None)
            if topic == "odometry":
                s = self.out.stats["pose_graph"]
                s.processed += 1
                s.latency_ms.append((time.perf_counter() - t0) * 1e3)

    # ------------------------------------------------------------------ stages
    def _camera_pose(self, stage: str, camera_frame: str) -> None:
        """The camera's pose on the robot from the bag's /tf_static, once, as the nodes take it."""
        p = self.params[stage]
        if stage in self._camera_pose_from_tf or not p["use_tf_static"]:
            return
        T = self.static.lookup(str(p["base_frame"]), camera_frame)
        if T is None:
            return
        self._camera_pose_from_tf.add(stage)
        try:
            (self.vo if stage == "vo" else self.place).set_camera_pose(T)
        except ConfigError as exc:
            logger.error("%s: camera pose from /tf_static: %s; keeping the last camera pose", stage, exc)

    def _homography(self, frame: Any, stamp: int) -> Any:
        out = self.homography.process(frame)
        if out is not None:
            self.out.homographies.append(out)
            self._emit(homography_msgs(out), stamp)
        return out

    def _vo(self, frame: Any, stamp: int) -> Any:
        self._camera_pose("vo", frame.frame_id)
        out = self.vo.process(frame)
        self.out.odometry.append(out.result)
        msgs = odometry_msgs(out, bool(self.params["vo"]["publish_tf"]))
        self._emit(msgs, stamp)
        self._to_pose_graph(msgs, stamp)
        return out

    def _loop_closure(self, frame: Any, stamp: int) -> Any:
        self._camera_pose("loop_closure", frame.frame_id)
        out = self.place.process(frame)
        if out is None:
            return None
        self.out.keyframes.append(out.result)
        msgs = place_msgs(out)
        self._emit(msgs, stamp)
        self._to_pose_graph(msgs, stamp)
        return out.result

    def _run_stage(self, stage: str, f: InputFrame) -> None:
        s = self.out.stats[stage]
        t0 = time.perf_counter()
        try:
            frame = frame_from_msg(f.msg)
        except ImageEncodingError as exc:
            if stage == "loop_closure":
                self.place.skip()
            s.errors += 1
            self.out.bad_frame_indices.add(f.index)
            logger.warning("%s: frame %d (%d ns) skipped: %s", stage, f.index, f.stamp_ns, exc)
            return
        try:
            output = {"homography": self._homography, "loop_closure": self._loop_closure, "vo": self._vo}[stage](
                frame, f.stamp_ns)
        except Exception as exc:  # noqa: BLE001 - as the nodes' queues: one failed frame must not stop the stream
            s.errors += 1
            logger.error("%s: frame %d (%d ns) failed: %s: %s", stage, f.index, f.stamp_ns, type(exc).__name__, exc)
            return
        t1 = time.perf_counter()
        s.processed += 1
        if stage != "loop_closure" or output is not None:  # loop closure: the latency of keyframes only
            s.latency_ms.append((t1 - t0) * 1e3)
            s.age_ms.append((t1 - f.released) * 1e3)
            if self.observer is not None:
                self.observer(stage, f.stamp_ns, frame, output, (t1 - t0) * 1e3)

    def _admit(self, stage: str, f: InputFrame) -> bool:
        """Whether a frame is queued for ``stage`` (the place stage's arrival gate, as the node's FrameQueue)."""
        return stage != "loop_closure" or self.place.admit(f.stamp_ns)

    # ------------------------------------------------------------------ input
    def _inputs(self, bag, limit: int | None) -> Iterable[InputFrame]:
        """The image frames of ``bag``; camera info, GPS and /tf_static go to the stages on the way, in log order,
        except that a camera info logged with its image goes first (a CameraSubscriber's pairing; the nodes
        wait for the first one: see ``place_recognition_node``)."""
        topics = [bag.image_topic, bag.camera_info_topic, GPS_TOPIC, TF_STATIC_TOPIC]
        index = 0
        image: tuple[int, Any] | None = None  # an image waiting for a camera info at the same log time
        for topic, t, msg in bag.messages(topics):
            if image is not None and not (topic == bag.camera_info_topic and t == image[0]):
                if limit is not None and index >= limit:
                    return
                yield InputFrame(index, image[1], stamp_ns(image[1].header.stamp))
                index += 1
                image = None
            if topic == TF_STATIC_TOPIC:
                self.static.add(msg)
            elif topic == bag.camera_info_topic:
                info = camera_info_from_msg(msg)
                for stage in (self.vo, self.place):
                    if stage is not None:
                        stage.set_camera_info(info)
            elif topic == GPS_TOPIC:
                fix = gps_from_msg(msg)
                if fix is not None:
                    self.out.gps_fixes.append(fix)
                if self.place is not None:
                    self.place.add_gps(fix)
            else:
                image = (t, msg)
        if image is not None and (limit is None or index < limit):
            yield InputFrame(index, image[1], stamp_ns(image[1].header.stamp))

    # ------------------------------------------------------------------ modes
    def run(self, bag, mode: str = "offline", *, rate: float = 1.0, limit: int | None = None,
            progress: Callable[[int], None] | None = None) -> PipelineOutputs:
        """Run over ``bag`` (a :class:`deep_vision.io.bag.BagSequence`); returns the outputs."""
        if mode not in MODES:
            raise ConfigError(f"mode must be offline or realtime, got {mode!r}")
        if rate <= 0:
            raise ConfigError(f"rate must be positive, got {rate}")
        t0 = time.perf_counter()
        if mode == "offline":
            self._offline(bag, limit, progress)
        else:
            self._realtime(bag, rate, limit, progress)
        self.out.bad_frames = len(self.out.bad_frame_indices)
        if self.pose_graph is not None:
            self.out.loop_decisions = list(self.pose_graph.graph.decisions)
        self.out.wall_s = time.perf_counter() - t0
        return self.out

    def _image_stages(self) -> list[str]:
        # VO before place recognition: a loop closure's query frame is then already in the pose graph.
        return [s for s in ("homography", "vo", "loop_closure") if s in self.stages]

    def _offline(self, bag, limit: int | None, progress) -> None:
        stages = self._image_stages()
        for f in self._inputs(bag, limit):
            f.released = time.perf_counter()
            self.out.frames += 1
            for stage in stages:
                s = self.out.stats[stage]
                s.frames_in += 1
                if not self._admit(stage, f):
                    s.skipped += 1
                    continue
                self._run_stage(stage, f)
            if progress:
                progress(self.out.frames)

    def _realtime(self, bag, rate: float, limit: int | None, progress) -> None:
        stages = self._image_stages()
        queues: dict[str, FrameQueue] = {}
        for stage in stages:
            s = self.out.stats[stage]

            def arrival(s: StageStats = s) -> None:
                s.frames_in += 1

            def admit(f: InputFrame, stage: str = stage, s: StageStats = s) -> bool:
                if self._admit(stage, f):
                    return True
                s.skipped += 1
                return False

            def failed(exc: Exception, stage: str = stage) -> None:
                logger.error("%s: frame failed: %s: %s", stage, type(exc).__name__, exc)

            queues[stage] = FrameQueue(f"pipeline-{stage}", lambda f, stage=stage: self._run_stage(stage, f),
                                       self.queue_depth[stage], admit=admit, on_arrival=arrival, on_error=failed)
        start_wall = first_stamp = None
        try:
            for f in self._inputs(bag, limit):
                if first_stamp is None:
                    first_stamp, start_wall = f.stamp_ns, time.perf_counter()
                due = start_wall + (f.stamp_ns - first_stamp) / 1e9 / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                f.released = time.perf_counter()
                self.out.frames += 1
                for stage in stages:
                    queues[stage].push(f)
                if progress:
                    progress(self.out.frames)
            for q in queues.values():
                q.drain()
        finally:
            for stage, q in queues.items():
                q.close()
                self.out.stats[stage].dropped = q.counters["dropped_frames"]
                self.out.stats[stage].errors += q.counters["errors"]
