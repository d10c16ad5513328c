"""Stream bookkeeping shared by the estimators: consecutive-frame pairing with resets.

A pair is only formed from two frames of the same size with increasing stamps.
A time jump backwards (a bag looped, a simulator reset) or a resolution change
drops the previous frame, counts the reason and starts over with the new one.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class Pair:
    prev: np.ndarray
    prev_stamp_ns: int
    curr: np.ndarray
    curr_stamp_ns: int


class FramePairer:
    """Turn a stream of (image, stamp) into consecutive pairs; counts resets by reason."""

    def __init__(self, max_gap_s: float = 0.0) -> None:
        self.max_gap_ns = int(max_gap_s * 1e9)  # 0: any gap is fine
        self._prev: tuple[np.ndarray, int] | None = None
        self.resets: Counter[str] = Counter()

    def reset(self, reason: str = "requested") -> None:
        if self._prev is not None:
            self.resets[reason] += 1
        self._prev = None

    def push(self, image: np.ndarray, stamp_ns: int) -> Pair | None:
        """Add a frame; returns the pair (previous, this) when one is formed."""
        pair = None
        if self._prev is not None:
            prev, prev_stamp = self._prev
            if stamp_ns <= prev_stamp:
                self.resets["time_backwards" if stamp_ns < prev_stamp else "repeated_stamp"] += 1
                logger.warning("frame stamp %d ns is not after the previous %d ns: pairing restarts", stamp_ns, prev_stamp)
            elif image.shape != prev.shape:
                self.resets["size_change"] += 1
                logger.warning("frame size changed from %s to %s: pairing restarts", prev.shape[::-1], image.shape[::-1])
            elif self.max_gap_ns and stamp_ns - prev_stamp > self.max_gap_ns:
                self.resets["gap"] += 1
                logger.warning("%.2f s since the previous frame: pairing restarts", (stamp_ns - prev_stamp) / 1e9)
            else:
                pair = Pair(prev, prev_stamp, image, stamp_ns)
        self._prev = (image, stamp_ns)
        return pair
