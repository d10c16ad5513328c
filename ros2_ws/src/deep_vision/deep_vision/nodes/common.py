"""Helpers every node uses: declared parameters, QoS from parameters, diagnostics at 1 Hz, TF in and out.

Keeps the node classes thin: a node lists its parameters as :class:`Param`
(typed default, description, range), builds its estimator from their values
and converts messages; everything else lives here.
"""

from __future__ import annotations

import array
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from rclpy.qos import QoSReliabilityPolicy as Reliability

from deep_vision.errors import ConfigError, DeepVisionError
from deep_vision.geometry.transforms import make_transform, rotation_from_quaternion
from deep_vision.params import Param, check
from deep_vision.pipeline.build import camera_pose_transform
from deep_vision.stages.queue import FrameQueue


def _plain(value: Any) -> Any:
    """rclpy gives arrays as array.array; the schema's validator takes lists."""
    return list(value) if isinstance(value, array.array | tuple) else value


def declare(node: Node, params: list[Param]) -> dict[str, Any]:
    """Declare ``params`` on ``node`` and return their values. Every override (parameter file, launch, command
    line) is first checked by the schema's validator (:func:`deep_vision.params.check`): an unknown name, a
    wrong type or a value out of range fails naming ``node.parameter``, the value and what is expected."""
    name = node.get_name()
    for key, override in getattr(node, "_parameter_overrides", {}).items():
        if not key.startswith("qos_overrides."):
            check(name, key, _plain(override.value), "parameter ")
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
            raise ConfigError(f"parameter {name}.{p.name}: {exc}") from exc
        values[p.name] = check(name, p.name, _plain(value), "parameter ")
    return values


def image_qos(kind: str, depth: int) -> QoSProfile:
    """SensorData (best effort) or reliable, with ``depth``. A best-effort subscription also
    receives from reliable publishers; a reliable one only from reliable publishers."""
    profile = QoSProfile(depth=depth, reliability=qos_profile_sensor_data.reliability,
                         durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)
    if kind == "reliable":
        profile.reliability = Reliability.RELIABLE
    return profile


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


def _tf2_ros() -> Any:
    try:
        import tf2_ros
    except ImportError:
        return None
    return tf2_ros


def subscribe(node: Node, msgtype: str, topic: str, callback: Callable[[Any], None], qos: QoSProfile | int) -> Any:
    """Subscribe ``topic`` and call ``callback`` with each message deserialised by the package's typestore
    (the objects the stages' input functions read, as from a bag)."""
    from deep_vision.io.rosmsg import typestore
    from deep_vision.nodes.bridge import rclpy_type

    store = typestore()
    return node.create_subscription(rclpy_type(msgtype), topic,
                                    lambda raw: callback(store.deserialize_cdr(raw, msgtype)), qos, raw=True)


#: tf2_ros's broadcaster QoS
TF_QOS = QoSProfile(depth=100)


class Outputs:
    """Publishes what :mod:`deep_vision.stages.messages` builds: each message serialised once, published as
    bytes. ``/tf`` needs tf2_msgs (a system package, or built by the set-up): without it, no transforms
    (``tf`` says which)."""

    def __init__(self, node: Node, topics: dict[str, str], qos: QoSProfile | int = 10) -> None:
        from deep_vision.io.rosmsg import typestore
        from deep_vision.nodes.bridge import rclpy_type

        self.node = node
        self.store = typestore()
        self.pubs: dict[str, Any] = {}
        self.sent: Counter[str] = Counter()
        self.tf = "off"
        for topic, msgtype in topics.items():
            if topic == "/tf":
                try:
                    self.pubs[topic] = node.create_publisher(rclpy_type(msgtype), topic, TF_QOS)
                    self.tf = "tf2_msgs"
                except DeepVisionError:
                    self.tf = "none"
                    node.get_logger().warning("tf2_msgs is not available: no transforms on /tf")
                continue
            self.pubs[topic] = node.create_publisher(rclpy_type(msgtype), topic, qos)

    def publish(self, messages: list[tuple[str, str, Any]]) -> None:
        for topic, msgtype, msg in messages:
            pub = self.pubs.get(topic)
            if pub is not None:
                pub.publish(bytes(self.store.serialize_cdr(msg, msgtype)))
                self.sent[topic] += 1


class CameraPose:
    """``T_base_camera``: the ``camera_pose`` parameter until ``/tf_static`` has ``base_frame → camera frame``.

    Reads the parameters ``base_frame``, ``use_tf_static`` and ``camera_pose``
    (:data:`CAMERA_POSE_PARAMS`). With tf2_ros the look-up follows chains of
    frames; without it, the node subscribes ``/tf_static`` itself and takes a
    direct edge (:class:`~deep_vision.stages.inputs.StaticTransforms`, as the
    evaluation does with a bag's ``/tf_static``).
    """

    def __init__(self, node: Node, params: dict[str, Any]) -> None:
        self.T = camera_pose_transform(params["camera_pose"], node.get_name())
        self.from_tf = False
        self.node = node
        self.base_frame = params["base_frame"]
        self.buffer = self.static = None
        self.source = "parameter"
        if not params["use_tf_static"]:
            return
        tf2_ros = _tf2_ros()
        if tf2_ros is not None:
            self.buffer = tf2_ros.Buffer()
            self.listener = tf2_ros.TransformListener(self.buffer, node)
            self.source = "tf2_ros"
            return
        try:
            from deep_vision.io.rosmsg import StaticTransforms

            self.static = StaticTransforms()
            latched = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                 reliability=Reliability.RELIABLE)
            self.sub = subscribe(node, "tf2_msgs/msg/TFMessage", "/tf_static", self.static.add, latched)
            self.source = "/tf_static"
        except DeepVisionError:
            self.static = None
            node.get_logger().warning("neither tf2_ros nor tf2_msgs is available: the camera pose comes from the "
                                      "'camera_pose' parameter")

    def update(self, camera_frame: str) -> bool:
        """Take ``base_frame → camera_frame`` from /tf_static once it is there; True when ``T`` changed."""
        if self.from_tf or not camera_frame:
            return False
        T = None
        if self.buffer is not None:
            import rclpy.time

            try:
                tf = self.buffer.lookup_transform(self.base_frame, camera_frame, rclpy.time.Time())
            except Exception:  # noqa: BLE001 - tf2 raises several lookup exceptions; keep the parameter value
                return False
            t, q = tf.transform.translation, tf.transform.rotation
            T = make_transform(rotation_from_quaternion([q.x, q.y, q.z, q.w]), [t.x, t.y, t.z])
        elif self.static is not None:
            T = self.static.lookup(self.base_frame, camera_frame)
        if T is None:
            return False
        self.T = T
        self.from_tf = True
        self.node.get_logger().info(f"camera pose from /tf_static: {self.base_frame} -> {camera_frame}")
        return True


def _snapshot(counters: Counter[str]) -> Counter[str]:
    """A copy of counters another thread (the frame worker) may be adding keys to meanwhile."""
    for _ in range(10):
        try:
            return Counter(dict(counters))
        except RuntimeError:  # "dictionary changed size during iteration": take it again
            continue
    return Counter()


class NodeDiagnostics:
    """Counters and latency of one node, published as ``diagnostic_msgs/DiagnosticArray`` at 1 Hz."""

    def __init__(self, node: Node, name: str, static: dict[str, str] | None = None, period_s: float = 1.0,
                 stage: Any = None) -> None:
        self.node = node
        self.stage = stage  # its ``counters`` are published with the node's
        self.name = name
        self.static = dict(static or {})
        self.counters: Counter[str] = Counter()
        self.latencies_ms: deque[float] = deque(maxlen=200)
        self.ages_ms: deque[float] = deque(maxlen=200)
        self.arrivals: deque[float] = deque(maxlen=50)
        self.out = Outputs(node, {"/diagnostics": "diagnostic_msgs/msg/DiagnosticArray"})
        self.timer = node.create_timer(period_s, self.publish)

    def frame_in(self) -> None:
        self.counters["frames_in"] += 1
        self.arrivals.append(time.monotonic())

    def bad(self, reason: str) -> None:
        self.counters[f"bad_{reason}"] += 1

    def processed(self, latency_ms: float, age_ms: float | None = None) -> None:
        self.counters["frames_out"] += 1
        self.latencies_ms.append(latency_ms)
        if age_ms is not None:
            self.ages_ms.append(age_ms)

    def counts(self) -> Counter[str]:
        """The node's counters and its stage's; ``bad_frames`` sums every ``bad_*`` counter."""
        counters = _snapshot(self.counters)
        if self.stage is not None:
            counters.update(_snapshot(self.stage.counters))
        counters["bad_frames"] = sum(v for k, v in counters.items() if k.startswith("bad_") and k != "bad_frames")
        return counters

    def values(self) -> dict[str, str]:
        def pct(data: deque[float], q: float) -> str:
            return f"{np.percentile(list(data), q):.2f}" if data else "nan"

        rate = 0.0
        if len(self.arrivals) >= 2:
            span = self.arrivals[-1] - self.arrivals[0]
            rate = (len(self.arrivals) - 1) / span if span > 0 else 0.0
        out = {"input_rate_hz": f"{rate:.2f}", "latency_ms_p50": pct(self.latencies_ms, 50),
               "latency_ms_p95": pct(self.latencies_ms, 95), "age_ms_p50": pct(self.ages_ms, 50)}
        out.update({k: str(v) for k, v in sorted(self.counts().items())})
        out.update(self.static)
        return out

    def publish(self) -> None:
        from deep_vision.stages.messages import diagnostics_msgs

        self.out.publish(diagnostics_msgs(f"{self.node.get_name()}: {self.name}", self.static.get("backend", ""),
                                          self.values(), self.node.get_clock().now().nanoseconds))


def frame_queue(node: Node, handler: Callable[[Any], None], depth: int, diag: NodeDiagnostics,
                admit: Callable[[Any], bool] | None = None) -> FrameQueue:
    """The node's :class:`~deep_vision.stages.queue.FrameQueue`: arrivals and drops in ``diag``, a failed frame
    logged (at most every 5 s)."""
    return FrameQueue(node.get_name(), handler, depth, diag.counters, admit=admit, on_arrival=diag.frame_in,
                      on_error=lambda exc: node.get_logger().error(f"frame failed: {type(exc).__name__}: {exc}",
                                                                   throttle_duration_sec=5.0))


def observe(node: Node, stage: str, stamp_ns: int, frame: Any, out: Any, t0: float) -> None:
    """Hand a stage output to the node's viewer, when one is attached (``node.observer``: ``deep-vision run --view``
    / ``--record FILE.rrd`` sets :meth:`deep_vision.viz.recorder.RunRecorder.submit`, which never blocks)."""
    observer = getattr(node, "observer", None)
    if observer is not None and out is not None:
        observer(stage, stamp_ns, frame, out, (time.perf_counter() - t0) * 1e3)


class ImageNode(Node):
    """Base of the nodes that take camera frames: their :class:`FrameQueue` (``self.frames``) is
    stopped before the node is destroyed, so no frame is processed by a node that is gone."""

    frames: FrameQueue | None = None

    def close_frames(self) -> None:
        if self.frames is not None:
            self.frames.close()

    def destroy_node(self) -> None:
        self.close_frames()
        super().destroy_node()


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
