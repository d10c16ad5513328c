"""The RViz2 configuration and the Foxglove layout shipped in config/: every topic they show is one the package
publishes or subscribes (default names, root namespace), and every message field the Foxglove panels read
exists in that topic's message type."""

from __future__ import annotations

import json
import re

import yaml
from conftest import REPO
from deep_vision.io.rosmsg import typestore
from deep_vision.nodes.registry import INPUT_TOPICS
from deep_vision.stages.messages import TOPICS

PUBLISHED = {("/" + t).replace("//", "/"): m for t, m in TOPICS.items()}
INPUTS = {default for _, default in INPUT_TOPICS.values()}


def _rviz_topics(node) -> list[str]:
    found = []
    if isinstance(node, dict):
        topic = node.get("Topic")
        if isinstance(topic, dict) and "Value" in topic:
            found.append(topic["Value"])
        for value in node.values():
            found += _rviz_topics(value)
    elif isinstance(node, list):
        for value in node:
            found += _rviz_topics(value)
    return found


def test_rviz_view_shows_published_topics_and_the_tf_tree():
    view = yaml.safe_load((REPO / "config" / "deep_vision.rviz").read_text())
    displays = view["Visualization Manager"]["Displays"]
    classes = {d["Class"] for d in displays}
    assert {"rviz_default_plugins/TF", "rviz_default_plugins/Odometry", "rviz_default_plugins/Path",
            "rviz_default_plugins/Image", "rviz_default_plugins/MarkerArray"} <= classes
    topics = _rviz_topics(displays)
    assert set(topics) == {"/odometry", "/path", "/loop_closure_markers", "/camera/image_raw"}
    for t in topics:
        assert t in PUBLISHED or t in INPUTS, t
    assert view["Visualization Manager"]["Global Options"]["Fixed Frame"] == "map"


def test_foxglove_layout_reads_published_topics_and_fields():
    layout = json.loads((REPO / "config" / "foxglove_layout.json").read_text())
    panels = layout["configById"]
    refs = []  # (topic, field path)
    for config in panels.values():
        if "imageMode" in config:
            refs.append((config["imageMode"]["imageTopic"], []))
        refs += [(t, []) for t in config.get("topics", {})]
        paths = [config["topicPath"]] if "topicPath" in config else [p["value"] for p in config.get("paths", [])]
        for path in paths:
            topic, _, rest = path.partition(".")
            refs.append((topic, [re.sub(r"\[.*?\]|\{.*?\}", "", f) for f in rest.split(".") if f]))
    assert {t for t, _ in refs} == {"/camera/image_raw", "/odometry", "/path", "/loop_closure_markers",
                                    "/loop_closures", "/homography"}
    for topic, fields in refs:
        assert topic in PUBLISHED or topic in INPUTS, topic
        if fields:
            assert fields[0] in dict(typestore().fielddefs[PUBLISHED[topic]][1]), (topic, fields)
    # the panels the layout places are the ones it configures
    placed = re.findall(r'"([A-Za-z0-9]+![a-z]+)"', json.dumps(layout["layout"]))
    assert sorted(placed) == sorted(panels)
