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

    def load(self) -> type:
        return getattr(importlib.import_module(self.module), self.cls)


NODES: dict[str, NodeEntry] = {
    "homography": NodeEntry("homography_node", "deep_vision.nodes.homography_node", "HomographyNode", "homography_node"),
    "place_recognition": NodeEntry("place_recognition_node", "deep_vision.nodes.place_recognition_node",
                                   "PlaceRecognitionNode", "place_recognition_node"),
    "odometry": NodeEntry("odometry_node", "deep_vision.nodes.odometry_node", "OdometryNode", "odometry_node"),
    # Subscribes odometry and loop_closures: the relative names the two nodes above publish, so they connect
    # in one namespace without remapping.
    "pose_graph": NodeEntry("pose_graph_node", "deep_vision.nodes.pose_graph_node", "PoseGraphNode", "pose_graph_node"),
}

#: Nodes started when the launch argument / ``--nodes`` is not given: the whole pipeline.
DEFAULT_NODES: tuple[str, ...] = ("homography", "place_recognition", "odometry", "pose_graph")

#: Input topics every node subscribes (relative names, remapped by the launch file and the runner).
INPUT_TOPICS = ("image", "camera_info")


def parameter_table() -> str:
    """Markdown table of every node's parameters (from their declarations; the README embeds it)."""
    rows = ["| node | parameter | default | description |", "|---|---|---|---|"]
    for entry in NODES.values():
        module = importlib.import_module(entry.module)
        for p in module.PARAMS:
            default = "''" if p.default == "" else str(p.default).replace("|", "\\|")
            desc = p.description + (f" One of: {', '.join(p.choices)}." if p.choices else "")
            if p.range is not None:
                desc += f" Range {p.range[0]:g}–{p.range[1]:g}."
            desc = desc.replace("|", "\\|")
            rows.append(f"| `{entry.name}` | `{p.name}` | `{default}` | {desc} |")
    return "\n".join(rows)
