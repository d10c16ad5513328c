"""A recording of what the estimators see, for the Rerun viewer: live (``--view``) or to a file (``--record``).

Rerun (rerun.io) is a viewer and log format made for robotics and computer vision streams: images with 2-D
overlays, 3-D trajectories and time series on shared timelines, a recording file (``.rrd``) that opens later in
the same viewer, and a Python SDK that reads recordings back. That covers what a run of deep_vision has to show
without ROS; ROS users get RViz2 / Foxglove views of the topics instead.

:class:`RunRecorder` takes the pipeline's stage outputs (:meth:`Pipeline.run`'s ``observer``) and logs, on the
``frame`` (sequence) and ``time`` (the frame's stamp) timelines:

- ``camera/image``: the frame (grey, at most ``image_width`` pixels wide, JPEG); ``camera/image/tracks``: the points
  the VO's two-view step kept; ``camera/image/homography``: a grid of the previous frame carried into this one
  by the estimated homography;
- ``loop_closure/candidates``: for each keyframe with loop-closure candidates, the keyframe (top left) and
  every candidate the place recognition returned, best first, in a grid three wide, and
  ``loop_closure/candidates/boxes``: a box around each candidate, green when verified, grey when rejected,
  labelled with its similarity and inlier count;
- ``loop_closure/pair``: for each keyframe with a verified loop closure, the keyframe beside its match
  (left: this keyframe, right: the earlier one) and ``loop_closure/pair/inliers``: a line per RANSAC inlier;
- ``world/vo``: the VO trajectory (base_link in odom, metres; redrawn every ``path_every`` frames and at the end),
  ``world/vo/position``: its newest position, every frame; ``world/pose_graph``: the optimised keyframe path;
  ``world/loop_closures``: a line between the two keyframes of each verified loop closure (at the VO's
  positions); ``world/loop_candidates``: the newest keyframe's candidates, a grey line to each;
  ``world/ground_truth``: the bag's ground truth, when given (:meth:`set_ground_truth` or
  :meth:`ground_truth_from`), drawn with the VO's path;
- ``latency/<stage>``: each stage's time per frame (ms).

It never slows the pipeline: :meth:`submit` puts the output on a bounded queue and returns (a full queue drops
the item, counted in ``dropped``), and a worker thread converts and logs. Dropped viewer items are fine where
dropped pipeline frames are not.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deep_vision.errors import ConfigError

logger = logging.getLogger(__name__)


def _rerun():
    try:
        import rerun as rr
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ConfigError("--view / --record need the rerun-sdk package (pip install rerun-sdk)") from exc
    return rr


def _blueprint():
    """The layout the viewer opens with: the camera and the loop-closure pair on the left, the trajectories and the
    latency on the right, following the newest data."""
    import rerun.blueprint as rrb

    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Vertical(rrb.Spatial2DView(origin="camera/image", name="camera: VO inliers, homography grid"),
                         rrb.Spatial2DView(origin="loop_closure/candidates",
                                           name="keyframe | its candidates (green: verified)"),
                         rrb.Spatial2DView(origin="loop_closure/pair", name="loop closure: keyframe | match"),
                         row_shares=[3, 2, 2]),
            rrb.Vertical(rrb.Spatial3DView(origin="world", name="VO, pose graph, ground truth, loop closures"),
                         rrb.TimeSeriesView(origin="latency", name="latency per stage (ms)"),
                         row_shares=[2, 1])),
        rrb.TimePanel(play_state="following"), collapse_panels=True)


class RunRecorder:
    """See the module docstring. ``record``: an ``.rrd`` file to write; ``spawn``: start a Rerun viewer and
    stream to it (on ``port``; a viewer already listening there is used); both may be given. Close with
    :meth:`close` (it drains the queue)."""

    def __init__(self, record: str | Path | None = None, spawn: bool = False, *, max_queue: int = 256,
                 image_width: int = 640, jpeg_quality: int = 85, grid: int = 8, keyframes_kept: int = 2000,
                 thumb_height: int = 120, port: int = 9876, path_every: int = 10,
                 application_id: str = "deep_vision") -> None:
        if record is None and not spawn:
            raise ConfigError("RunRecorder needs a file to record to or a viewer to spawn")
        rr = _rerun()
        self._rr = rr
        self.rec = rr.RecordingStream(application_id)
        if record is not None:
            path = Path(record)
            if path.suffix != ".rrd":
                raise ConfigError(f"--record: {path} must end in .rrd (a Rerun recording)")
            path.parent.mkdir(parents=True, exist_ok=True)
        blueprint = _blueprint()
        if spawn:
            # the viewer executable is installed beside this Python (a venv's bin/, which need not be on PATH)
            os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
            try:
                self.rec.spawn(port=port, connect=record is None, default_blueprint=blueprint)
            except Exception as exc:  # the viewer binary missing or not starting: one line, no traceback
                raise ConfigError(f"--view: the Rerun viewer did not start ({str(exc).splitlines()[0]})") from exc
        if record is not None:
            sinks = [rr.FileSink(str(record))]
            if spawn:
                sinks.append(rr.GrpcSink(f"rerun+http://127.0.0.1:{port}/proxy"))
            self.rec.set_sinks(*sinks, default_blueprint=blueprint)
        self.image_width = int(image_width)
        self.jpeg_quality = int(jpeg_quality)
        self.grid = int(grid)
        self.dropped = 0
        self.logged: Counter[str] = Counter()
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._frame = 0
        self._vo: dict[int, np.ndarray] = {}  # stamp -> base_link position in odom
        self._vo_path: list[np.ndarray] = []
        self._loops: list[np.ndarray] = []  # [2 x 3] VO positions of each verified loop closure's keyframes
        self._loops_waiting: list[tuple[int, int]] = []  # (query, match) stamps, a VO position still missing
        self._keyframes: OrderedDict[int, tuple[bytes, float]] = OrderedDict()  # stamp -> (JPEG, scale)
        self.keyframes_kept = int(keyframes_kept)
        self.thumb_height = int(thumb_height)
        self._candidate_lines = False
        self._candidates_waiting: tuple[int, list[int]] | None = None  # (keyframe, candidates) stamps to draw
        self._vo_last = -1  # the newest VO stamp drawn (the VO's outputs come in stamp order)
        self.path_every = max(1, int(path_every))
        self._gt = self._gt_X = self._gt_first = None
        self._gt_path: list[np.ndarray] = []
        self._worker = threading.Thread(target=self._run, name="viewer", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ producer side (processing threads)
    def submit(self, stage: str, stamp_ns: int, frame: Any, out: Any, latency_ms: float | None = None) -> None:
        """Queue one stage output (never blocks; a full queue drops it)."""
        try:
            self._queue.put_nowait((stage, int(stamp_ns), frame, out, latency_ms))
        except queue.Full:
            self.dropped += 1

    def set_ground_truth(self, camera_pose_at: Any, T_base_camera: Any) -> None:
        """Draw the ground truth with the VO, frame by frame: ``camera_pose_at(stamp_ns)`` gives the camera's true
        pose (KITTI convention, any origin) or None, ``T_base_camera()`` the camera's pose on the robot (read
        when used: /tf_static may set it after the start). Positions are base_link's, in the VO's odom frame
        (base_link at the first frame drawn)."""
        self._gt, self._gt_X = camera_pose_at, T_base_camera

    def ground_truth_from(self, bag: Any, T_base_camera: Any) -> bool:
        """:meth:`set_ground_truth` from a bag's ground truth (a path or an open
        :class:`~deep_vision.io.bag.BagSequence`); False (nothing drawn) when the bag has none usable."""
        from deep_vision.io.bag import BagSequence
        from deep_vision.pipeline.report import ground_truth_of

        gt = ground_truth_of(bag if isinstance(bag, BagSequence) else BagSequence(bag))
        if gt is None:
            return False

        def pose_at(stamp_ns: int):
            ok, poses = gt.at(np.array([stamp_ns]))
            return poses[0] if ok[0] else None

        self.set_ground_truth(pose_at, T_base_camera)
        return True

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join()
        self._log_vo_path()  # the complete path at the end
        self.rec.flush()
        self.rec.disconnect()

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._log(*item)
            except Exception as exc:  # the viewer must never stop the run
                logger.warning("viewer: %s output at %d ns not drawn: %s", item[0], item[1], exc)

    def _time(self, stamp_ns: int) -> None:
        self.rec.set_time("time", timestamp=stamp_ns * 1e-9)

    def _log(self, stage: str, stamp_ns: int, frame: Any, out: Any, latency_ms: float | None) -> None:
        rr = self._rr
        self._time(stamp_ns)
        if latency_ms is not None:
            self.rec.log(f"latency/{stage}", rr.Scalars(float(latency_ms)))
        if stage == "vo":
            self._log_vo(stamp_ns, frame, out)
        elif stage == "homography" and out is not None and out.valid:
            self._log_homography(out)
        elif stage == "loop_closure" and out is not None:
            self._log_loops(out, frame)
        elif stage == "pose_graph" and out is not None and out.path is not None:
            positions = np.asarray(out.path[1])[:, :3, 3]
            self.rec.log("world/pose_graph", rr.LineStrips3D([positions], colors=[[230, 120, 20]]))
            self.logged["world/pose_graph"] += 1

    def _image_scale(self, shape: tuple[int, int]) -> float:
        h, w = shape
        return min(1.0, self.image_width / w)

    def _log_vo(self, stamp_ns: int, frame: Any, out: Any) -> None:
        rr = self._rr
        self.rec.set_time("frame", sequence=self._frame)
        self._frame += 1
        small, s = self._small(frame.grey)
        self.rec.log("camera/image", rr.Image(small).compress(jpeg_quality=self.jpeg_quality))
        self.logged["camera/image"] += 1
        points = getattr(out.result, "points", None)
        if points is not None and len(points):
            self.rec.log("camera/image/tracks", rr.Points2D(np.asarray(points, float) * s, radii=1.5,
                                                             colors=[[40, 220, 60]]))
            self.logged["camera/image/tracks"] += 1
        position = np.asarray(out.pose, float)[:3, 3]
        if out.result.reset:
            self._vo_path, self._vo_last = [], -1  # a new trajectory (its stamps may start earlier)
        self._vo[stamp_ns] = position
        self._vo_last = max(self._vo_last, stamp_ns)
        while len(self._vo) > 10 * self.keyframes_kept:  # loop closures look this far back at most
            self._vo.pop(next(iter(self._vo)))
        self._vo_path.append(position)
        if self._loops_waiting:  # a loop closure came before this position
            self._log_loop_lines()
        if self._candidates_waiting is not None:
            self._log_candidate_lines()
        if self._gt is not None:
            P = self._gt(stamp_ns)
            if P is not None:
                if self._gt_first is None or out.result.reset:
                    self._gt_first, self._gt_path = np.linalg.inv(P), []
                X = np.asarray(self._gt_X(), float)
                self._gt_path.append((X @ self._gt_first @ P @ np.linalg.inv(X))[:3, 3])
        self.rec.log("world/vo/position", rr.Points3D([position], radii=0.3, colors=[[30, 110, 230]]))
        self.logged["world/vo/position"] += 1
        if len(self._vo_path) % self.path_every == 1 or self.path_every == 1:  # the whole path: O(length)
            self._log_vo_path()

    def _log_vo_path(self) -> None:
        if self._vo_path:
            self.rec.log("world/vo", self._rr.LineStrips3D([np.array(self._vo_path)], colors=[[30, 110, 230]]))
            self.logged["world/vo"] += 1
        if self._gt_path:
            self.rec.log("world/ground_truth", self._rr.LineStrips3D([np.array(self._gt_path)],
                                                                    colors=[[150, 150, 150]]))
            self.logged["world/ground_truth"] += 1

    def _log_homography(self, out: Any) -> None:
        rr = self._rr
        w, h = out.image_size
        if not w or not h:
            return
        s = min(1.0, self.image_width / w)
        n = self.grid
        xs, ys = np.linspace(0, w - 1, n + 1), np.linspace(0, h - 1, n + 1)
        lines = [np.c_[np.full(32, x), np.linspace(0, h - 1, 32)] for x in xs] + \
                [np.c_[np.linspace(0, w - 1, 32), np.full(32, y)] for y in ys]
        warped = []
        for line in lines:
            q = np.c_[line, np.ones(len(line))] @ np.asarray(out.matrix, float).T
            warped.append(q[:, :2] / q[:, 2:3] * s)
        self.rec.log("camera/image/homography", rr.LineStrips2D(warped, colors=[[250, 200, 0]], radii=0.6))
        self.logged["camera/image/homography"] += 1

    def _small(self, grey: np.ndarray) -> tuple[np.ndarray, float]:
        s = self._image_scale(grey.shape)
        if s == 1.0:
            return grey, s
        return cv2.resize(grey, (round(grey.shape[1] * s), round(grey.shape[0] * s)), interpolation=cv2.INTER_AREA), s

    def _log_loops(self, out: Any, frame: Any) -> None:
        rr = self._rr
        if frame is not None:  # every keyframe is kept (JPEG) to be drawn beside a later query
            small, s = self._small(frame.grey)
            self._keyframes[out.stamp_ns] = (cv2.imencode(".jpg", small)[1].tobytes(), s)
            while len(self._keyframes) > self.keyframes_kept:
                self._keyframes.popitem(last=False)
        self._log_candidates(out)
        drawn = next((c for c in out.verified if c.match_stamp_ns in self._keyframes and out.stamp_ns in
                      self._keyframes), None)
        if drawn is not None:
            (qj, sq), (mj, sm) = self._keyframes[out.stamp_ns], self._keyframes[drawn.match_stamp_ns]
            qi, mi = (cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE) for b in (qj, mj))
            h = max(qi.shape[0], mi.shape[0])
            pair = np.zeros((h, qi.shape[1] + mi.shape[1]), np.uint8)
            pair[:qi.shape[0], :qi.shape[1]], pair[:mi.shape[0], qi.shape[1]:] = qi, mi
            self.rec.log("loop_closure/pair", rr.Image(pair).compress(jpeg_quality=self.jpeg_quality))
            self.logged["loop_closure/pair"] += 1
            v = drawn.verification
            if v is not None and v.inlier_points is not None:
                pq, pm = (np.asarray(a, float) for a in v.inlier_points)
                lines = np.stack([pq * sq, pm * sm + [qi.shape[1], 0.0]], axis=1)
                self.rec.log("loop_closure/pair/inliers", rr.LineStrips2D(lines, colors=[[40, 220, 60]], radii=0.5))
                self.logged["loop_closure/pair/inliers"] += 1
        self._loops_waiting.extend((out.stamp_ns, c.match_stamp_ns) for c in out.verified)
        self._log_loop_lines()

    @property
    def loops_drawn(self) -> int:
        return len(self._loops)

    def _log_loop_lines(self) -> None:
        """A line per verified loop closure, once both keyframes have a VO position: the VO may come later than
        the loop closure (the nodes run apart), so this runs again as positions arrive."""
        ready = [(q, m) for q, m in self._loops_waiting if q in self._vo and m in self._vo]
        # a query the VO has passed without a position (a dropped frame) or a match it no longer holds: never drawn
        self._loops_waiting = [(q, m) for q, m in self._loops_waiting if (q, m) not in ready and q > self._vo_last]
        if not ready:
            return
        self._loops.extend(np.array([self._vo[q], self._vo[m]]) for q, m in ready)
        self.rec.log("world/loop_closures", self._rr.LineStrips3D(self._loops, colors=[[220, 30, 30]]))
        self.logged["world/loop_closures"] += 1

    def _log_candidate_lines(self) -> None:
        """The newest keyframe's candidate lines, once its VO position is known (an empty list clears the
        previous keyframe's)."""
        q, matches = self._candidates_waiting
        if q not in self._vo:
            if q <= self._vo_last:  # the VO passed this keyframe without a position (a dropped frame)
                self._candidates_waiting = None
            return
        lines = [np.array([self._vo[q], self._vo[m]]) for m in matches if m in self._vo]
        if lines or self._candidate_lines:
            self.rec.log("world/loop_candidates", self._rr.LineStrips3D(lines, colors=[[160, 160, 160]], radii=0.05))
            self.logged["world/loop_candidates"] += 1
        self._candidate_lines, self._candidates_waiting = bool(lines), None

    def _log_candidates(self, out: Any) -> None:
        """The keyframe and all its candidates in a grid three wide (each scaled to ``thumb_height`` rows), boxed
        and labelled; and a grey line to each in the world view (only the newest keyframe's)."""
        rr = self._rr
        self._candidates_waiting = (out.stamp_ns, [c.match_stamp_ns for c in out.candidates])
        self._log_candidate_lines()
        shown = [c for c in out.candidates if c.match_stamp_ns in self._keyframes]
        if not shown or out.stamp_ns not in self._keyframes:
            return
        h = self.thumb_height
        tiles = []
        for stamp in [out.stamp_ns] + [c.match_stamp_ns for c in shown]:
            img = cv2.imdecode(np.frombuffer(self._keyframes[stamp][0], np.uint8), cv2.IMREAD_GRAYSCALE)
            tiles.append(cv2.resize(img, (max(1, round(img.shape[1] * h / img.shape[0])), h),
                                    interpolation=cv2.INTER_AREA))
        w = max(t.shape[1] for t in tiles)
        cols = min(len(tiles), 3)  # a grid, three tiles wide: the keyframe first, then the candidates best first
        rows = -(-len(tiles) // cols)
        grid = np.zeros((rows * h, cols * w), np.uint8)
        boxes, labels, colors = [], [], []
        for k, tile in enumerate(tiles):
            y, x = (k // cols) * h, (k % cols) * w
            grid[y:y + h, x:x + tile.shape[1]] = tile
            if k == 0:
                continue
            c = shown[k - 1]
            boxes.append([x, y, tile.shape[1], h])
            labels.append(f"#{c.match_id} sim {c.similarity:.2f}, {c.inliers} inliers" +
                          (" ✓" if c.verified else ""))
            colors.append([40, 220, 60] if c.verified else [150, 150, 150])
        self.rec.log("loop_closure/candidates", rr.Image(grid).compress(jpeg_quality=self.jpeg_quality))
        self.rec.log("loop_closure/candidates/boxes", rr.Boxes2D(array=boxes, array_format=rr.Box2DFormat.XYWH,
                                                                 labels=labels, colors=colors, radii=1.0))
        self.logged["loop_closure/candidates"] += 1
