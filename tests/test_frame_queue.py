"""FrameQueue: the image callback never blocks; frames a node cannot keep up with are dropped and counted."""

from __future__ import annotations

import threading
import time
from collections import Counter

from deep_vision.stages.queue import FrameQueue


class _Diag:
    def __init__(self):
        self.counters = Counter()

    def frame_in(self):
        self.counters["frames_in"] += 1


def _push_while_busy(frames, **queue_kwargs):
    """Frame 0 holds the worker while ``frames`` arrive; returns (frames handled in order, diagnostics, push time)."""
    seen, release = [], threading.Event()

    def handler(msg):
        release.wait(5.0)
        seen.append(msg)

    diag = _Diag()
    q = FrameQueue("test", handler, counters=diag.counters, on_arrival=diag.frame_in, **queue_kwargs)
    q.push(0)
    deadline = time.monotonic() + 5.0
    while not q.busy and time.monotonic() < deadline:
        time.sleep(0.001)
    t0 = time.perf_counter()
    for i in frames:
        q.push(i)
    push_s = time.perf_counter() - t0
    release.set()
    deadline = time.monotonic() + 5.0
    while not q.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    q.close()
    return seen, diag, push_s


def test_slow_handler_drops_oldest_frames_and_keeps_order():
    seen, diag, push_s = _push_while_busy(range(1, 10), depth=2)  # frames 1..7 are pushed out by newer ones
    assert push_s < 0.5  # pushing never waits for the handler
    assert seen == [0, 8, 9]
    assert diag.counters["dropped_frames"] == 7 and diag.counters["frames_in"] == 10


def test_handler_exception_is_counted_and_the_worker_goes_on():
    seen, errors = [], []

    def handler(msg):
        if msg == 1:
            raise ValueError("broken frame")
        seen.append(msg)

    diag = _Diag()
    q = FrameQueue("test", handler, depth=10, counters=diag.counters, on_error=errors.append)
    for i in range(3):
        q.push(i)
    deadline = time.monotonic() + 5.0
    while not q.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    q.close()
    assert seen == [0, 2] and diag.counters["errors"] == 1
    assert "broken frame" in str(errors[0])


def test_frames_refused_on_arrival_are_neither_queued_nor_dropped():
    # Every fifth frame is admitted (a keyframe); the worker is held on frame 0 while 1..24 arrive.
    seen, diag, _ = _push_while_busy(range(1, 25), depth=5, admit=lambda msg: msg % 5 == 0)
    # Without the filter the 5-frame queue would have kept 20..24 only: the keyframes 5, 10, 15 would be lost.
    assert seen == [0, 5, 10, 15, 20]
    assert diag.counters["dropped_frames"] == 0 and diag.counters["frames_in"] == 25
