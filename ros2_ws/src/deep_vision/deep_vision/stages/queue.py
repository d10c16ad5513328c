"""Frames in, processed in order on a worker thread; what the worker cannot keep up with is dropped and counted.

The nodes put one in front of each image stage (the subscription callback
returns at once) and so does the realtime evaluation, so both lose the same
frames for the same reasons.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from typing import Any


class FrameQueue:
    """A deque of ``depth`` waiting frames in front of ``handler``, run on a worker thread.

    ``push`` never blocks: it calls ``on_arrival`` (e.g. to count the frame),
    asks ``admit`` (optional) whether the frame is worth queueing at all (the
    place stage: only frames that will be keyframes; a refused frame is not a
    drop), and appends it; when the deque is full, the oldest waiting frame is
    dropped and counted (``counters["dropped_frames"]``), as a live camera loses
    frames a node cannot keep up with. An exception in ``handler`` is counted
    (``errors``), given to ``on_error`` and the worker goes on with the next frame.
    """

    def __init__(self, name: str, handler: Callable[[Any], None], depth: int, counters: Counter[str] | None = None,
                 *, admit: Callable[[Any], bool] | None = None, on_arrival: Callable[[], None] | None = None,
                 on_error: Callable[[Exception], None] | None = None) -> None:
        self.handler, self.admit, self.on_arrival, self.on_error = handler, admit, on_arrival, on_error
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.queue: deque[Any] = deque(maxlen=max(1, int(depth)))
        self.cond = threading.Condition()
        self.closed = False
        self.busy = False
        self.thread = threading.Thread(target=self._run, name=f"{name}-frames", daemon=True)
        self.thread.start()

    def push(self, item: Any) -> None:
        if self.on_arrival is not None:
            self.on_arrival()
        if self.admit is not None and not self.admit(item):
            return
        with self.cond:
            if len(self.queue) == self.queue.maxlen:
                self.counters["dropped_frames"] += 1
            self.queue.append(item)
            self.cond.notify()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.closed:
                    self.cond.wait()
                if self.closed:
                    return
                item = self.queue.popleft()
                self.busy = True
            try:
                self.handler(item)
            except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the stream
                self.counters["errors"] += 1
                if self.on_error is not None:
                    self.on_error(exc)
            finally:
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()

    def idle(self) -> bool:
        with self.cond:
            return not self.queue and not self.busy

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued frame is processed; True when it was."""
        with self.cond:
            return self.cond.wait_for(lambda: not self.queue and not self.busy, timeout_s)

    def close(self) -> None:
        """Stop the worker (frames still waiting are not processed)."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.thread.join(timeout=10.0)
