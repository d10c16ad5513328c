"""Warnings that may repeat on every message, logged at most once per period and key."""

from __future__ import annotations

import logging
import threading
import time

_last: dict[tuple[str, str], float] = {}
_lock = threading.Lock()


def throttled(logger: logging.Logger, key: str, message: str, period_s: float = 5.0,
              level: int = logging.WARNING) -> None:
    """Log ``message`` unless the same ``key`` was logged by ``logger`` less than ``period_s`` ago."""
    now = time.monotonic()
    with _lock:
        last = _last.get((logger.name, key))
        if last is not None and now - last < period_s:
            return
        _last[(logger.name, key)] = now
    logger.log(level, message)
