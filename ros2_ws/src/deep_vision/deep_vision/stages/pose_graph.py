"""The pose graph node's stage: odometry and verified loop closures → optimised keyframes, ``map → odom``.

- A loop closure whose query frame has no odometry yet waits in a queue of
  ``pending_loops`` until it has, and is dropped after ``pending_timeout_s`` of
  message time.
- A new odometry trajectory (a stamp not after the previous one, or an identity
  pose with zero covariance: how the odometry stage restarts) joins the graph
  as a new chain: the map is kept. The graph needs increasing stamps, so after
  a time jump backwards the stage shifts the new stamps past the old ones (one
  *epoch* per jump) and maps loop-closure stamps back (:class:`StampEpochs`).
- Loop closures come as any back end takes them: verified candidates with a
  metric T_query_match between base_link frames and its covariance (the
  message's); the others are counted (``loops_unverified``,
  ``loops_without_pose``, ``loops_not_metric``) and skipped.
- Non-finite odometry or loop closures, and odometry far out of range, are
  counted and skipped; a factor GTSAM refuses is counted
  (``rejected_factors_<kind>``) and the graph goes on.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from deep_vision.stages.inputs import LoopClosuresIn, OdometryIn
from deep_vision.stages.log import throttled

logger = logging.getLogger(__name__)

STAMP_TOLERANCE_NS = 1_000_000  # PoseGraph matches loop-closure stamps to odometry frames within 1 ms
EPOCH_GAP_NS = 1_000_000_000
# Odometry beyond these is counted as bad: the graph moves covariances by adjoints of the poses, which
# overflows on far larger values (1e300, or 1e40 at 1e8 m) and leaves GTSAM's estimate NaN for good
# (bench/results/fuzz-2026-12-06).
MAX_POSITION_M = 1e8  # beyond any Earth-bound odometry frame (UTM northings reach 1e7 m)
MAX_COVARIANCE = 1e12  # m², rad²: a standard deviation of 1e6


@dataclass
class _Epoch:
    offset: int  # graph stamp = message stamp + offset
    first: int  # message stamps covered
    last: int


class StampEpochs:
    """Message stamps ↔ the pose graph's stamps, which must increase although the odometry may jump back in time.

    Each time jump backwards starts an epoch whose stamps are shifted to follow
    the previous epoch's (with a 1 s gap). A stamp names a frame of the newest
    epoch that covers it; a match stamp that is not before the query there (a
    bag played again: same stamps) names one of an older epoch.
    """

    def __init__(self) -> None:
        self.epochs: list[_Epoch] = []

    @property
    def last(self) -> int | None:
        """Message stamp of the newest odometry frame."""
        return self.epochs[-1].last if self.epochs else None

    def add(self, stamp: int) -> int:
        """Graph stamp of the next odometry frame, at message stamp ``stamp`` (not after the last: a new epoch)."""
        if not self.epochs:
            self.epochs.append(_Epoch(0, stamp, stamp))
            return stamp
        e = self.epochs[-1]
        if stamp > e.last:
            e.last = stamp
            return stamp + e.offset
        offset = e.last + e.offset + EPOCH_GAP_NS - stamp
        self.epochs.append(_Epoch(offset, stamp, stamp))
        return stamp + offset

    def to_graph(self, stamp: int, before: int | None = None) -> int | None:
        """Graph stamp of message stamp ``stamp`` (earlier than graph stamp ``before`` when given); None: unknown."""
        for e in reversed(self.epochs):
            covered = e.first - STAMP_TOLERANCE_NS <= stamp <= e.last + STAMP_TOLERANCE_NS
            if covered and (before is None or stamp + e.offset < before):
                return stamp + e.offset
        return None

    def to_message(self, graph_stamp: int) -> int:
        starts = [e.first + e.offset for e in self.epochs]
        e = self.epochs[max(bisect.bisect_right(starts, graph_stamp) - 1, 0)]
        return graph_stamp - e.offset


@dataclass
class _Loop:
    query: int  # message stamps
    match: int
    pose: np.ndarray  # T_query_match
    covariance: np.ndarray


@dataclass(frozen=True)
class GraphUpdate:
    """What to publish after an input: ``map_to_odom`` (after odometry; stamped ``stamp_ns``) and the optimised
    keyframe ``path`` (message stamps, T_map_base) when the graph changed."""

    stamp_ns: int
    map_frame: str
    odom_frame: str
    map_to_odom: np.ndarray | None
    path: tuple[np.ndarray, np.ndarray] | None
    loop_keys: list[tuple[int, int]] | None = None  # with path: the accepted loop closures (keyframe indices)


class PoseGraphStage:
    """``counters``: ``keyframes``, ``loop_msgs``, ``loops_received``, ``loops_accepted``,
    ``loops_rejected_<reason>``, ``loops_unverified``, ``loops_without_pose``, ``loops_not_metric``,
    ``loops_other_frame``, ``bad_odometry``,
    ``bad_loop_closure``, ``resets``, ``reset_<reason>``, ``pending_loops``, ``pending_dropped[_<reason>]``,
    ``rejected_factors_<kind>``."""

    def __init__(self, graph: Any, p: dict[str, Any]) -> None:
        self.graph = graph
        self.map_frame = str(p["map_frame"])
        self.odom_frame = str(p["odom_frame"])
        self.base_frame = str(p["base_frame"])
        self.pending_max = int(p["pending_loops"])
        self.loops_per_keyframe = int(p["loops_per_keyframe"])
        self.pending_timeout_ns = int(float(p["pending_timeout_s"]) * 1e9)
        self.epochs = StampEpochs()
        self.pending: deque[_Loop] = deque()
        self.newest_stamp: int | None = None  # newest message stamp on either input
        self.counters: Counter[str] = Counter()
        for key in ("keyframes", "loop_msgs", "loops_received", "loops_accepted", "resets", "pending_dropped"):
            self.counters[key] = 0

    @classmethod
    def from_params(cls, p: dict[str, Any], node: str = "pose_graph_node") -> PoseGraphStage:
        from deep_vision.params import validate
        from deep_vision.pipeline.build import build_pose_graph

        p = validate(node, p)
        return cls(build_pose_graph(p, node=node), p)

    def _update(self, stamp: int, changed: bool, tf: bool) -> GraphUpdate:
        path = None
        loops = None
        if changed:
            stamps, poses = self.graph.keyframe_poses()
            path = (np.array([self.epochs.to_message(int(s)) for s in stamps], np.int64), poses)
            loops = [(d.query_key, d.match_key) for d in self.graph.decisions if d.accepted]
        return GraphUpdate(stamp, self.map_frame, self.odom_frame, self.graph.map_to_odom() if tf else None, path,
                           loops)

    # ------------------------------------------------------------------ odometry
    def add_odometry(self, odom: OdometryIn | None) -> GraphUpdate | None:
        """One odometry message (None: not finite, counted); None when the graph refused it."""
        if odom is None:
            self.counters["bad_odometry"] += 1
            throttled(logger, "bad_odometry", "odometry skipped: pose or covariance not finite")
            return None
        if np.abs(odom.pose[:3, 3]).max() > MAX_POSITION_M or np.abs(odom.covariance).max() > MAX_COVARIANCE:
            self.counters["bad_odometry"] += 1
            throttled(logger, "huge_odometry", f"odometry skipped: position beyond {MAX_POSITION_M:g} m or "
                      f"covariance beyond {MAX_COVARIANCE:g}")
            return None
        stamp = odom.stamp_ns
        if odom.frame_id and odom.frame_id != self.odom_frame:
            throttled(logger, "odom_frame", f"odometry frame {odom.frame_id!r} is not odom_frame "
                      f"{self.odom_frame!r}", 60.0)
        reset = self._reset_reason(stamp, odom.pose, odom.covariance)
        if reset:
            self._on_reset(reset, stamp)
        try:
            key = self.graph.add_odometry(self.epochs.add(stamp), odom.pose, odom.covariance, reset=reset is not None)
        except ValueError as exc:  # the graph refuses the frame itself (it stays as it was)
            self.counters["bad_odometry"] += 1
            throttled(logger, "odometry_refused", f"odometry at {stamp} ns skipped: {exc}")
            return None
        self.newest_stamp = stamp if self.newest_stamp is None else max(self.newest_stamp, stamp)
        changed = key is not None
        changed |= self._apply_pending()
        self.counters["keyframes"] = self.graph.stats.keyframes
        for kind, n in self.graph.stats.rejected_factors.items():  # GTSAM refused them (the graph logs once)
            self.counters[f"rejected_factors_{kind}"] = n
        return self._update(stamp, changed, tf=True)

    def _reset_reason(self, stamp: int, pose: np.ndarray, cov: np.ndarray) -> str | None:
        last = self.epochs.last
        if last is None:
            return None
        if stamp < last:
            return "time_backwards"
        if stamp == last:
            return "repeated_stamp"
        if not np.any(cov) and np.allclose(pose, np.eye(4)):  # the odometry stage's first frame of a trajectory
            return "restart"
        return None

    def _on_reset(self, reason: str, stamp: int) -> None:
        self.counters["resets"] += 1
        self.counters[f"reset_{reason}"] += 1
        logger.warning("odometry at %d ns starts a new trajectory (%s): a new chain in the pose graph", stamp, reason)
        if reason != "restart":
            # Their odometry will not come now; they would be matched to the new trajectory's frames.
            self._count_dropped(len(self.pending), "reset")
            self.pending.clear()
            self.newest_stamp = None

    # ------------------------------------------------------------------ loop closures
    def add_loop_closures(self, loops: LoopClosuresIn) -> GraphUpdate | None:
        """One LoopClosureArray: verified candidates with a pose go to the graph (or wait for their odometry);
        an update with the path when one was accepted, else None."""
        self.counters["loop_msgs"] += 1
        self.newest_stamp = max(self.newest_stamp or 0, loops.stamp_ns)
        changed, taken = False, 0
        for c in loops.candidates:  # best first
            if not c.verified or not c.has_relative_pose or not c.metric:
                self.counters["loops_unverified" if not c.verified else "loops_without_pose"
                              if not c.has_relative_pose else "loops_not_metric"] += 1
                continue
            if c.frame_id and c.frame_id != self.base_frame:
                self.counters["loops_other_frame"] += 1
                throttled(logger, "loop_frame", f"loop closure in frame {c.frame_id!r} skipped: base_frame is "
                          f"{self.base_frame!r}", 60.0)
                continue
            if self.loops_per_keyframe and taken >= self.loops_per_keyframe:
                self.counters["loops_beyond_per_keyframe"] += 1
                continue
            taken += 1
            loop = self._loop(c)
            if loop is None:
                self.counters["bad_loop_closure"] += 1
                throttled(logger, "bad_loop", "loop closure skipped: relative pose or covariance not finite, or "
                          "a variance not positive")
                continue
            if self.epochs.last is not None and loop.query <= self.epochs.last:
                changed |= self._add_loop(loop)
            else:
                self.pending.append(loop)
                if len(self.pending) > self.pending_max:
                    self.pending.popleft()
                    self._count_dropped(1, "queue_full")
        self._drop_expired()
        return self._update(loops.stamp_ns, True, tf=False) if changed else None

    @staticmethod
    def _loop(c: Any) -> _Loop | None:
        """None when the pose is not finite or the covariance is not a usable one (non-finite, or without
        positive variances: unset, or ROS's "unknown")."""
        cov = c.covariance
        if c.pose is None or not (np.all(np.isfinite(cov)) and np.all(np.diag(cov) > 0)):
            return None
        return _Loop(c.query_stamp_ns, c.match_stamp_ns, c.pose, cov)

    def _add_loop(self, loop: _Loop) -> bool:
        """Give ``loop`` to the graph (its query frame has odometry); True when it was accepted."""
        self.counters["loops_received"] += 1
        query = self.epochs.to_graph(loop.query)
        match = self.epochs.to_graph(loop.match, before=query) if query is not None else None
        if query is None or match is None:
            self.counters["loops_rejected_unknown_stamp"] += 1
            return False
        decision = self.graph.add_loop(query, match, loop.pose, loop.covariance)
        if decision.accepted:  # (the graph logs each decision)
            self.counters["loops_accepted"] += 1
        else:
            self.counters[f"loops_rejected_{decision.reason}"] += 1
        return decision.accepted

    def _apply_pending(self) -> bool:
        """Add the waiting loop closures whose query frame now has odometry; True when one was accepted."""
        last, changed = self.epochs.last, False
        ready = [loop for loop in self.pending if loop.query <= last]
        if ready:
            self.pending = deque(loop for loop in self.pending if loop.query > last)
            for loop in ready:
                changed |= self._add_loop(loop)
        self._drop_expired()
        return changed

    def _drop_expired(self) -> None:
        if self.newest_stamp is not None:
            limit = self.newest_stamp - self.pending_timeout_ns
            kept = deque(loop for loop in self.pending if loop.query >= limit)
            self._count_dropped(len(self.pending) - len(kept), "timeout")
            self.pending = kept
        self.counters["pending_loops"] = len(self.pending)

    def _count_dropped(self, count: int, reason: str) -> None:
        if count <= 0:
            return
        self.counters["pending_dropped"] += count
        self.counters[f"pending_dropped_{reason}"] += count
        throttled(logger, f"pending_dropped_{reason}", f"{count} loop closure(s) dropped without odometry for "
                  f"their query frame ({reason})")
