"""The homography node's stage: pairs consecutive frames and estimates the homography between them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from deep_vision.stages.inputs import Frame


@dataclass(frozen=True)
class HomographyOut:
    stamp_ns: int  # the current frame
    source_stamp_ns: int  # the previous frame
    frame_id: str
    matrix: np.ndarray  # [3 x 3]: previous-frame pixels -> current-frame pixels, full resolution
    corner_uncertainty_px: float
    valid: bool
    result: Any = None  # the estimator's HomographyResult (timings, passes)
    image_size: tuple[int, int] = (0, 0)  # (width, height) of both frames


class HomographyStage:
    """Frame pairing (a time jump backwards, a size change or a gap over ``max_gap_s`` restarts it) and the
    estimator. ``counters``: ``reset_<reason>``, ``invalid_estimates``."""

    def __init__(self, estimator: Any, pairer: Any) -> None:
        self.estimator, self.pairer = estimator, pairer
        self.counters: Counter[str] = Counter()

    @classmethod
    def from_params(cls, p: dict[str, Any], node: str = "homography_node") -> HomographyStage:
        """From homography_node's parameters; a missing or broken model raises ConfigError naming the parameter."""
        from deep_vision.pipeline.build import build_homography

        return cls(*build_homography(p, node))

    @property
    def backend(self) -> Any:
        return self.estimator.backend

    def process(self, frame: Frame) -> HomographyOut | None:
        """The homography from the previous frame to ``frame``; None when no pair is formed."""
        pair = self.pairer.push(frame.grey, frame.stamp_ns)
        for reason, n in self.pairer.resets.items():
            self.counters[f"reset_{reason}"] = n
        if pair is None:
            return None
        r = self.estimator.estimate(pair.prev, pair.curr)
        if not r.valid:
            self.counters["invalid_estimates"] += 1
        return HomographyOut(frame.stamp_ns, pair.prev_stamp_ns, frame.frame_id, np.asarray(r.matrix, float),
                             float(r.corner_uncertainty_px), bool(r.valid), r, frame.size)
