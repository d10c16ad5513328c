"""Shared fixtures: ROS isolation, the node harness, small synthetic configs, real data paths."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

# Keep DDS discovery on this machine and away from other processes' ROS graphs:
# set before anything imports rclpy.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(50, 99)))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def require_ros():
    """Import rclpy or skip; with DEEP_VISION_REQUIRE_ROS=1 (make test) a missing ROS fails instead."""
    try:
        import rclpy  # noqa: F401
        from deep_vision_msgs.msg import Homography  # noqa: F401
    except ImportError as exc:
        if os.environ.get("DEEP_VISION_REQUIRE_ROS") == "1":
            pytest.fail(f"ROS 2 (rclpy + deep_vision_msgs) is required here but does not import: {exc}")
        pytest.skip(f"ROS 2 not available: {exc}")
    import rclpy

    return rclpy


@pytest.fixture
def ros_harness():
    require_ros()
    from deep_vision.nodes.harness import NodeHarness

    harness = NodeHarness()
    try:
        yield harness
    finally:
        harness.shutdown()


def small_world_config(frames: int = 12, seed: int = 0, encoding: str = "mono8", width: int = 320, height: int = 120):
    """A quick-to-render world: small images, coarse ground texture."""
    from deep_vision.synthetic.config import (
        CameraConfig,
        SceneConfig,
        SyntheticWorldConfig,
    )

    return SyntheticWorldConfig(
        seed=seed,
        frames=frames,
        camera=CameraConfig(width=width, height=height, encoding=encoding),
        scene=SceneConfig(ground_texel_m=0.08, facade_texel_m=0.08, margin_m=25.0),
    )


@pytest.fixture(scope="module")
def synthetic():
    """30 rendered frames, 620 x 188, of the small world's route (the VO tests' drive)."""
    from deep_vision.synthetic import SyntheticSequence

    return SyntheticSequence(small_world_config(frames=30, width=620, height=188))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the repository in CI)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def random_vo_model(tmp_path_factory):
    """A randomly initialised DeepVO exported with its card (the start-up path; tests replace its motions)."""
    from deep_vision.inference.export import export_onnx
    from deep_vision.models.deepvo import DeepVO

    model = DeepVO().eval()
    spec = model.input_spec()
    path = tmp_path_factory.mktemp("vo") / "vo.onnx"
    export_onnx(model, model.example_inputs(), path, output_names=["motion", "h1", "c1"], random_trials=1,
                card_fields={"model_class": "deepvo", "model_config": model.conf, "inputs": spec["inputs"],
                             "outputs": spec["outputs"]})
    return path


@pytest.fixture(scope="module")
def tiny_patch_model(tmp_path_factory):
    """A randomly initialised compact PatchNet (magnification 5 in its card) exported with its card: the runtime
    path, not accuracy. One per test module (a module may write into its card)."""
    torch = pytest.importorskip("torch")
    from deep_vision.inference.export import export_onnx
    from deep_vision.models.patch_net import PatchNet

    torch.manual_seed(0)
    model = PatchNet({"preset": "compact", "magnification": 5.0}).eval()
    spec = model.input_spec()
    path = tmp_path_factory.mktemp("patch") / "patch.onnx"
    export_onnx(model, model.example_inputs(), path, output_names=["descriptors"], dynamic_axes=model.dynamic_axes,
                random_trials=1, card_fields={"model_class": "patch_net", "model_config": model.conf,
                                              "inputs": spec["inputs"], "outputs": spec["outputs"]})
    return path


# A circle of 12 m radius at 7 m/s (0.7 m and 3.3 deg per frame): the second lap starts at frame 107 and revisits
# the first (test_one_system, test_viewer).
REVISIT_FRAMES = 140
REVISIT_ROUTE = {"corners": [[0.0, 0.0], [24.0, 0.0], [24.0, 24.0], [0.0, 24.0]], "corner_radius_m": 12.0,
                 "speed_mps": 7.0}


def record_route(folder: Path, route: dict, frames: int, width: int, height: int):
    """Render the small world driven on ``route`` into a rosbag2 ``folder/bag`` (ground truth, camera info,
    /tf_static); returns (bag path, its SyntheticWorldConfig)."""
    from deep_vision.synthetic.config import RouteConfig
    from deep_vision.synthetic.recording import record

    config = small_world_config(frames=frames, width=width, height=height)
    config.route = RouteConfig(**route)
    record(config, folder / "bag", workers=1)
    return folder / "bag", config


@pytest.fixture(scope="session")
def revisit_bag(tmp_path_factory):
    """A rosbag2 of the revisiting circle (640 x 192 frames)."""
    return record_route(tmp_path_factory.mktemp("revisit"), REVISIT_ROUTE, REVISIT_FRAMES, 640, 192)[0]
