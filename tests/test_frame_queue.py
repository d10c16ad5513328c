"""FrameQueue: the image callback never blocks; frames a node cannot keep up with are dropped and counted."""

from __future__ import annotations

import threading
import time
from collections import Counter

from conftest import require_ros


class _Logger:
    def __init__(self):
        self.errors = []

    def error(self, text, **_):
        self.errors.append(text)


class _Node:
    def __init__(self):
        self.logger = _Logger()

    def get_name(self):
        return "test_node"

    def get_logger(self):
        return self.logger


class _Diag:
    def __init__(self):
        self.counters = Counter()


def test_slow_handler_drops_oldest_frames_and_keeps_order():
    require_ros()
    from deep_vision.nodes.common import FrameQueue

    seen, release = [], threading.Event()

    def handler(msg):
        release.wait(5.0)
        seen.append(msg)

    diag = _Diag()
    q = FrameQueue(_Node(), handler, depth=2, diag=diag)
    q.push(0)
    deadline = time.monotonic() + 5.0
    while not q.busy and time.monotonic() < deadline:  # the worker holds frame 0 ...
        time.sleep(0.001)
    t0 = time.perf_counter()
    for i in range(1, 10):  # ... so frames 1..7 are pushed out by newer ones
        q.push(i)
    assert time.perf_counter() - t0 < 0.5  # pushing never waits for the handler
    release.set()
    deadline = time.monotonic() + 5.0
    while not q.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    q.close()
    assert seen == [0, 8, 9]
    assert diag.counters["dropped_frames"] == 7


def test_handler_exception_is_counted_and_the_worker_goes_on():
    require_ros()
    from deep_vision.nodes.common import FrameQueue

    seen = []

    def handler(msg):
        if msg == 1:
            raise ValueError("broken frame")
        seen.append(msg)

    node, diag = _Node(), _Diag()
    q = FrameQueue(node, handler, depth=10, diag=diag)
    for i in range(3):
        q.push(i)
    deadline = time.monotonic() + 5.0
    while not q.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    q.close()
    assert seen == [0, 2] and diag.counters["errors"] == 1
    assert "broken frame" in node.logger.errors[0]
