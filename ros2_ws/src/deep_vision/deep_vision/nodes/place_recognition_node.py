"""``place_recognition_node``: loop-closure candidates and geolocation from a camera stream.

Subscribes ``image`` (sensor_msgs/Image), ``camera_info`` (sensor_msgs/CameraInfo,
intrinsics for the essential-matrix check and the relative pose) and, optionally,
``gps/fix`` (sensor_msgs/NavSatFix: keyframes are geotagged with the fix nearest
in time). Publishes, for each keyframe with verified candidates, ``loop_closures``
(deep_vision_msgs/LoopClosureArray: the keyframe's header, the verified ones
among the top-k earlier keyframes, best first, with similarity, inliers and,
when intrinsics are known, T_query_match between the two keyframes'
``base_frame`` frames with its covariance: metric from the ground when the two
top views align (``loop_scale``), else a unit direction with
``metric_translation`` false; ``publish_unverified`` adds the others),
``geolocation`` (sensor_msgs/NavSatFix estimated from verified candidates whose
keyframes carry GPS) and ``/diagnostics``. The camera's pose on the robot comes
from ``/tf_static`` or the ``camera_pose`` parameter, as in ``odometry_node``.

The keyframe database can be loaded from and saved to ``database_path`` (at
start-up when the folder holds one; on shutdown and every ``save_every_s``), so
a map is reused across runs. A time jump backwards (a bag played again) starts
a new session: the database is kept and the recency window follows the new
stamps (see :mod:`deep_vision.estimators.loop_closure`). Undecodable images are
counted and skipped. With time-only keyframes (``keyframe_distance_m`` and
``keyframe_max_similarity`` 0) the keyframes are chosen on arrival and only they
are queued (``queue_depth`` keyframes wait, not frames; the others are counted as
``frames_between_keyframes``), so a slow keyframe delays the next ones instead of
crowding them out. The per-stream work (GPS buffer, intrinsics, keyframe gate,
database) is :class:`~deep_vision.stages.PlaceStage`'s.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from deep_vision.errors import ConfigError, ImageEncodingError
from deep_vision.io.image import check_image_message
from deep_vision.nodes.common import (
    CameraPose,
    ImageNode,
    NodeDiagnostics,
    Outputs,
    backend_diagnostics,
    declare,
    frame_queue,
    image_qos,
    observe,
    spin_node,
    subscribe,
)
from deep_vision.params import SCHEMA
from deep_vision.stages import PlaceStage
from deep_vision.stages.inputs import camera_info_from_msg, frame_from_msg, gps_from_msg, stamp_ns
from deep_vision.stages.messages import LOOP_CLOSURES, NAVSATFIX, place_msgs

PARAMS = SCHEMA["place_recognition_node"]

#: How long the first frame waits for the first camera info (keyframes keep the intrinsics they were taken with).
FIRST_CAMERA_INFO_WAIT_S = 0.5


class PlaceRecognitionNode(ImageNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("place_recognition_node", **kwargs)
        p = declare(self, PARAMS)
        self.stage = PlaceStage.from_params(p)  # raises ConfigError naming the parameter
        self.camera_pose = CameraPose(self, p)
        recognizer = self.stage.recognizer
        self.diag = NodeDiagnostics(self, "place recognition", {
            "descriptor": recognizer.label, **backend_diagnostics(recognizer.backend),
            "database": str(self.stage.database_path or "memory")}, stage=self.stage)
        qos = image_qos(p["image_qos"], p["queue_depth"])
        self.out = Outputs(self, {"loop_closures": LOOP_CLOSURES, "geolocation": NAVSATFIX})
        self.frames = frame_queue(self, self.on_image, p["queue_depth"], self.diag, admit=self._admit)
        self.sub = subscribe(self, "sensor_msgs/msg/Image", "image", self.frames.push, qos)
        self.info_sub = subscribe(self, "sensor_msgs/msg/CameraInfo", "camera_info", self.on_camera_info, qos)
        self._first_info = threading.Event()
        self.gps_sub = subscribe(self, "sensor_msgs/msg/NavSatFix", "gps/fix",
                                 lambda m: self.stage.add_gps(gps_from_msg(m)), qos)
        self.save_timer = self.create_timer(p["save_every_s"], self.save_database) if p["save_every_s"] > 0 else None
        self._saved_size = len(self.stage.detector.db)
        self.get_logger().info(f"place recognition with {recognizer.label}, {self._saved_size} keyframes in the map")

    def on_camera_info(self, msg: Any) -> None:
        self.stage.set_camera_info(camera_info_from_msg(msg))
        self._first_info.set()

    def _admit(self, msg: Any) -> bool:
        """Whether a frame is queued: a malformed one is not (checked without decoding, counted once as
        bad_image); with time-only keyframes, neither are the frames between keyframes."""
        try:
            check_image_message(msg)
        except ImageEncodingError as exc:
            self.diag.bad("image")
            self.get_logger().warning(f"image skipped: {exc}", throttle_duration_sec=5.0)
            return False
        return self.stage.admit(stamp_ns(msg.header.stamp))

    def on_image(self, msg: Any) -> None:
        t0 = time.perf_counter()
        if not self._first_info.is_set():  # the first keyframe's camera info is usually just behind it
            self._first_info.wait(FIRST_CAMERA_INFO_WAIT_S)
            self._first_info.set()
        try:
            frame = frame_from_msg(msg)
        except ImageEncodingError as exc:
            self.stage.skip()
            self.diag.bad("image")
            self.get_logger().warning(f"image skipped: {exc}", throttle_duration_sec=5.0)
            return
        if self.camera_pose.update(frame.frame_id):
            try:
                self.stage.set_camera_pose(self.camera_pose.T)
            except ConfigError as exc:  # /tf_static puts the camera at or below base_link: keep the last mounting
                self.get_logger().error(f"loop_scale ground: {exc}; keeping the last camera pose")
        out = self.stage.process(frame)
        if out is not None:
            self.out.publish(place_msgs(out))
            observe(self, "loop_closure", frame.stamp_ns, frame, out.result, t0)
            if self.stage.geo_errors_m:
                self.diag.static["geolocation_error_m_p50"] = f"{float(np.median(self.stage.geo_errors_m)):.2f}"
        now = self.get_clock().now().nanoseconds
        self.diag.processed((time.perf_counter() - t0) * 1e3, (now - frame.stamp_ns) / 1e6 if now else None)

    # ------------------------------------------------------------------ map files
    def save_database(self) -> Path | None:
        """Write the database to ``database_path`` (when set and changed since the last save)."""
        path = self.stage.database_path
        size = len(self.stage.detector.db)
        if path is None or size == self._saved_size and (path / "database.json").is_file():
            return None
        try:
            folder = self.stage.save()
        except OSError as exc:
            self.get_logger().error(f"cannot save the keyframe database to {path}: {exc}")
            return None
        self._saved_size = size
        self.get_logger().info(f"saved {size} keyframes to {folder}")
        return folder

    def destroy_node(self) -> None:
        self.close_frames()  # no frame is added to the database while or after it is saved
        self.save_database()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return spin_node(PlaceRecognitionNode, "place_recognition_node", args)


if __name__ == "__main__":
    sys.exit(main())
