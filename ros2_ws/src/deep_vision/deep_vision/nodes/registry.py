"""The node list shared by the launch file and ``deep-vision run``, so the two cannot drift apart.

Each entry: console-script executable (``ros2 run deep_vision <executable>``),
the node class (importable, so nodes compose in one process) and the node name
under which ``config/perception.yaml`` holds its parameters.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeEntry:
    executable: str
    module: str
    cls: str
    name: str  # node name (and parameter-file key)
    inputs: tuple[str, ...] = ()  # the topics it subscribes (relative names), remappable: see INPUT_TOPICS

    def load(self) -> type:
        return getattr(importlib.import_module(self.module), self.cls)

    def parameter_names(self) -> set[str]:
        """The parameters the node declares (its module's ``PARAMS``) and ``use_sim_time``, which every node has."""
        return {p.name for p in importlib.import_module(self.module).PARAMS} | {"use_sim_time"}


#: Input topics: launch argument / runner key -> (the relative name nodes subscribe, its default target).
#: Relative defaults follow the nodes' namespace; the pose graph's inputs default to what the nodes above
#: publish, and can be pointed at another odometry or loop-closure source.
INPUT_TOPICS: dict[str, tuple[str, str]] = {
    "image": ("image", "/camera/image_raw"),
    "camera_info": ("camera_info", "/camera/camera_info"),
    "gps_fix": ("gps/fix", "/gps/fix"),
    "odometry": ("odometry", "odometry"),
    "loop_closures": ("loop_closures", "loop_closures"),
}

NODES: dict[str, NodeEntry] = {
    "homography": NodeEntry("homography_node", "deep_vision.nodes.homography_node", "HomographyNode", "homography_node",
                            ("image",)),
    "place_recognition": NodeEntry("place_recognition_node", "deep_vision.nodes.place_recognition_node",
                                   "PlaceRecognitionNode", "place_recognition_node",
                                   ("image", "camera_info", "gps/fix")),
    "odometry": NodeEntry("odometry_node", "deep_vision.nodes.odometry_node", "OdometryNode", "odometry_node",
                          ("image", "camera_info")),
    # Subscribes odometry and loop_closures: the relative names the two nodes above publish, so they connect
    # in one namespace without remapping.
    "pose_graph": NodeEntry("pose_graph_node", "deep_vision.nodes.pose_graph_node", "PoseGraphNode", "pose_graph_node",
                            ("odometry", "loop_closures")),
}

#: Nodes started when the launch argument / ``--nodes`` is not given: the whole pipeline.
DEFAULT_NODES: tuple[str, ...] = ("homography", "place_recognition", "odometry", "pose_graph")


def remappings(entry: NodeEntry, targets: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(topic, target) for each input ``entry`` subscribes; ``targets`` by INPUT_TOPICS key (default: theirs)."""
    targets = targets or {}
    return [(topic, targets.get(key) or default) for key, (topic, default) in INPUT_TOPICS.items()
            if topic in entry.inputs]


def node_overrides(entry: NodeEntry, overrides: dict[str, object]) -> dict[str, object]:
    """The ``overrides`` (launch arguments such as backend, use_sim_time) that ``entry`` declares."""
    names = entry.parameter_names()
    return {k: v for k, v in overrides.items() if k in names}
