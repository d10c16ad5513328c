"""Fuzz slice (issue #29 item 6): malformed messages through the shipped nodes, seed 0.

``bench/fuzz.py`` holds the message generator and feeds each node through its own subscriptions' callbacks
(CDR bytes, as rclpy gives them); its run of 10,000 messages per node is in ``bench/results/fuzz-2026-12-06/``.
Here 300 messages per node (every class at least once): no exception leaves a node's callback or is caught by its
frame queue, each message moves the node's counter its class expects, once, and the node's counters add up to
what was sent.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import REPO, require_ros

MESSAGES = 300  # per node


@pytest.fixture(scope="module")
def fuzz():
    require_ros()
    spec = importlib.util.spec_from_file_location("deep_vision_bench_fuzz", REPO / "bench" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _classes(fuzz, node: str) -> set[str]:
    """The classes the node's stream holds, every one at least once per round."""
    images = set(fuzz.IMAGE_CLASSES)
    return {"homography": images,
            "odometry": images | set(fuzz.CAMERA_INFO_CLASSES),
            "place": images | set(fuzz.CAMERA_INFO_CLASSES) | set(fuzz.GPS_CLASSES),
            "pose_graph": set(fuzz.ODOMETRY_CLASSES) | set(fuzz.LOOP_CLASSES)}[node]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow on purpose (1e308 translations)
@pytest.mark.parametrize("node", ["homography", "odometry", "place", "pose_graph"])
def test_malformed_messages_are_counted_and_crash_nothing(fuzz, request, node):
    if node == "pose_graph":
        pytest.importorskip("gtsam")
    vo_model = request.getfixturevalue("random_vo_model") if node == "odometry" else None
    r = fuzz.run_node(node, MESSAGES, seed=0, progress=False, vo_model=vo_model)

    assert not r.crashes, "\n".join(f"#{c['index']} {c['class']}: {c['error']} at {c['where']}; {c['repro']}"
                                    for c in r.crashes[:5])
    assert not r.unexpected, r.unexpected[:5]
    assert not r.unserialisable, r.unserialisable[:5]
    assert sum(r.outcomes.values()) == r.messages == MESSAGES
    assert _classes(fuzz, node) <= set(r.classes), "a class was not generated"
    malformed = {name for name, c in r.classes.items() if c["malformed"]}
    assert malformed, "no malformed class"

    # each malformed message under its class's counter, and the node's counters hold exactly those
    c = r.counters
    for name in malformed:
        assert set(r.classes[name]["outcomes"]) == set(r.classes[name]["expect"]), name

    def sent(outcome: str) -> int:
        return sum(k["outcomes"].get(outcome, 0) for k in r.classes.values())

    assert not c.get("errors") and not c.get("dropped_frames")
    if node != "pose_graph":
        assert c.get("bad_image", 0) == sent("bad_image") == sum(
            k["sent"] for name, k in r.classes.items() if k["kind"] == "image" and k["malformed"])
        assert c["frames_in"] == sent("processed") + c["bad_image"] + sent("between_keyframes") == r.by_kind["image"]
    if node in ("odometry", "place"):
        assert c.get("bad_camera_info", 0) == sent("bad_camera_info") > 0
    if node == "place":
        assert c.get("gps_no_fix", 0) == sent("gps_no_fix") > 0
        # the keyframe gate counts the valid frames it refuses; a malformed frame is counted once, as bad_image
        assert c["frames_between_keyframes"] == sent("between_keyframes")
    if node == "pose_graph":
        assert c["bad_odometry"] == sent("bad_odometry") > 0
        assert c["frames_in"] == sent("odometry") + c["bad_odometry"] == r.by_kind["odometry"]
        assert c["bad_loop_closure"] == sent("bad_loop_closure") > 0
    assert all(v for v in r.checks.values() if isinstance(v, bool)), r.checks
