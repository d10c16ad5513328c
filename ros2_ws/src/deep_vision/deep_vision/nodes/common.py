"""Helpers every node uses: declared parameters, QoS from parameters, diagnostics at 1 Hz.

Keeps the node classes thin: a node lists its parameters as :class:`Param`
(typed default, description, range), builds its estimator from their values
and converts messages; everything else lives here.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.qos import QoSReliabilityPolicy as Reliability

from deep_vision.errors import ConfigError
from deep_vision.inference.selection import BACKENDS


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None


def declare(node: Node, params: list[Param]) -> dict[str, Any]:
    """Declare ``params`` on ``node`` and return their values; a bad value fails naming node and parameter."""
    values: dict[str, Any] = {}
    for p in params:
        desc = ParameterDescriptor(description=p.description + (f" One of: {', '.join(p.choices)}." if p.choices else ""))
        if p.range is not None and isinstance(p.default, bool) is False:
            if isinstance(p.default, int):
                desc.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=1)]
            elif isinstance(p.default, float):
                desc.floating_point_range = [FloatingPointRange(from_value=float(p.range[0]), to_value=float(p.range[1]),
                                                                step=0.0)]
        try:
            value = node.declare_parameter(p.name, p.default, desc).value
        except Exception as exc:  # rclpy raises several types for out-of-range/wrong-type overrides
            raise ConfigError(f"{node.get_name()}: parameter {p.name!r}: {exc}") from exc
        if p.choices is not None and value not in p.choices:
            raise ConfigError(f"{node.get_name()}: parameter {p.name!r} must be one of {', '.join(p.choices)}, got {value!r}")
        values[p.name] = value
    return values


QOS_PARAMS = [
    Param("image_qos", "sensor_data", "QoS of the image subscription: sensor_data (best effort, the camera driver "
          "default) or reliable.", choices=("sensor_data", "reliable")),
    Param("queue_depth", 5, "Depth of the image subscription queue.", range=(1, 100)),
]


# Every node that runs a network: which backend, how many CPU threads.
INFERENCE_PARAMS = [
    Param("backend", "auto", "Inference backend.", choices=BACKENDS),
    Param("threads", 0, "CPU threads for inference (0: the library default).", range=(0, 64)),
]


def image_qos(kind: str, depth: int) -> QoSProfile:
    """SensorData (best effort) or reliable, with ``depth``. A best-effort subscription also
    receives from reliable publishers; a reliable one only from reliable publishers."""
    profile = QoSProfile(depth=depth, reliability=qos_profile_sensor_data.reliability,
                         durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)
    if kind == "reliable":
        profile.reliability = Reliability.RELIABLE
    return profile


def stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def backend_diagnostics(backend: Any) -> dict[str, str]:
    """What /diagnostics says about a node's network: backend, precision and the model's sha256 (from its card)."""
    if backend is None:
        return {"backend": "none", "precision": "none", "model_sha256": "none"}
    sha = "unknown"
    try:
        from pathlib import Path

        from deep_vision.inference.modelcard import ModelCard, card_path_for

        card = card_path_for(Path(getattr(backend, "model_path", "")))
        if card.is_file():
            sha = ModelCard.load(card).sha256
    except Exception:  # noqa: BLE001 - diagnostics only: never fail a node for them
        pass
    return {"backend": getattr(backend, "label", str(backend)), "precision": getattr(backend, "precision", "?"),
            "model_sha256": sha}


class NodeDiagnostics:
    """Counters and latency of one node, published as ``diagnostic_msgs/DiagnosticArray`` at 1 Hz."""

    def __init__(self, node: Node, name: str, static: dict[str, str] | None = None, period_s: float = 1.0) -> None:
        self.node = node
        self.name = name
        self.static = dict(static or {})
        self.counters: Counter[str] = Counter()
        self.latencies_ms: deque[float] = deque(maxlen=200)
        self.ages_ms: deque[float] = deque(maxlen=200)
        self.arrivals: deque[float] = deque(maxlen=50)
        self.pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.timer = node.create_timer(period_s, self.publish)

    def frame_in(self) -> None:
        self.counters["frames_in"] += 1
        self.arrivals.append(time.monotonic())

    def bad(self, reason: str) -> None:
        self.counters["bad_frames"] += 1
        self.counters[f"bad_{reason}"] += 1

    def processed(self, latency_ms: float, age_ms: float | None = None) -> None:
        self.counters["frames_out"] += 1
        self.latencies_ms.append(latency_ms)
        if age_ms is not None:
            self.ages_ms.append(age_ms)

    def values(self) -> dict[str, str]:
        def pct(data: deque[float], q: float) -> str:
            return f"{np.percentile(list(data), q):.2f}" if data else "nan"

        rate = 0.0
        if len(self.arrivals) >= 2:
            span = self.arrivals[-1] - self.arrivals[0]
            rate = (len(self.arrivals) - 1) / span if span > 0 else 0.0
        out = {"input_rate_hz": f"{rate:.2f}", "latency_ms_p50": pct(self.latencies_ms, 50),
               "latency_ms_p95": pct(self.latencies_ms, 95), "age_ms_p50": pct(self.ages_ms, 50)}
        out.update({k: str(v) for k, v in sorted(self.counters.items())})
        out.update(self.static)
        return out

    def publish(self) -> None:
        status = DiagnosticStatus(name=f"{self.node.get_name()}: {self.name}", hardware_id=self.static.get("backend", ""))
        bad = self.counters["bad_frames"]
        status.level = DiagnosticStatus.WARN if bad else DiagnosticStatus.OK
        status.message = f"{bad} bad frame(s)" if bad else "ok"
        status.values = [KeyValue(key=k, value=v) for k, v in self.values().items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pub.publish(msg)


def spin_node(node_cls: type[Node], name: str, args: list[str] | None = None) -> int:
    """``main()`` of a node executable: init, build (a bad parameter exits 1 with one line), spin, shut down."""
    import rclpy

    rclpy.init(args=args)
    try:
        node = node_cls()
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
