"""Stage outputs → ROS messages (rosbags objects of :func:`deep_vision.io.rosmsg.typestore`).

The one place where the package's outputs become messages: the nodes serialise
them and publish the bytes, the evaluation writes them to its output bag. Each
function returns ``[(topic, message type, message)]``; topics are relative
names, as the nodes publish them (``/tf`` is absolute).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deep_vision.io import rosmsg
from deep_vision.stages.homography import HomographyOut
from deep_vision.stages.odometry import OdometryOut
from deep_vision.stages.place import PlaceOut
from deep_vision.stages.pose_graph import GraphUpdate

HOMOGRAPHY = "deep_vision_msgs/msg/Homography"
LOOP_CLOSURES = "deep_vision_msgs/msg/LoopClosureArray"
NAVSATFIX = "sensor_msgs/msg/NavSatFix"
ODOMETRY = "nav_msgs/msg/Odometry"
PATH = "nav_msgs/msg/Path"
TF = "tf2_msgs/msg/TFMessage"
DIAGNOSTICS = "diagnostic_msgs/msg/DiagnosticArray"
MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"

#: Output topic → message type, of every node.
TOPICS = {"homography": HOMOGRAPHY, "loop_closures": LOOP_CLOSURES, "geolocation": NAVSATFIX, "odometry": ODOMETRY,
          "path": PATH, "loop_closure_markers": MARKER_ARRAY, "/tf": TF}

Message = tuple[str, str, Any]


def homography_msgs(out: HomographyOut) -> list[Message]:
    return [("homography", HOMOGRAPHY, rosmsg.homography_msg(out.matrix, out.stamp_ns, out.source_stamp_ns,
                                                             out.frame_id, out.corner_uncertainty_px, out.valid,
                                                             out.image_size))]


def odometry_msgs(out: OdometryOut, publish_tf: bool = True) -> list[Message]:
    """``odometry`` and, with ``publish_tf``, ``odom → base_link`` on ``/tf``."""
    msgs: list[Message] = [("odometry", ODOMETRY, rosmsg.odometry_msg(
        out.pose, out.linear, out.angular, out.stamp_ns, out.frame_id, out.child_frame_id,
        pose_covariance=out.covariance, twist_covariance=out.twist_covariance))]
    if publish_tf:
        msgs.append(("/tf", TF, rosmsg.tf_message([rosmsg.transform_stamped_msg(
            out.pose, out.stamp_ns, out.frame_id, out.child_frame_id)])))
    return msgs


def place_msgs(out: PlaceOut) -> list[Message]:
    """``loop_closures`` (when ``out.publish``) and ``geolocation`` (when estimated)."""
    msgs: list[Message] = []
    if out.publish:
        msgs.append(("loop_closures", LOOP_CLOSURES, rosmsg.loop_closure_array_msg(
            out.result, out.candidates, out.frame_id, out.base_frame)))
    geo = out.geolocation
    if geo is not None:
        var = geo.std_m**2  # horizontal; the altitude is a guess: 10x the standard deviation
        cov = np.diag([var, var, 100.0 * var])
        msgs.append(("geolocation", NAVSATFIX, rosmsg.navsatfix_msg(
            geo.latitude, geo.longitude, geo.altitude, out.stamp_ns, out.frame_id, cov, covariance_type=1)))
    return msgs


def pose_graph_msgs(update: GraphUpdate, publish_tf: bool = True, markers: bool = False) -> list[Message]:
    """``path`` when the graph changed, with ``markers`` also ``loop_closure_markers`` (a line between the two
    keyframes of each accepted loop closure); ``map → odom`` on ``/tf`` after odometry (``publish_tf``)."""
    msgs: list[Message] = []
    if update.path is not None:
        stamps, poses = update.path
        stamp = int(stamps[-1]) if len(stamps) else update.stamp_ns
        msgs.append(("path", PATH, rosmsg.path_msg(stamps, poses, stamp, update.map_frame)))
        if markers:
            pairs = np.asarray(update.loop_keys if update.loop_keys is not None else [], int).reshape(-1, 2)
            segments = np.asarray(poses)[pairs][:, :, :3, 3] if len(pairs) else np.zeros((0, 2, 3))
            msgs.append(("loop_closure_markers", MARKER_ARRAY,
                         rosmsg.line_markers_msg(segments, stamp, update.map_frame, "loop_closures")))
    if publish_tf and update.map_to_odom is not None:
        msgs.append(("/tf", TF, rosmsg.tf_message([rosmsg.transform_stamped_msg(
            update.map_to_odom, update.stamp_ns, update.map_frame, update.odom_frame)])))
    return msgs


def diagnostics_msgs(name: str, hardware_id: str, values: dict[str, str], stamp_ns: int) -> list[Message]:
    """``/diagnostics``: one status, WARN with the count when ``values["bad_frames"]`` is not 0."""
    bad = int(values.get("bad_frames", "0"))
    cls = rosmsg.typestore().types
    status = cls["diagnostic_msgs/msg/DiagnosticStatus"](
        level=1 if bad else 0, name=name, message=f"{bad} bad frame(s)" if bad else "ok",
        hardware_id=hardware_id, values=[cls["diagnostic_msgs/msg/KeyValue"](key=k, value=v)
                                         for k, v in values.items()])
    return [("/diagnostics", DIAGNOSTICS, cls[DIAGNOSTICS](header=rosmsg.header(stamp_ns, ""), status=[status]))]
