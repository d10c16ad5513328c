"""``place_recognition_node``: loop-closure candidates and geolocation from a camera stream.

Subscribes ``image`` (sensor_msgs/Image), ``camera_info`` (sensor_msgs/CameraInfo,
intrinsics for the essential-matrix check and the relative pose) and, optionally,
``gps/fix`` (sensor_msgs/NavSatFix: keyframes are geotagged with the fix nearest
in time). Publishes, for each keyframe with candidates, ``loop_closures``
(deep_vision_msgs/LoopClosureArray: the keyframe's header, top-k earlier
keyframes best first, with similarity, geometric verification, and the relative
pose with covariance when intrinsics are known: translation is a unit direction,
``metric_translation`` false), ``geolocation`` (sensor_msgs/NavSatFix estimated
from verified candidates whose keyframes carry GPS) and ``/diagnostics``.

The keyframe database can be loaded from and saved to ``database_path`` (at
start-up when the folder holds one; on shutdown and every ``save_every_s``), so
a map is reused across runs. A time jump backwards (a bag played again) starts
a new session: the database is kept and the recency window follows the new
stamps (see :mod:`deep_vision.estimators.loop_closure`). Undecodable images are
counted and skipped. With time-only keyframes (``keyframe_distance_m`` and
``keyframe_max_similarity`` 0) the keyframes are chosen on arrival and only they
are queued (``queue_depth`` keyframes wait, not frames; the others are counted as
``frames_between_keyframes``), so a slow keyframe delays the next ones instead of
crowding them out.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from deep_vision_msgs.msg import LoopClosure, LoopClosureArray
from sensor_msgs.msg import CameraInfo, Image, NavSatFix, NavSatStatus

from deep_vision.errors import ConfigError, DeepVisionError, ImageEncodingError
from deep_vision.estimators.geolocation import LocalTangentPlane, haversine_m
from deep_vision.estimators.loop_closure import (
    LoopClosureDetector,
    QueryResult,
)
from deep_vision.geometry.transforms import quaternion_from_rotation
from deep_vision.io.image import check_image_message, message_to_mono8, message_to_rgb8
from deep_vision.nodes.common import (
    INFERENCE_PARAMS,
    QOS_PARAMS,
    FrameQueue,
    ImageNode,
    NodeDiagnostics,
    Param,
    backend_diagnostics,
    declare,
    image_qos,
    spin_node,
    stamp_ns,
    time_msg,
)
from deep_vision.pipeline.build import build_loop_detector, build_recognizer

PARAMS = [
    Param("descriptor", "network", "Global descriptor: network (PlaceNet, model_path) or sad (SeqSLAM's "
          "patch-normalised thumbnail, no network).", choices=("network", "sad")),
    Param("model_path", "", "PlaceNet model (.onnx with its model card, or a .pt checkpoint); empty: the shipped "
          "models/place.onnx. Unused with descriptor sad."),
    *INFERENCE_PARAMS,
    Param("sad_width", 64, "Thumbnail width of the sad descriptor (pixels, multiple of 8).", range=(8, 1024)),
    Param("sad_height", 32, "Thumbnail height of the sad descriptor (pixels, multiple of 8).", range=(8, 1024)),
    Param("top_k", 5, "Loop-closure candidates per keyframe.", range=(1, 100)),
    Param("min_similarity", 0.0, "Candidates below this cosine similarity are dropped.", range=(-1.0, 1.0)),
    Param("exclude_recent_s", 20.0, "Keyframes younger than this (same session) are not searched.",
          range=(0.0, 86400.0)),
    Param("keyframe_interval_s", 0.5, "A keyframe at least every this many seconds (0: off).", range=(0.0, 3600.0)),
    Param("keyframe_distance_m", 0.0, "... or after travelling this far according to GPS (0: off).",
          range=(0.0, 10000.0)),
    Param("keyframe_max_similarity", 0.0, "... or when the similarity to the last keyframe drops below this "
          "(appearance change; 0: off).", range=(0.0, 1.0)),
    Param("keyframe_min_interval_s", 0.0, "Never two keyframes closer in time than this.", range=(0.0, 3600.0)),
    Param("verify", True, "Check candidates geometrically (local features + RANSAC)."),
    Param("features", "orb", "Local features for the geometric check.", choices=("orb", "sift")),
    Param("max_features", 1000, "Local features per keyframe.", range=(50, 20000)),
    Param("min_inliers", 25, "RANSAC inliers needed to verify a candidate.", range=(5, 10000)),
    Param("min_inlier_ratio", 0.25, "Fraction of the putative matches that must be inliers.", range=(0.0, 1.0)),
    Param("ransac_px", 2.0, "RANSAC inlier threshold (pixels).", range=(0.1, 50.0)),
    Param("approximate_above", 50000, "Keyframe count from which the HNSW index replaces exact search.",
          range=(1, 1_000_000_000)),
    Param("database_path", "", "Folder of the keyframe database: loaded at start when it holds one, saved on "
          "shutdown (empty: in memory only)."),
    Param("save_every_s", 0.0, "Also save the database this often (0: only on shutdown).", range=(0.0, 86400.0)),
    Param("gps_max_age_s", 0.5, "Largest time between a keyframe and the GPS fix that tags it.", range=(0.0, 60.0)),
    Param("geolocate_verified_only", True, "Estimate the geolocation from verified candidates only."),
    Param("publish_empty", False, "Publish a LoopClosureArray for keyframes without candidates too."),
    *QOS_PARAMS,
]

GPS_BUFFER = 4096
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")


class PlaceRecognitionNode(ImageNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("place_recognition_node", **kwargs)
        p = declare(self, PARAMS)
        self.params = p
        recognizer = build_recognizer(p)  # raises ConfigError naming the parameter
        self.database_path = Path(p["database_path"]) if p["database_path"] else None
        database = None
        if self.database_path is not None and (self.database_path / "database.json").is_file():
            try:
                database = LoopClosureDetector.load_database(self.database_path, recognizer,
                                                             approximate_above=p["approximate_above"])
            except DeepVisionError as exc:
                raise ConfigError(f"place_recognition_node: parameter 'database_path' ({self.database_path}): "
                                  f"{exc}") from exc
            self.get_logger().info(f"loaded {len(database)} keyframes from {self.database_path}")
        self.detector = build_loop_detector(p, recognizer=recognizer, database=database)
        self.K: np.ndarray | None = None
        self.K_size: tuple[int, int] | None = None
        self.distortion: np.ndarray | None = None
        self.distortion_model = "plumb_bob"
        self.gps: deque[tuple[int, float, float, float]] = deque(maxlen=GPS_BUFFER)
        self.plane: LocalTangentPlane | None = None
        self.geo_errors: deque[float] = deque(maxlen=200)
        backend = recognizer.backend
        self.diag = NodeDiagnostics(self, "place recognition", {
            "descriptor": recognizer.label, **backend_diagnostics(backend), "database": str(self.database_path or "memory")})
        qos = image_qos(p["image_qos"], p["queue_depth"])
        self.pub = self.create_publisher(LoopClosureArray, "loop_closures", 10)
        self.geo_pub = self.create_publisher(NavSatFix, "geolocation", 10)
        # Time-only keyframes are chosen on arrival: the queue then holds keyframes, not frames to be skipped.
        self.gate = self.detector.keyframes.arrival_gate()
        self.frames = FrameQueue(self, self.on_image, p["queue_depth"], self.diag,
                                 admit=self._admit if self.gate is not None else None)
        self.sub = self.create_subscription(Image, "image", self.frames.push, qos)
        self.info_sub = self.create_subscription(CameraInfo, "camera_info", self.on_camera_info, qos)
        self.gps_sub = self.create_subscription(NavSatFix, "gps/fix", self.on_gps, qos)
        self.save_timer = self.create_timer(p["save_every_s"], self.save_database) if p["save_every_s"] > 0 else None
        self._saved_size = len(self.detector.db)
        self.get_logger().info(f"place recognition with {recognizer.label}, "
                               f"{len(self.detector.db)} keyframes in the map")

    # ------------------------------------------------------------------ inputs
    def on_camera_info(self, msg: CameraInfo) -> None:
        K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
        if K[0, 0] > 0 and K[1, 1] > 0:
            self.K, self.K_size = K, (int(msg.width), int(msg.height))
            model = msg.distortion_model or "plumb_bob"
            if model in DISTORTION_MODELS:
                self.distortion, self.distortion_model = np.asarray(msg.d, dtype=np.float64), model
            else:
                self.distortion = None
                self.get_logger().warning(f"camera_info: distortion model {model!r} is not handled (only "
                                          f"{', '.join(DISTORTION_MODELS)}); keypoints are used as they are",
                                          throttle_duration_sec=60.0)

    def on_gps(self, msg: NavSatFix) -> None:
        # NO_FIX is refused; a driver that leaves the status unset (STATUS_UNKNOWN in newer ROS) is trusted.
        if msg.status.status == NavSatStatus.STATUS_NO_FIX or not (math.isfinite(msg.latitude) and
                                                                   math.isfinite(msg.longitude)):
            self.diag.counters["gps_no_fix"] += 1
            return
        self.gps.append((stamp_ns(msg.header.stamp), msg.latitude, msg.longitude, msg.altitude))

    def gps_at(self, stamp: int) -> tuple[float, float, float] | None:
        """The fix nearest to ``stamp`` within ``gps_max_age_s``."""
        if not self.gps:
            return None
        stamps = np.fromiter((g[0] for g in self.gps), np.int64, len(self.gps))
        k = int(np.argmin(np.abs(stamps - stamp)))
        if abs(int(stamps[k]) - stamp) > self.params["gps_max_age_s"] * 1e9:
            return None
        return self.gps[k][1], self.gps[k][2], self.gps[k][3]

    def _admit(self, msg: Image) -> bool:
        """Whether a frame is queued: with time-only keyframes, the frames between keyframes are not (they are
        still checked, without decoding, so that malformed ones are counted)."""
        if self.gate.admit(stamp_ns(msg.header.stamp)):
            return True
        self.diag.counters["frames_between_keyframes"] += 1
        try:
            check_image_message(msg)
        except ImageEncodingError as exc:
            self.diag.bad("image")
            self.get_logger().warning(f"image skipped: {exc}", throttle_duration_sec=5.0)
        return False

    def on_image(self, msg: Image) -> None:
        t0 = time.perf_counter()
        result = None
        try:
            try:
                image = message_to_rgb8(msg) if self.detector.recognizer.wants_rgb else message_to_mono8(msg)
            except ImageEncodingError as exc:
                self.diag.bad("image")
                self.get_logger().warning(f"image skipped: {exc}", throttle_duration_sec=5.0)
                return
            result = self._keyframe(msg, image)
        finally:
            if self.gate is not None and result is None:
                self.gate.reopen()  # the admitted frame did not become a keyframe: take the next one
        now = self.get_clock().now().nanoseconds
        self.diag.processed((time.perf_counter() - t0) * 1e3, (now - stamp_ns(msg.header.stamp)) / 1e6 if now else None)

    def _keyframe(self, msg: Image, image: np.ndarray) -> QueryResult | None:
        """Query and add the frame when it becomes a keyframe; publishes the result."""
        stamp = stamp_ns(msg.header.stamp)
        K = self.K if self.K_size == (image.shape[1], image.shape[0]) else None
        gps = self.gps_at(stamp)
        position = None
        if gps is not None:
            if self.plane is None:
                self.plane = LocalTangentPlane(gps[0], gps[1], gps[2] if math.isfinite(gps[2]) else 0.0)
            position = self.plane.to_enu(gps[0], gps[1], 0.0)
        result = self.detector.process(image, stamp, K=K, distortion=self.distortion if K is not None else None,
                                       distortion_model=self.distortion_model, gps=gps, position=position)
        for key, n in self.detector.counters.items():
            self.diag.counters[key] = n
        self.diag.counters["sessions"] = self.detector.session + 1
        self.diag.counters["map_keyframes"] = len(self.detector.db)
        if result is not None:
            self._publish(msg, result, gps)
        return result

    # ------------------------------------------------------------------ outputs
    def _publish(self, msg: Image, result: QueryResult, gps: tuple[float, float, float] | None) -> None:
        if result.candidates or self.params["publish_empty"]:
            out = LoopClosureArray()
            out.header = msg.header
            for c in result.candidates:
                lc = LoopClosure()
                lc.query_stamp = msg.header.stamp
                lc.match_stamp = time_msg(c.match_stamp_ns)
                lc.query_id = int(result.query_id)
                lc.match_id = int(c.match_id)
                lc.similarity = float(c.similarity)
                lc.verified = bool(c.verified)
                lc.inliers = int(c.inliers)
                lc.metric_translation = False
                if c.has_relative_pose:
                    v = c.verification
                    lc.has_relative_pose = True
                    pose = lc.relative_pose.pose
                    pose.position.x, pose.position.y, pose.position.z = (float(x) for x in v.translation)
                    q = quaternion_from_rotation(v.rotation)
                    o = pose.orientation
                    o.x, o.y, o.z, o.w = (float(x) for x in q)
                    lc.relative_pose.covariance = [float(x) for x in v.covariance.reshape(36)]
                else:
                    lc.relative_pose.pose.orientation.w = 1.0
                out.candidates.append(lc)
            self.pub.publish(out)
            self.diag.counters["loop_closure_msgs"] += 1
        geo = result.geolocation
        if geo is not None:
            fix = NavSatFix()
            fix.header = msg.header
            fix.status.status = NavSatStatus.STATUS_FIX
            fix.latitude, fix.longitude, fix.altitude = geo.latitude, geo.longitude, geo.altitude
            var = geo.std_m**2
            fix.position_covariance = [var, 0.0, 0.0, 0.0, var, 0.0, 0.0, 0.0, 100.0 * var]
            fix.position_covariance_type = NavSatFix.COVARIANCE_TYPE_APPROXIMATED
            self.geo_pub.publish(fix)
            self.diag.counters["geolocations"] += 1
            if gps is not None:  # the query has its own fix: report the great-circle error against it
                self.geo_errors.append(float(haversine_m(geo.latitude, geo.longitude, gps[0], gps[1])))
                self.diag.static["geolocation_error_m_p50"] = f"{np.median(self.geo_errors):.2f}"

    # ------------------------------------------------------------------ map files
    def save_database(self) -> Path | None:
        """Write the database to ``database_path`` (when set and changed since the last save)."""
        if self.database_path is None or len(self.detector.db) == self._saved_size and \
                (self.database_path / "database.json").is_file():
            return None
        try:
            folder = self.detector.save(self.database_path)
        except OSError as exc:
            self.get_logger().error(f"cannot save the keyframe database to {self.database_path}: {exc}")
            return None
        self._saved_size = len(self.detector.db)
        self.get_logger().info(f"saved {self._saved_size} keyframes to {folder}")
        return folder

    def destroy_node(self) -> None:
        self.close_frames()  # no frame is added to the database while or after it is saved
        self.save_database()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return spin_node(PlaceRecognitionNode, "place_recognition_node", args)


if __name__ == "__main__":
    sys.exit(main())
