"""The place recognition node's stage: keyframes, loop-closure candidates, geolocation.

Owns the camera intrinsics (used only for frames of their size), the GPS
buffer (a keyframe is tagged with the fix nearest in time, within
``gps_max_age_s``) and its local tangent plane (positions for the distance
keyframe criterion), the arrival gate of time-only keyframes, and the keyframe
database (loaded from ``database_path`` when it holds one).
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deep_vision.errors import ConfigError, DeepVisionError
from deep_vision.estimators.geolocation import LocalTangentPlane, haversine_m
from deep_vision.stages.inputs import CameraInfo, Frame, GpsFix

GPS_BUFFER = 4096
#: Narrowest frame side the keyframes take: ORB's image pyramid fails on a frame one pixel wide or high.
MIN_FRAME_SIDE_PX = 2


@dataclass(frozen=True)
class PlaceOut:
    stamp_ns: int
    frame_id: str
    result: Any  # QueryResult: keyframe id, session, candidates best first, geolocation
    gps: tuple[float, float, float] | None  # the keyframe's own fix
    publish: bool  # a LoopClosureArray is published (candidates to publish, or publish_empty)
    base_frame: str = "base_link"  # frame of the loop-closure poses
    candidates: tuple = ()  # the ones the message carries, best first (verified; all with publish_unverified)

    @property
    def geolocation(self) -> Any:
        return self.result.geolocation


class PlaceStage:
    """``counters``: the detector's, ``sessions``, ``map_keyframes``, ``gps_no_fix``, ``bad_camera_info``,
    ``frames_between_keyframes``, ``frames_too_small``, ``loop_closure_msgs``, ``geolocations``."""

    def __init__(self, detector: Any, p: dict[str, Any], database_path: Path | None = None) -> None:
        self.detector = detector
        self.database_path = database_path
        self.publish_empty = bool(p["publish_empty"])
        self.publish_unverified = bool(p["publish_unverified"])
        self.base_frame = str(p["base_frame"])
        self.loop_scale = str(p["loop_scale"])
        self.gps_max_age_ns = int(float(p["gps_max_age_s"]) * 1e9)
        self.info: CameraInfo | None = None
        self.gps: deque[GpsFix] = deque(maxlen=GPS_BUFFER)
        self.plane: LocalTangentPlane | None = None
        self.geo_errors_m: deque[float] = deque(maxlen=200)
        self.gate = detector.keyframes.arrival_gate()  # time-only keyframes: chosen on arrival
        # A node feeds camera info and GPS from its executor thread while its worker runs process().
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self._update_counters()

    @classmethod
    def from_params(cls, p: dict[str, Any], node: str = "place_recognition_node") -> PlaceStage:
        """From place_recognition_node's parameters; a broken model or database raises ConfigError naming the
        parameter."""
        from deep_vision.estimators.loop_closure import LoopClosureDetector
        from deep_vision.params import validate
        from deep_vision.pipeline.build import build_loop_detector, build_recognizer

        p = validate(node, p)
        recognizer = build_recognizer(p, node)
        path = Path(p["database_path"]) if p["database_path"] else None
        database = None
        if path is not None and (path / "database.json").is_file():
            try:
                database = LoopClosureDetector.load_database(path, recognizer,
                                                             approximate_above=int(p["approximate_above"]))
            except DeepVisionError as exc:
                raise ConfigError(f"{node}: parameter 'database_path' ({path}): {exc}") from exc
        detector = build_loop_detector(p, node, recognizer=recognizer, database=database)
        if database is not None and detector.verifier is not None:
            from deep_vision.estimators.loop_closure import KeyframeDatabase

            saved = KeyframeDatabase.read_metadata(path).get("local_features")
            if saved is not None and saved != detector.verifier.label:
                raise ConfigError(f"{node}: parameter 'features' ({detector.verifier.label}) differs from the local "
                                  f"features of the keyframe database at 'database_path' ({path}: {saved}): "
                                  "keyframes could not be verified; use the same features or build a new map")
        return cls(detector, p, path)

    @property
    def recognizer(self) -> Any:
        return self.detector.recognizer

    # ------------------------------------------------------------------ inputs
    def set_camera_pose(self, T_base_camera: np.ndarray) -> None:
        """The camera's pose on the robot (e.g. from /tf_static): loop closures are between base_link frames,
        metric from the ground (``loop_scale``). Raises ConfigError when the ground cannot be used with it."""
        verifier = self.detector.verifier
        if verifier is not None:
            with self._lock:
                verifier.set_camera_pose(T_base_camera, ground=self.loop_scale == "ground")

    def set_camera_info(self, info: CameraInfo | None) -> None:
        if info is None:
            self.counters["bad_camera_info"] += 1
            return
        with self._lock:
            self.info = info

    def add_gps(self, fix: GpsFix | None) -> None:
        if fix is None:
            self.counters["gps_no_fix"] += 1
            return
        with self._lock:
            self.gps.append(fix)

    def gps_at(self, stamp_ns: int) -> tuple[float, float, float] | None:
        """(lat, lon, alt) of the fix nearest to ``stamp_ns`` within ``gps_max_age_s``."""
        with self._lock:
            fixes = list(self.gps)
        if not fixes:
            return None
        stamps = np.fromiter((g.stamp_ns for g in fixes), np.int64, len(fixes))
        k = int(np.argmin(np.abs(stamps - stamp_ns)))
        if abs(int(stamps[k]) - stamp_ns) > self.gps_max_age_ns:
            return None
        g = fixes[k]
        return g.latitude, g.longitude, g.altitude

    def admit(self, stamp_ns: int) -> bool:
        """Whether a frame arriving at ``stamp_ns`` goes to :meth:`process`: with time-only keyframes only the
        frames that will be keyframes do (the others are counted), else all."""
        if self.gate is None or self.gate.admit(stamp_ns):
            return True
        self.counters["frames_between_keyframes"] += 1
        return False

    def skip(self) -> None:
        """An admitted frame will not reach :meth:`process` (undecodable): admit the next arrival."""
        if self.gate is not None:
            self.gate.reopen()

    # ------------------------------------------------------------------ keyframes
    def process(self, frame: Frame) -> PlaceOut | None:
        """Query and add ``frame`` when it becomes a keyframe; None when it does not."""
        result = None
        try:
            if min(frame.size) < MIN_FRAME_SIDE_PX:
                self.counters["frames_too_small"] += 1
                return None
            image = frame.rgb if self.recognizer.wants_rgb else frame.grey
            with self._lock:
                current = self.info
            info = current if current is not None and (current.camera.width, current.camera.height) == frame.size \
                else None
            gps = self.gps_at(frame.stamp_ns)
            position = None
            if gps is not None:
                if self.plane is None:
                    self.plane = LocalTangentPlane(gps[0], gps[1], gps[2] if math.isfinite(gps[2]) else 0.0)
                position = self.plane.to_enu(gps[0], gps[1], 0.0)
            result = self.detector.process(
                image, frame.stamp_ns, K=None if info is None else info.camera.K,
                distortion=None if info is None else info.distortion,
                distortion_model="plumb_bob" if info is None else info.distortion_model, gps=gps, position=position)
        finally:
            if result is None:
                self.skip()  # the admitted frame did not become a keyframe: take the next one
            self._update_counters()
        if result is None:
            return None
        published = tuple(c for c in result.candidates if c.verified or self.publish_unverified)
        out = PlaceOut(frame.stamp_ns, frame.frame_id, result, gps, bool(published) or self.publish_empty,
                       self.base_frame, published)
        self.counters["metric_loop_closures"] += sum(c.verified and c.has_relative_pose and c.verification.metric
                                                     for c in result.candidates)
        self.counters["loop_closure_msgs"] += out.publish
        if result.geolocation is not None:
            self.counters["geolocations"] += 1
            if gps is not None:  # the query has its own fix: the great-circle error against it
                self.geo_errors_m.append(float(haversine_m(result.geolocation.latitude,
                                                           result.geolocation.longitude, gps[0], gps[1])))
        return out

    def _update_counters(self) -> None:
        for key, n in self.detector.counters.items():
            self.counters[key] = n
        self.counters["sessions"] = self.detector.session + 1
        self.counters["map_keyframes"] = len(self.detector.db)

    # ------------------------------------------------------------------ map files
    def save(self) -> Path | None:
        """Write the database to ``database_path`` (when set); raises OSError."""
        if self.database_path is None:
            return None
        return self.detector.save(self.database_path)
