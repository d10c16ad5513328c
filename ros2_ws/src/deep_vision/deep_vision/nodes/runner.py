"""Run the nodes in one process (no ``ros2 launch`` needed) and play bags with rclpy (no ``ros2 bag``).

``deep-vision run --params config/perception.yaml [--nodes ...] [--bag BAG]`` starts the
node classes of :mod:`deep_vision.nodes.registry` with the parameter file's values
(the same file and node list as ``launch/perception.launch.py``) in one
multi-threaded executor; with ``--bag`` a :class:`BagPlayer` feeds them.
``deep-vision play BAG`` only plays.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from deep_vision.errors import BagError, ConfigError, DeepVisionError
from deep_vision.nodes.registry import DEFAULT_NODES, NODES, node_overrides, remappings
from deep_vision.params import load_params
from deep_vision.stages.odometry import OdometryStage
from deep_vision.stages.messages import TOPICS

logger = logging.getLogger(__name__)

#: What the nodes publish (topic -> type), from the module that builds every message.
OUTPUT_TOPICS = {t: m for t, m in TOPICS.items() if not t.startswith("/")}


def start_nodes(context: Any, keys: Sequence[str], params_file: str | Path, *, use_sim_time: bool = False,
                backend: str | None = None, image_topic: str = "/camera/image_raw",
                camera_info_topic: str = "/camera/camera_info", topics: dict[str, str] | None = None,
                namespace: str = "") -> list[Node]:
    """Instantiate the registered nodes ``keys`` with their parameters from ``params_file``, each given only the
    overrides it declares and the remapping of its own inputs (``topics``: targets by INPUT_TOPICS key), as the
    launch file does."""
    params = load_params(params_file)
    unknown = sorted(set(keys) - set(NODES))
    if unknown:
        raise ConfigError(f"--nodes: unknown {unknown}; known: {', '.join(NODES)}")
    targets = {"image": image_topic, "camera_info": camera_info_topic, **(topics or {})}
    overrides = {"use_sim_time": use_sim_time, **({"backend": backend} if backend else {})}
    nodes = []
    for key in keys:
        entry = NODES[key]
        values = {**params.get(entry.name, {}), **node_overrides(entry, overrides)}
        remap = ["--ros-args"]
        for topic, target in remappings(entry, targets):
            remap += ["-r", f"{topic}:={target}"]
        nodes.append(entry.load()(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
                                  cli_args=remap, namespace=namespace))
    return nodes


class BagPlayer(Node):
    """Publishes a bag's messages at their recorded pace (× ``rate``), optionally with ``/clock``."""

    def __init__(self, bag: str | Path, *, rate: float = 1.0, clock: bool = False, loop: bool = False,
                 topics: Sequence[str] | None = None, start_delay_s: float = 1.0,
                 expected_subscribed: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__("deep_vision_player", **kwargs)
        from deep_vision.io.bagfile import BagReader
        from deep_vision.nodes.bridge import rclpy_type

        self.reader = BagReader(bag)  # checked: one BagError line for a missing, empty, truncated, ... bag
        self.bag = self.reader.path
        if rate <= 0:
            raise ConfigError(f"--rate must be positive, got {rate}")
        self.rate, self.loop, self.clock = rate, loop, clock
        self.expected_subscribed = set(expected_subscribed)  # topics to wait for a subscriber on before playing
        self.publishers_: dict[str, Any] = {}
        for topic, msgtype in self.reader.topics.items():
            if topics is not None and topic not in topics:
                continue
            try:
                msg_cls = rclpy_type(msgtype)
            except DeepVisionError as exc:
                self.get_logger().warning(f"not playing {topic}: {exc}")
                continue
            latched = topic == "/tf_static"
            qos = QoSProfile(depth=100 if not latched else 1,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
                             reliability=ReliabilityPolicy.RELIABLE)
            self.publishers_[topic] = (self.create_publisher(msg_cls, topic, qos), msgtype)
        if clock:
            from rosgraph_msgs.msg import Clock

            self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.sent: Counter[str] = Counter()
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, args=(start_delay_s,), daemon=True)
        self._thread.start()

    def _play(self, delay: float) -> None:
        # Let discovery match the subscribers (nodes, output counter) before the first message:
        # wait until every topic someone subscribes to is matched, at least ``delay`` seconds.
        deadline = time.monotonic() + max(delay, 0.0) + 5.0
        t_start = time.monotonic()
        while time.monotonic() < deadline:
            matched = all(pub.get_subscription_count() > 0 for topic, (pub, _) in self.publishers_.items()
                          if topic in self.expected_subscribed)
            if matched and time.monotonic() - t_start >= delay:
                break
            time.sleep(0.05)
        try:
            while rclpy.ok(context=self.context):
                t_wall0 = time.monotonic()
                t_bag0 = None
                for topic, _, t_ns, raw in self.reader.messages(list(self.publishers_)):
                    if self._stop.is_set() or not rclpy.ok(context=self.context):
                        return
                    t_bag0 = t_ns if t_bag0 is None else t_bag0
                    wait = (t_ns - t_bag0) / 1e9 / self.rate - (time.monotonic() - t_wall0)
                    if wait > 0 and self._stop.wait(wait):
                        return
                    if self.clock:
                        from rosgraph_msgs.msg import Clock

                        c = Clock()
                        c.clock.sec, c.clock.nanosec = divmod(int(t_ns), 1_000_000_000)
                        self.clock_pub.publish(c)
                    self.publishers_[topic][0].publish(bytes(raw))  # the recorded CDR bytes, as ros2 bag play
                    self.sent[topic] += 1
                if not self.loop or self._stop.is_set():
                    break
        finally:
            if self.reader.damaged_messages:
                self.get_logger().warning(f"{self.bag}: {self.reader.damaged_messages} message(s) in damaged chunks "
                                          "were not played")
            self.done.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop playing and wait for the player thread (before the node is destroyed)."""
        self._stop.set()
        self._thread.join(timeout_s)


class OutputRecorder(Node):
    """Counts what the nodes publish on their output topics and ``/tf`` (for the run summary) and, with
    ``record``, keeps every message as received (CDR bytes) to write a bag, with the ``/tf_static`` played."""

    def __init__(self, namespace: str = "", record: bool = False, **kwargs: Any) -> None:
        super().__init__("deep_vision_output_recorder", namespace=namespace, **kwargs)
        from deep_vision.nodes.bridge import rclpy_type
        from deep_vision.nodes.common import TF_QOS

        self.counts: Counter[str] = Counter()
        self.record = record
        self.messages: list[tuple[str, str, int, bytes]] = []
        self._lock = threading.Lock()
        topics = dict(TOPICS)
        qos = {"/tf": TF_QOS}
        if record:
            topics["/tf_static"] = "tf2_msgs/msg/TFMessage"
            qos["/tf_static"] = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                           reliability=ReliabilityPolicy.RELIABLE)
        for topic, msgtype in topics.items():
            try:
                cls = rclpy_type(msgtype)
            except DeepVisionError:  # tf2_msgs missing: the nodes publish no /tf either
                continue
            self.create_subscription(cls, topic, lambda raw, t=topic, m=msgtype: self._on(t, m, raw),
                                     qos.get(topic, 100), raw=True)

    def _on(self, topic: str, msgtype: str, raw: bytes) -> None:
        name = topic.lstrip("/") if topic not in ("/tf", "/tf_static") else topic
        with self._lock:
            self.counts[name] += 1
            if self.record:
                self.messages.append((name if name.startswith("/") else self.resolve_topic_name(name), msgtype,
                                      self.get_clock().now().nanoseconds, bytes(raw)))

    def write(self, path: str | Path) -> Path:
        """The recorded messages as a rosbag2 (mcap), at their arrival times."""
        from deep_vision.io.bag import QOS_LATCHED, BagWriter

        with self._lock, BagWriter(path) as bag:
            for topic, msgtype, t, raw in self.messages:
                bag.write_raw(topic, msgtype, t, raw, qos=QOS_LATCHED if topic == "/tf_static" else None)
        return Path(path)


def run(params_file: str | Path, keys: Sequence[str] = DEFAULT_NODES, *, bag: str | Path | None = None,
        rate: float = 1.0, use_sim_time: bool = False, backend: str | None = None,
        image_topic: str = "/camera/image_raw", camera_info_topic: str = "/camera/camera_info",
        drain_s: float = 3.0, duration_s: float | None = None, record: str | Path | None = None,
        topics: dict[str, str] | None = None, viewer: Any = None) -> dict[str, Any]:
    """Start ``keys`` (and play ``bag``); returns message counts when the bag ends (or on Ctrl-C / duration).

    ``record``: write what the nodes published (and the played ``/tf_static``) to this rosbag2 folder.
    ``topics``: input remappings by :data:`~deep_vision.nodes.registry.INPUT_TOPICS` key.
    ``viewer``: a :class:`~deep_vision.viz.recorder.RunRecorder` the nodes hand their stage outputs to.
    """
    if record is not None and Path(record).exists():
        raise BagError(f"--record: {record} already exists (remove it or choose another folder)")
    load_params(params_file)  # a bad parameter file or bag fails here, before any node or model is loaded
    if bag is not None:
        from deep_vision.io.bagfile import check_bag

        check_bag(bag)
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    nodes: list[Node] = []
    player = None
    try:
        nodes = start_nodes(context, keys, params_file, use_sim_time=use_sim_time, backend=backend,
                            image_topic=image_topic, camera_info_topic=camera_info_topic, topics=topics)
        if viewer is not None:
            for n in nodes:
                n.observer = viewer.submit
            vo = next((n.stage for n in nodes if isinstance(getattr(n, "stage", None), OdometryStage)), None)
            if bag is not None and vo is not None:
                viewer.ground_truth_from(bag, lambda: vo.T_base_camera)  # the bag's, when it has one
        counter = OutputRecorder(context=context, record=record is not None)
        nodes.append(counter)
        if bag is not None:
            player = BagPlayer(bag, rate=rate, clock=use_sim_time, context=context,
                               expected_subscribed=[image_topic])
            nodes.append(player)
        for n in nodes:
            executor.add_node(n)
        t0 = time.monotonic()
        while rclpy.ok(context=context):
            executor.spin_once(timeout_sec=0.1)
            if player is not None and player.done.is_set():
                # Let the nodes finish their queues: until every frame queue is idle and no output came for a
                # second, at most drain_s.
                end = time.monotonic() + drain_s
                last, quiet_since = -1, time.monotonic()
                queues = [n.frames for n in nodes if getattr(n, "frames", None) is not None]
                while time.monotonic() < end and (time.monotonic() - quiet_since < 1.0
                                                  or not all(q.idle() for q in queues)):
                    executor.spin_once(timeout_sec=0.05)
                    total = sum(counter.counts.values())
                    if total != last:
                        last, quiet_since = total, time.monotonic()
                break
            if duration_s is not None and time.monotonic() - t0 > duration_s:
                break
        summary = {"played": dict(player.sent) if player else {}, "published": dict(counter.counts)}
        if record is not None:
            summary["recorded"] = str(counter.write(record))
        return summary
    except (KeyboardInterrupt, ExternalShutdownException):
        return {"played": dict(player.sent) if player else {}, "published": {}}
    finally:
        if player is not None:
            player.stop()
        for n in nodes:
            executor.remove_node(n)
            n.destroy_node()
        executor.shutdown()
        if context.ok():
            rclpy.shutdown(context=context)


def play(bag: str | Path, rate: float = 1.0, clock: bool = False, loop: bool = False,
         topics: Sequence[str] | None = None) -> dict[str, int]:
    """Play ``bag`` until it ends (or forever with ``loop``); returns messages sent per topic."""
    context = rclpy.Context()
    rclpy.init(context=context)
    player = BagPlayer(bag, rate=rate, clock=clock, loop=loop, topics=topics, context=context)
    executor = MultiThreadedExecutor(context=context)
    executor.add_node(player)
    try:
        while rclpy.ok(context=context) and not player.done.is_set():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        player.stop()
        sent = dict(player.sent)
        player.destroy_node()
        executor.shutdown()
        if context.ok():
            rclpy.shutdown(context=context)
    return sent
