"""Run nodes in-process for tests: publish inputs, collect outputs, wait with timeouts.

Example::

    with NodeHarness() as h:
        node = h.add_node(lambda **kw: MyNode(**kw))   # the node gets the harness's context
        out = h.collect("homography", Homography)
        pub = h.publisher("image", Image)
        h.wait_for_subscribers(pub)
        pub.publish(msg)
        msgs = h.wait_for(out, count=1, timeout=5.0)

Each harness owns its own rclpy Context and executor, so tests do not share
ROS state and a failing test cannot leave a node spinning.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile

from deep_vision.nodes.bridge import cdr_to_rclpy


class Collector(list):
    """Messages received on one topic, in arrival order."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        self.topic = topic


class NodeHarness:
    def __init__(self, name: str = "deep_vision_test_harness") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor.add_node(self.node)
        self._nodes: list[Node] = []

    def __enter__(self) -> "NodeHarness":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def add_node(self, factory: Callable[..., Node], **kwargs: Any) -> Node:
        """Create a node under test with ``factory(context=..., **kwargs)`` and spin it with the harness."""
        node = factory(context=self.context, **kwargs)
        self.executor.add_node(node)
        self._nodes.append(node)
        return node

    def publisher(self, topic: str, msg_type: Any, qos: QoSProfile | int = 10) -> Any:
        return self.node.create_publisher(msg_type, topic, qos)

    def collect(self, topic: str, msg_type: Any, qos: QoSProfile | int = 10) -> Collector:
        """Start collecting every message published on ``topic``."""
        out = Collector(topic)
        self.node.create_subscription(msg_type, topic, out.append, qos)
        return out

    def spin_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Spin the executor until ``predicate()`` is true or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def wait_for(self, collector: Collector, count: int = 1, timeout: float = 10.0) -> Collector:
        """Spin until ``collector`` holds ``count`` messages; raises TimeoutError naming the topic."""
        if not self.spin_until(lambda: len(collector) >= count, timeout):
            raise TimeoutError(f"got {len(collector)} of {count} message(s) on {collector.topic!r} in {timeout:.1f} s")
        return collector

    def wait_for_subscribers(self, publisher: Any, count: int = 1, timeout: float = 10.0) -> None:
        """Spin until ``publisher`` is matched by ``count`` subscriptions (DDS discovery)."""
        if not self.spin_until(lambda: publisher.get_subscription_count() >= count, timeout):
            raise TimeoutError(f"no subscriber matched {publisher.topic_name!r} in {timeout:.1f} s")

    def publish_bag(
        self,
        bag: str | Path,
        topics: dict[str, str] | Iterable[str],
        qos: QoSProfile | int = 10,
        limit: int | None = None,
        between: Callable[[], None] | None = None,
    ) -> int:
        """Publish messages of a rosbag2 in log order; returns how many were published.

        Args:
            topics: bag topic → topic to publish on (or an iterable of topics kept as they are).
            limit: stop after this many messages.
            between: called after each message (e.g. to spin until an output arrives).
        """
        from rosbags.rosbag2 import Reader

        mapping = dict(topics) if isinstance(topics, dict) else {t: t for t in topics}
        publishers: dict[str, Any] = {}
        sent = 0
        with Reader(Path(bag)) as reader:
            conns = [c for c in reader.connections if c.topic in mapping]
            for conn, _, raw in reader.messages(connections=conns):
                msg = cdr_to_rclpy(raw, conn.msgtype)
                if conn.topic not in publishers:
                    publishers[conn.topic] = self.publisher(mapping[conn.topic], type(msg), qos)
                    self.spin_for(0.05)
                publishers[conn.topic].publish(msg)
                sent += 1
                if between is not None:
                    between()
                else:
                    self.executor.spin_once(timeout_sec=0.0)
                if limit is not None and sent >= limit:
                    break
        return sent

    def shutdown(self) -> None:
        for node in self._nodes + [self.node]:
            try:
                self.executor.remove_node(node)
                node.destroy_node()
            except Exception:  # noqa: BLE001 - best effort during teardown
                pass
        self._nodes.clear()
        self.executor.shutdown()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
