"""``homography_node``: publishes the homography between consecutive camera frames.

Subscribes ``image`` (sensor_msgs/Image); publishes ``homography``
(deep_vision_msgs/Homography: current frame's header, previous frame's stamp,
H mapping previous-frame pixels into the current frame at full resolution) and
``/diagnostics``. A resolution change or a time jump backwards restarts the
pairing; undecodable images are counted and skipped.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from deep_vision.errors import ImageEncodingError
from deep_vision.nodes.common import (
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
from deep_vision.stages import HomographyStage
from deep_vision.stages.inputs import frame_from_msg
from deep_vision.stages.messages import HOMOGRAPHY, homography_msgs

PARAMS = SCHEMA["homography_node"]


class HomographyNode(ImageNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("homography_node", **kwargs)
        p = declare(self, PARAMS)
        self.stage = HomographyStage.from_params(p)  # raises ConfigError naming the parameter
        backend = self.stage.backend
        self.diag = NodeDiagnostics(self, "homography", {**backend_diagnostics(backend), "refine": str(p["refine"])},
                                    stage=self.stage)
        self.out = Outputs(self, {"homography": HOMOGRAPHY})
        self.frames = frame_queue(self, self.on_image, p["queue_depth"], self.diag)
        self.sub = subscribe(self, "sensor_msgs/msg/Image", "image", self.frames.push,
                             image_qos(p["image_qos"], p["queue_depth"]))
        self.get_logger().info(f"estimating homographies with {getattr(backend, 'describe', lambda: backend)()}")

    def on_image(self, msg: Any) -> None:
        t0 = time.perf_counter()
        try:
            frame = frame_from_msg(msg)
        except ImageEncodingError as exc:
            self.diag.bad("image")
            self.get_logger().warning(f"image skipped: {exc}", throttle_duration_sec=5.0)
            return
        out = self.stage.process(frame)
        if out is None:
            return
        self.out.publish(homography_msgs(out))
        observe(self, "homography", frame.stamp_ns, frame, out, t0)
        now = self.get_clock().now().nanoseconds
        self.diag.processed((time.perf_counter() - t0) * 1e3, (now - frame.stamp_ns) / 1e6 if now else None)


def main(args: list[str] | None = None) -> int:
    return spin_node(HomographyNode, "homography_node", args)


if __name__ == "__main__":
    sys.exit(main())
