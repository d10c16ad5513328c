"""``pose_graph_node``: keyframe pose graph over visual odometry and verified loop closures.

Subscribes ``odometry`` (nav_msgs/Odometry as ``odometry_node`` publishes it:
``odom → base_link``, pose covariance in ``odom``) and ``loop_closures``
(deep_vision_msgs/LoopClosureArray from ``place_recognition_node``). Verified
candidates with a relative pose go to
:class:`~deep_vision.estimators.pose_graph.PoseGraph`, which does all the work.
Publishes ``path`` (nav_msgs/Path of the optimised keyframe poses in
``map_frame``) after each new keyframe or accepted loop, the ``map → odom``
correction on ``/tf`` with every odometry message (``publish_tf``; tf2_ros,
else a plain tf2_msgs publisher), and ``/diagnostics``.

- A loop closure whose query frame has no odometry yet waits in a queue of
  ``pending_loops`` until it has, and is dropped after ``pending_timeout_s`` of
  message time.
- A new odometry trajectory (a stamp not after the previous one, or an
  identity pose with zero covariance: how ``odometry_node`` restarts) joins
  the graph as a new chain: the map is kept. The graph needs increasing stamps,
  so after a time jump backwards the node shifts the new stamps past the old
  ones (one *epoch* per jump) and maps loop-closure stamps back (see
  :class:`StampEpochs`).
- The camera's pose on the robot (loop closures are between cameras) comes
  from ``/tf_static`` (``base_frame → camera_frame``, or the loop closures'
  frame when ``camera_frame`` is empty) or the ``camera_pose`` parameter, as in
  ``odometry_node``.
- Non-finite odometry or loop closures are counted and skipped.
"""

from __future__ import annotations

import bisect
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from deep_vision_msgs.msg import LoopClosure, LoopClosureArray
from geometry_msgs.msg import PoseStamped, TransformStamped
from nav_msgs.msg import Odometry, Path
from rclpy.node import Node

from deep_vision.geometry.transforms import (
    make_transform,
    quaternion_from_rotation,
    rotation_from_quaternion,
)
from deep_vision.nodes.common import (
    CAMERA_POSE_PARAMS,
    CameraPose,
    NodeDiagnostics,
    Param,
    TransformOutput,
    backend_diagnostics,
    declare,
    image_qos,
    spin_node,
    stamp_ns,
    time_msg,
)
from deep_vision.pipeline.build import build_pose_graph

PARAMS = [
    Param("keyframe_distance_m", 2.0, "A keyframe after travelling this far (0: off).", range=(0.0, 1000.0)),
    Param("keyframe_angle_deg", 10.0, "... or after turning this far (0: off).", range=(0.0, 180.0)),
    Param("loop_max_distance_m", 10.0, "Largest plausible distance between the two cameras of a loop closure.",
          range=(0.1, 1000.0)),
    Param("loop_max_rotation_deg", 10.0, "A loop closure whose rotation disagrees with the current estimate by more "
          "than this (or 3 sigma of the odometry's rotation drift between its keyframes, if larger) is rejected.", range=(0.0, 180.0)),
    Param("loop_max_chi2", 22.46, "A loop closure whose chi2 after optimisation exceeds this is removed again "
          "(default: 99.9 % of chi2 with 6 degrees of freedom).", range=(0.0, 1e6)),
    Param("loop_kernel", "huber", "Robust kernel of loop-closure factors.", choices=("huber", "cauchy", "none")),
    Param("map_frame", "map", "Frame of the optimised path and parent of the published map -> odom."),
    Param("odom_frame", "odom", "Frame of the odometry (child of map -> odom)."),
    Param("base_frame", "base_link", "Robot body frame (child frame of the odometry)."),
    Param("camera_frame", "", "Camera optical frame of the loop closures, looked up in /tf_static (empty: the loop "
          "closures' header frame)."),
    *CAMERA_POSE_PARAMS,
    Param("publish_tf", True, "Broadcast map -> odom on /tf (tf2_ros, else tf2_msgs)."),
    Param("pending_loops", 50, "Loop closures kept while their query frame has no odometry yet.", range=(0, 10000)),
    Param("pending_timeout_s", 5.0, "A waiting loop closure is dropped when the newest stamp is this much later "
          "(message time).", range=(0.0, 3600.0)),
    Param("input_qos", "reliable", "QoS of the odometry and loop-closure subscriptions: reliable (what the nodes "
          "publish; nothing is lost) or sensor_data (best effort).", choices=("reliable", "sensor_data")),
    Param("queue_depth", 100, "Depth of the odometry and loop-closure subscription queues.", range=(1, 10000)),
]

STAMP_TOLERANCE_NS = 1_000_000  # PoseGraph matches loop-closure stamps to odometry frames within 1 ms
EPOCH_GAP_NS = 1_000_000_000


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
    rotation: np.ndarray
    direction: np.ndarray | None
    covariance: np.ndarray | None
    camera_frame: str


class PoseGraphNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("pose_graph_node", **kwargs)
        p = declare(self, PARAMS)
        self.params = p
        self.camera_pose = CameraPose(self, p)
        self.graph = build_pose_graph(p, extrinsic=self.camera_pose.T)  # raises ConfigError naming the node
        self.epochs = StampEpochs()
        self.pending: deque[_Loop] = deque()
        self.newest_stamp: int | None = None  # newest message stamp on either input
        self.tf_out = TransformOutput(self) if p["publish_tf"] else None
        self.diag = NodeDiagnostics(self, "pose graph", {
            **backend_diagnostics(None), "solver": "gtsam isam2", "loop_kernel": p["loop_kernel"],
            "tf": self.tf_out.kind if self.tf_out else "off"})
        for key in ("keyframes", "loop_msgs", "loops_received", "loops_accepted", "resets", "pending_dropped"):
            self.diag.counters[key] = 0
        qos = image_qos(p["input_qos"], p["queue_depth"])
        self.path_pub = self.create_publisher(Path, "path", 10)
        self.odom_sub = self.create_subscription(Odometry, "odometry", self.on_odometry, qos)
        self.loop_sub = self.create_subscription(LoopClosureArray, "loop_closures", self.on_loop_closures, qos)
        source = "/tf_static, else the parameter" if self.camera_pose.buffer is not None else "parameter"
        self.get_logger().info(f"pose graph: keyframes every {p['keyframe_distance_m']} m / "
                               f"{p['keyframe_angle_deg']} deg, camera pose from {source} 'camera_pose'")

    # ------------------------------------------------------------------ odometry
    def on_odometry(self, msg: Odometry) -> None:
        self.diag.frame_in()
        t0 = time.perf_counter()
        stamp = stamp_ns(msg.header.stamp)
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        quat = np.array([q.x, q.y, q.z, q.w])
        cov = np.asarray(msg.pose.covariance, dtype=np.float64).reshape(6, 6)
        position = np.array([p.x, p.y, p.z])
        if not (np.all(np.isfinite(position)) and np.all(np.isfinite(quat)) and np.all(np.isfinite(cov))
                and np.linalg.norm(quat) > 0.5):
            self.diag.bad("odometry")
            self.get_logger().warning(f"odometry at {stamp} ns skipped: pose or covariance not finite",
                                      throttle_duration_sec=5.0)
            return
        if msg.header.frame_id and msg.header.frame_id != self.params["odom_frame"]:
            self.get_logger().warning(f"odometry frame {msg.header.frame_id!r} is not odom_frame "
                                      f"{self.params['odom_frame']!r}", throttle_duration_sec=60.0)
        pose = make_transform(rotation_from_quaternion(quat), position)
        reset = self._reset_reason(stamp, pose, cov)
        if reset:
            self._on_reset(reset, stamp)
        try:
            key = self.graph.add_odometry(self.epochs.add(stamp), pose, cov, reset=reset is not None)
        except ValueError as exc:  # the graph refuses the frame itself (it stays as it was)
            self.diag.bad("odometry")
            self.get_logger().warning(f"odometry at {stamp} ns skipped: {exc}", throttle_duration_sec=5.0)
            return
        self.newest_stamp = stamp if self.newest_stamp is None else max(self.newest_stamp, stamp)
        changed = key is not None
        changed |= self._apply_pending()
        self.diag.counters["keyframes"] = self.graph.stats.keyframes
        for kind, n in self.graph.stats.rejected_factors.items():  # GTSAM refused them (the graph logs once)
            self.diag.counters[f"rejected_factors_{kind}"] = n
        if changed:
            self.publish_path()
        self.publish_tf(msg.header.stamp)
        self.diag.processed((time.perf_counter() - t0) * 1e3)

    def _reset_reason(self, stamp: int, pose: np.ndarray, cov: np.ndarray) -> str | None:
        last = self.epochs.last
        if last is None:
            return None
        if stamp < last:
            return "time_backwards"
        if stamp == last:
            return "repeated_stamp"
        if not np.any(cov) and np.allclose(pose, np.eye(4)):  # odometry_node's first frame of a trajectory
            return "restart"
        return None

    def _on_reset(self, reason: str, stamp: int) -> None:
        self.diag.counters["resets"] += 1
        self.diag.counters[f"reset_{reason}"] += 1
        self.get_logger().warning(f"odometry at {stamp} ns starts a new trajectory ({reason}): a new chain in the "
                                  "pose graph")
        if reason != "restart":
            # Their odometry will not come now; they would be matched to the new trajectory's frames.
            self._count_dropped(len(self.pending), "reset")
            self.pending.clear()
            self.newest_stamp = None

    # ------------------------------------------------------------------ loop closures
    def on_loop_closures(self, msg: LoopClosureArray) -> None:
        self.diag.counters["loop_msgs"] += 1
        frame = self.params["camera_frame"] or msg.header.frame_id
        self.newest_stamp = max(self.newest_stamp or 0, stamp_ns(msg.header.stamp))
        changed = False
        for c in msg.candidates:
            if not c.verified or not c.has_relative_pose:
                self.diag.counters["loops_unverified" if not c.verified else "loops_without_pose"] += 1
                continue
            loop = self._loop(c, frame)
            if loop is None:
                self.diag.bad("loop_closure")
                self.get_logger().warning("loop closure skipped: relative pose not finite", throttle_duration_sec=5.0)
                continue
            if self.epochs.last is not None and loop.query <= self.epochs.last:
                changed |= self._add_loop(loop)
            else:
                self.pending.append(loop)
                if len(self.pending) > self.params["pending_loops"]:
                    self.pending.popleft()
                    self._count_dropped(1, "queue_full")
        self._drop_expired()
        if changed:
            self.publish_path()

    @staticmethod
    def _loop(c: LoopClosure, frame: str) -> _Loop | None:
        pose = c.relative_pose.pose
        quat = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])
        t = np.array([pose.position.x, pose.position.y, pose.position.z])
        cov = np.asarray(c.relative_pose.covariance, dtype=np.float64).reshape(6, 6)
        if not (np.all(np.isfinite(quat)) and np.linalg.norm(quat) > 0.5 and np.all(np.isfinite(t))):
            return None
        n = np.linalg.norm(t)
        # Only the direction is used, metric or not: PoseGraph takes the length from its own estimate.
        direction = t / n if n > 1e-9 else None
        # A covariance without positive rotation variances (unset, or ROS's "unknown") would pin the rotation.
        if not (np.all(np.isfinite(cov)) and np.all(np.diag(cov)[3:] > 0)):
            cov = None
        return _Loop(stamp_ns(c.query_stamp), stamp_ns(c.match_stamp), rotation_from_quaternion(quat), direction,
                     cov, frame)

    def _add_loop(self, loop: _Loop) -> bool:
        """Give ``loop`` to the graph (its query frame has odometry); True when it was accepted."""
        if self.camera_pose.update(loop.camera_frame):
            self.graph.extrinsic = self.camera_pose.T
        self.diag.counters["loops_received"] += 1
        query = self.epochs.to_graph(loop.query)
        match = self.epochs.to_graph(loop.match, before=query) if query is not None else None
        if query is None or match is None:
            self.diag.counters["loops_rejected_unknown_stamp"] += 1
            return False
        decision = self.graph.add_loop(query, match, loop.rotation, loop.direction, loop.covariance)
        if decision.accepted:
            self.diag.counters["loops_accepted"] += 1
            self.get_logger().info(f"loop closure accepted: {loop.match} ns -> {loop.query} ns "
                                   f"(chi2 {decision.chi2:.1f})")
        else:
            self.diag.counters[f"loops_rejected_{decision.reason}"] += 1
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
            limit = self.newest_stamp - int(self.params["pending_timeout_s"] * 1e9)
            kept = deque(loop for loop in self.pending if loop.query >= limit)
            self._count_dropped(len(self.pending) - len(kept), "timeout")
            self.pending = kept
        self.diag.counters["pending_loops"] = len(self.pending)

    def _count_dropped(self, count: int, reason: str) -> None:
        if count <= 0:
            return
        self.diag.counters["pending_dropped"] += count
        self.diag.counters[f"pending_dropped_{reason}"] += count
        self.get_logger().warning(f"{count} loop closure(s) dropped without odometry for their query frame "
                                  f"({reason})", throttle_duration_sec=5.0)

    # ------------------------------------------------------------------ outputs
    def publish_path(self) -> None:
        stamps, poses = self.graph.keyframe_poses()
        path = Path()
        path.header.frame_id = self.params["map_frame"]
        if len(stamps):
            path.header.stamp = time_msg(self.epochs.to_message(int(stamps[-1])))
        for s, T in zip(stamps, poses):
            ps = PoseStamped()
            ps.header.frame_id = path.header.frame_id
            ps.header.stamp = time_msg(self.epochs.to_message(int(s)))
            _set_pose(ps.pose, T)
            path.poses.append(ps)
        self.path_pub.publish(path)

    def publish_tf(self, stamp: Time) -> None:
        if self.tf_out is None:
            return
        T = self.graph.map_to_odom()
        tf = TransformStamped()
        tf.header.stamp = stamp
        tf.header.frame_id = self.params["map_frame"]
        tf.child_frame_id = self.params["odom_frame"]
        tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = (float(v) for v in T[:3, 3])
        q = quaternion_from_rotation(T[:3, :3])
        r = tf.transform.rotation
        r.x, r.y, r.z, r.w = (float(v) for v in q)
        self.tf_out.send(tf)


def _set_pose(pose: Any, T: np.ndarray) -> None:
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in T[:3, 3])
    q = quaternion_from_rotation(T[:3, :3])
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)


def main(args: list[str] | None = None) -> int:
    return spin_node(PoseGraphNode, "pose_graph_node", args)


if __name__ == "__main__":
    sys.exit(main())
