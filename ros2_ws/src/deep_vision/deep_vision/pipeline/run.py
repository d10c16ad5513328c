"""The whole perception pipeline on a bag, without ROS: offline or at the bag's rate.

Stages, as the nodes: ``homography`` (consecutive frames), ``loop_closure``
(place recognition on keyframes + verification), ``vo`` (visual odometry) and
``pose_graph`` (VO + verified loop closures, GTSAM iSAM2).

- ``offline``: every frame through every stage in order, one thread;
  deterministic and as fast as the machine goes.
- ``realtime``: a feeder releases the frames at the bag's stamps (``rate``×);
  each image stage has its own worker thread and a bounded queue of
  ``queue_depth`` frames, like a node's KEEP_LAST subscription: when a frame
  arrives and the queue is full, the oldest waiting frame is dropped and
  counted, as a live camera would lose it. With time-only keyframes the
  loop-closure stage, like its node, queues only the frames that will be
  keyframes (:class:`~deep_vision.estimators.loop_closure.KeyframeGate`; the
  others are counted as ``skipped``). The pose graph runs in the VO
  worker; loop closures wait there until the VO has reached their stamp.

Everything the stages output is kept in :class:`PipelineOutputs` for the
report and the output bag (:mod:`deep_vision.pipeline.report`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deep_vision.errors import ConfigError, ImageEncodingError
from deep_vision.geometry.camera import PinholeCamera
from deep_vision.io.image import as_grey
from deep_vision.pipeline.build import (
    build_homography,
    build_loop_detector,
    build_odometry,
    build_pose_graph,
)

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
    stamp_ns: int
    grey: np.ndarray
    camera: PinholeCamera | None
    released: float = 0.0  # perf_counter when the frame became available


@dataclass
class PipelineOutputs:
    frames: int = 0
    bad_frames: int = 0
    stamps_ns: list[int] = field(default_factory=list)
    homographies: list[tuple[int, int, np.ndarray, bool, float]] = field(default_factory=list)  # stamp, prev, H, valid, σ
    keyframes: list[Any] = field(default_factory=list)  # QueryResult per keyframe
    odometry: list[Any] = field(default_factory=list)  # OdometryResult per frame
    loop_decisions: list[Any] = field(default_factory=list)  # pose-graph LoopDecision
    map_to_odom: list[tuple[int, np.ndarray]] = field(default_factory=list)  # after each pose-graph change
    stats: dict[str, StageStats] = field(default_factory=lambda: {s: StageStats() for s in STAGES})
    wall_s: float = 0.0


class Pipeline:
    """The estimators of ``stages`` built from ``params`` (``{node name: {parameter: value}}``).

    Args:
        params: the parameter file's sections (``load_params``).
        stages: subset of :data:`STAGES`; ``pose_graph`` needs ``vo``.
        camera: intrinsics (hybrid VO, verification); default: each frame's camera_info.
        backend: inference backend for every network (overrides the parameters).
        queue_depth: realtime queue per stage (default: each node's ``queue_depth`` parameter, else 5).
    """

    def __init__(self, params: dict[str, dict[str, Any]], stages: Iterable[str] = STAGES, *,
                 camera: PinholeCamera | None = None, backend: str | None = None,
                 queue_depth: int | None = None) -> None:
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
            return p

        self.params = {s: node_params(s) for s in stages}
        self.queue_depth = {s: int(queue_depth or self.params[s].get("queue_depth", 5)) for s in stages}
        self.gps_max_age_ns = int(float(self.params.get("loop_closure", {}).get("gps_max_age_s", 0.5)) * 1e9)
        self.homography = self.pairer = self.detector = self.vo = self.graph = None
        if "homography" in stages:
            self.homography, self.pairer = build_homography(self.params["homography"])
        if "loop_closure" in stages:
            self.detector = build_loop_detector(self.params["loop_closure"])
        if "vo" in stages:
            self.vo = build_odometry(self.params["vo"], camera)
        if "pose_graph" in stages:
            self.graph = build_pose_graph(self.params["pose_graph"])
        self.camera = camera
        self.out = PipelineOutputs()
        self._graph_lock = threading.Lock()
        self._pending_loops: deque[tuple[int, int, Any]] = deque(maxlen=100)
        self._gate = None  # realtime: the loop-closure stage's KeyframeGate
        self.gps_fixes: list[tuple[int, float, float, float]] = []  # (stamp, lat, lon, alt) from the bag
        self._gps_stamps = np.zeros(0, np.int64)

    # ------------------------------------------------------------------ stages
    def _homography(self, f: InputFrame) -> None:
        pair = self.pairer.push(f.grey, f.stamp_ns)
        if pair is None:
            return
        r = self.homography.estimate(pair.prev, pair.curr)
        self.out.homographies.append((f.stamp_ns, pair.prev_stamp_ns, r.matrix, bool(r.valid),
                                      float(r.corner_uncertainty_px)))

    def _loop_closure(self, f: InputFrame) -> None:
        cam = self.camera or f.camera
        gps = None
        if len(self._gps_stamps):
            i = int(np.argmin(np.abs(self._gps_stamps - f.stamp_ns)))
            if abs(int(self._gps_stamps[i]) - f.stamp_ns) <= self.gps_max_age_ns:
                gps = self.gps_fixes[i][1:]
        result = None
        try:
            result = self.detector.process(f.grey, f.stamp_ns, K=None if cam is None else cam.K, gps=gps)
        finally:
            if result is None and self._gate is not None:
                self._gate.reopen()  # an admitted frame that did not become a keyframe: take the next one
        if result is None:
            return
        self.out.keyframes.append(result)
        if self.graph is None:
            return
        for c in result.verified:
            if c.has_relative_pose:
                with self._graph_lock:
                    self._pending_loops.append((result.stamp_ns, c.match_stamp_ns, c.verification))
                break  # the best verified candidate: one closure per keyframe

    def _vo(self, f: InputFrame) -> None:
        if self.vo.camera is None and (self.camera or f.camera) is not None:
            self.vo.set_camera(self.camera or f.camera)
        r = self.vo.process(f.grey, f.stamp_ns)
        self.out.odometry.append(r)
        if self.graph is None:
            return
        t0 = time.perf_counter()
        s = self.out.stats["pose_graph"]
        s.frames_in += 1
        with self._graph_lock:
            try:
                changed = self.graph.add_odometry(f.stamp_ns, r.pose, r.covariance,
                                                  reset=r.reset is not None) is not None
            except ValueError as exc:  # e.g. stamps going backwards (a looped bag): this frame is not in the graph
                s.errors += 1
                logger.warning("pose graph: frame %d (%d ns) skipped: %s", f.index, f.stamp_ns, exc)
                return
            changed |= self._apply_loops(f.stamp_ns)
            if changed:
                self.out.map_to_odom.append((f.stamp_ns, self.graph.map_to_odom()))
        s.processed += 1
        s.latency_ms.append((time.perf_counter() - t0) * 1e3)

    def _apply_loops(self, latest_stamp_ns: int | None) -> bool:
        """Loop closures whose query the VO has reached (all of them with None); True when one was accepted."""
        accepted = False
        keep: deque = deque(maxlen=self._pending_loops.maxlen)
        while self._pending_loops:
            q, m, v = self._pending_loops.popleft()
            if latest_stamp_ns is not None and q > latest_stamp_ns:
                keep.append((q, m, v))
                continue
            d = self.graph.add_loop(q, m, v.rotation, v.translation, v.covariance)
            self.out.loop_decisions.append(d)
            accepted |= d.accepted
        self._pending_loops = keep
        return accepted

    def _run_stage(self, stage: str, f: InputFrame) -> None:
        s = self.out.stats[stage]
        t0 = time.perf_counter()
        try:
            {"homography": self._homography, "loop_closure": self._loop_closure, "vo": self._vo}[stage](f)
        except (ValueError, ImageEncodingError, np.linalg.LinAlgError) as exc:
            s.errors += 1
            logger.warning("%s: frame %d (%d ns) failed: %s", stage, f.index, f.stamp_ns, exc)
            return
        t1 = time.perf_counter()
        s.processed += 1
        s.latency_ms.append((t1 - t0) * 1e3)
        s.age_ms.append((t1 - f.released) * 1e3)

    # ------------------------------------------------------------------ input
    def _load_gps(self, bag, topic: str = "/gps/fix") -> None:
        """GPS fixes of the bag tag the keyframes (geolocation), as the node's optional GPS input."""
        if topic not in getattr(bag, "topics", {}):
            return
        for _, _, msg in bag.messages([topic]):
            if int(msg.status.status) >= 0 and np.isfinite(msg.latitude) and np.isfinite(msg.longitude):
                stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
                self.gps_fixes.append((stamp, float(msg.latitude), float(msg.longitude), float(msg.altitude)))
        self.gps_fixes.sort()
        self._gps_stamps = np.array([g[0] for g in self.gps_fixes], np.int64)

    def _frames(self, bag, limit: int | None) -> Iterable[InputFrame]:
        for frame in bag.frames(stop=limit):
            try:
                grey = as_grey(frame.image)
            except ImageEncodingError as exc:
                self.out.bad_frames += 1
                logger.warning("frame %d skipped: %s", frame.index, exc)
                continue
            yield InputFrame(frame.index, frame.stamp_ns, grey, frame.camera)

    # ------------------------------------------------------------------ modes
    def run(self, bag, mode: str = "offline", *, rate: float = 1.0, limit: int | None = None,
            progress: Callable[[int], None] | None = None) -> PipelineOutputs:
        """Run over ``bag`` (a :class:`deep_vision.io.bag.BagSequence`); returns the outputs."""
        if mode not in MODES:
            raise ConfigError(f"mode must be offline or realtime, got {mode!r}")
        if rate <= 0:
            raise ConfigError(f"rate must be positive, got {rate}")
        if self.detector is not None:
            self._load_gps(bag)
        t0 = time.perf_counter()
        if mode == "offline":
            self._offline(bag, limit, progress)
        else:
            self._realtime(bag, rate, limit, progress)
        if self.graph is not None:
            with self._graph_lock:
                if self._apply_loops(None):
                    self.out.map_to_odom.append((self.out.stamps_ns[-1], self.graph.map_to_odom()))
        self.out.bad_frames += getattr(bag, "bad_frames", 0)
        self.out.wall_s = time.perf_counter() - t0
        return self.out

    def _image_stages(self) -> list[str]:
        # VO before place recognition: a loop closure's query frame is then already in the pose graph.
        return [s for s in ("homography", "vo", "loop_closure") if s in self.stages]

    def _offline(self, bag, limit: int | None, progress) -> None:
        stages = self._image_stages()
        for f in self._frames(bag, limit):
            f.released = time.perf_counter()
            self.out.frames += 1
            self.out.stamps_ns.append(f.stamp_ns)
            for stage in stages:
                self.out.stats[stage].frames_in += 1
                self._run_stage(stage, f)
            if progress:
                progress(self.out.frames)

    def _realtime(self, bag, rate: float, limit: int | None, progress) -> None:
        stages = self._image_stages()
        queues = {s: deque(maxlen=self.queue_depth[s]) for s in stages}
        cond = {s: threading.Condition() for s in stages}
        closed = threading.Event()
        # Per stage, what decides on arrival whether a frame is queued at all (as FrameQueue's admit in a node).
        admit: dict[str, Callable[[int], bool]] = {}
        if "loop_closure" in stages:
            self._gate = self.detector.keyframes.arrival_gate()
            if self._gate is not None:
                admit["loop_closure"] = self._gate.admit

        def worker(stage: str) -> None:
            q, c = queues[stage], cond[stage]
            while True:
                with c:
                    while not q and not closed.is_set():
                        c.wait(0.1)
                    if not q:
                        return
                    f = q.popleft()
                self._run_stage(stage, f)

        threads = [threading.Thread(target=worker, args=(s,), name=f"pipeline-{s}", daemon=True) for s in stages]
        for t in threads:
            t.start()
        start_wall = first_stamp = None
        try:
            for f in self._frames(bag, limit):
                if first_stamp is None:
                    first_stamp, start_wall = f.stamp_ns, time.perf_counter()
                due = start_wall + (f.stamp_ns - first_stamp) / 1e9 / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                f.released = time.perf_counter()
                self.out.frames += 1
                self.out.stamps_ns.append(f.stamp_ns)
                for stage in stages:
                    with cond[stage]:
                        s = self.out.stats[stage]
                        s.frames_in += 1
                        if stage in admit and not admit[stage](f.stamp_ns):
                            s.skipped += 1
                            continue
                        if len(queues[stage]) == queues[stage].maxlen:
                            s.dropped += 1  # the oldest waiting frame is pushed out
                        queues[stage].append(f)
                        cond[stage].notify()
                if progress:
                    progress(self.out.frames)
        finally:
            closed.set()
            for stage in stages:
                with cond[stage]:
                    cond[stage].notify_all()
            for t in threads:
                t.join()
