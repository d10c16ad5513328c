"""Launch file, runner and parameter file agree; the one-process runner plays a bag through the nodes."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from conftest import REPO, require_ros, small_world_config

from deep_vision.nodes.registry import DEFAULT_NODES, INPUT_TOPICS, NODES

SETUP = (REPO / "ros2_ws" / "src" / "deep_vision" / "setup.py").read_text()


def test_every_executable_is_a_console_script():
    scripts = dict(re.findall(r'"([\w-]+) = (deep_vision[\w.]+:main)"', SETUP))
    for entry in NODES.values():
        assert scripts.get(entry.executable) == f"{entry.module}:main", entry


def _launch(monkeypatch, **arguments):
    """Run the launch file's generate_launch_description and its node function with stand-ins for ``launch`` and
    ``launch_ros`` (not installed here): (declared arguments {name: default}, the Node keyword arguments)."""
    import importlib.util
    import types

    class Recorded:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    stubs = {"launch": {"LaunchDescription": lambda entities: entities},
             "launch.actions": {"DeclareLaunchArgument": Recorded, "OpaqueFunction": Recorded},
             "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
             "launch_ros.actions": {"Node": Recorded},
             "launch_ros.substitutions": {"FindPackageShare": lambda package: f"<share of {package}>"}}
    for name, attrs in stubs.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    spec = importlib.util.spec_from_file_location("perception_launch", REPO / "launch" / "perception.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entities = module.generate_launch_description()
    declared = {e.args[0]: e.kwargs["default_value"] for e in entities if "default_value" in e.kwargs}
    context = {k: "".join(v) if isinstance(v, list) else v for k, v in declared.items()}
    context.update(arguments)
    (opaque,) = [e for e in entities if "function" in e.kwargs]
    return declared, [n.kwargs for n in opaque.kwargs["function"](context)]


def test_launch_file_wires_the_registry(monkeypatch):
    """Arguments: the inputs of INPUT_TOPICS and the run settings. Each node gets the parameter file, only the
    overrides it declares (the pose graph has no backend) and the remapping of its own inputs."""
    declared, nodes = _launch(monkeypatch, backend="onnxruntime", use_sim_time="true", namespace="/robot1",
                              gps_fix="/robot1/fix", odometry="/wheel/odom")
    assert set(declared) == set(INPUT_TOPICS) | {"params_file", "use_sim_time", "backend", "nodes", "namespace",
                                                  "log_level", "rviz", "rviz_config"}
    assert [n["name"] for n in nodes] == [NODES[k].name for k in DEFAULT_NODES]
    for kw, key in zip(nodes, DEFAULT_NODES):
        entry = NODES[key]
        params_file, overrides = kw["parameters"]
        assert params_file == "<share of deep_vision>/config/perception.yaml" and kw["namespace"] == "/robot1"
        assert set(overrides) <= entry.parameter_names() and overrides["use_sim_time"] is True
        assert ("backend" in overrides) == (key != "pose_graph")
        assert [topic for topic, _ in kw["remappings"]] == [t for t, _ in INPUT_TOPICS.values() if t in entry.inputs]
    remapped = dict(nodes[DEFAULT_NODES.index("place_recognition")]["remappings"])
    assert remapped == {"image": "/camera/image_raw", "camera_info": "/camera/camera_info", "gps/fix": "/robot1/fix"}
    assert dict(nodes[DEFAULT_NODES.index("pose_graph")]["remappings"]) == {"odometry": "/wheel/odom",
                                                                            "loop_closures": "loop_closures"}
    _, only = _launch(monkeypatch, nodes="homography")
    assert [n["name"] for n in only] == ["homography_node"]
    _, with_rviz = _launch(monkeypatch, nodes="odometry,pose_graph", rviz="true", namespace="/robot1")
    assert [n["name"] for n in with_rviz] == ["odometry_node", "pose_graph_node", "rviz2"]
    assert with_rviz[2]["arguments"] == ["-d", "<share of deep_vision>/config/deep_vision.rviz"]
    assert with_rviz[2]["namespace"] == "/robot1"
    assert with_rviz[1]["parameters"][1]["publish_markers"] is True  # the view's loop-closure lines
    assert "publish_markers" not in with_rviz[0]["parameters"][1]  # only the pose graph declares it
    assert all("publish_markers" not in n["parameters"][1] for n in nodes)  # off without rviz


def test_registry_inputs_are_what_the_nodes_subscribe():
    for entry in NODES.values():
        source = (REPO / "ros2_ws" / "src" / "deep_vision" / Path(*entry.module.split("."))).with_suffix(".py")
        subscribed = re.findall(r'subscribe\(self,\s*"[^"]+",\s*"([^"]+)"', source.read_text())
        assert tuple(subscribed) == entry.inputs, entry


def test_every_parameter_in_the_file_is_declared_by_its_node():
    require_ros()
    import importlib

    from deep_vision.params import load_params

    params = load_params(REPO / "config" / "perception.yaml")
    for entry in NODES.values():
        declared = {p.name for p in importlib.import_module(entry.module).PARAMS}
        assert entry.name in params, f"{entry.name} has no section in perception.yaml"
        assert set(params[entry.name]) <= declared, set(params[entry.name]) - declared
    assert set(DEFAULT_NODES) <= set(NODES)


def test_parameter_file_applies_in_a_namespace(tmp_path):
    """The parameter file's keys (/**/<node>) reach a node started in a namespace, as a launch namespace
    (-r __ns:=/robot1) starts it: a non-default value is read back."""
    require_ros()
    import rclpy
    import yaml

    params = yaml.safe_load((REPO / "config" / "perception.yaml").read_text())
    assert all(key.startswith("/**/") for key in params), list(params)
    params["/**/homography_node"]["ros__parameters"]["refine_width"] = 200  # default 256
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "--params-file", str(path), "-r", "__ns:=/robot1"])
    try:
        node = NODES["homography"].load()(context=context)
        assert node.get_fully_qualified_name() == "/robot1/homography_node"
        assert node.get_parameter("refine_width").value == 200
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_runner_plays_a_bag_through_the_nodes(tmp_path):
    require_ros()
    from deep_vision.nodes.runner import run
    from deep_vision.synthetic.recording import record

    rec = record(small_world_config(frames=12), tmp_path / "bag", workers=1)
    summary = run(REPO / "config" / "perception.yaml", ["homography", "place_recognition"], bag=rec.bag,
                  rate=1.0, drain_s=3.0, duration_s=60.0)  # real time: 10 Hz, as a camera
    assert summary["played"]["/camera/image_raw"] == 12
    assert summary["played"]["/tf_static"] == 1  # tf2_msgs: set-up builds it where ROS 2 lacks it
    assert summary["published"].get("homography", 0) >= 10


def test_unknown_node_and_missing_file_are_named(tmp_path):
    require_ros()
    from deep_vision.errors import ConfigError
    from deep_vision.nodes.runner import run
    from deep_vision.params import load_params

    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="unknown \\['lidar'\\]"):
        run(REPO / "config" / "perception.yaml", ["lidar"], duration_s=1.0)


@pytest.mark.parametrize("reliability", ["best_effort", "reliable"])
def test_best_effort_and_reliable_publishers_reach_the_node(ros_harness, reliability):
    """Image subscriptions are SensorData (best effort) by default: both kinds of camera driver reach them."""
    import numpy as np
    from deep_vision_msgs.msg import Homography
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from deep_vision.nodes.homography_node import HomographyNode

    h = ros_harness
    h.add_node(lambda context: HomographyNode(context=context, parameter_overrides=[
        Parameter("model_path", value=str(REPO / "models" / "homography.onnx")),
        Parameter("backend", value="onnxruntime"), Parameter("refine", value=False)]))
    out = h.collect("homography", Homography)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort"
                     else ReliabilityPolicy.RELIABLE)
    pub = h.publisher("image", Image, qos)
    h.wait_for_subscribers(pub)
    img = np.random.default_rng(0).integers(0, 255, (60, 80), dtype=np.uint8)
    for k in range(3):
        msg = Image(height=60, width=80, encoding="mono8", step=80, data=img.tobytes())
        msg.header.stamp.sec = 100 + k
        pub.publish(msg)
        h.spin_for(0.2)
    h.wait_for(out, 2, timeout=10.0)


def test_a_node_checks_its_overrides_with_the_schema():
    """A node started with a misspelt or out-of-range parameter fails with the schema's one line, as a parameter
    file does in run/evaluate."""
    require_ros()
    import rclpy
    from deep_vision.errors import ConfigError
    from deep_vision.nodes.pose_graph_node import PoseGraphNode
    from rclpy.parameter import Parameter

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        for override, message in [
                (Parameter("loop_max_chi", value=5.0),
                 "parameter pose_graph_node: unknown parameter 'loop_max_chi' (did you mean 'loop_max_chi2'?)"),
                (Parameter("queue_depth", value=0), "parameter pose_graph_node.queue_depth: 0 is not an integer in "
                                                    "1..10000")]:
            with pytest.raises(ConfigError) as err:
                PoseGraphNode(context=context, parameter_overrides=[override])
            assert str(err.value) == message
    finally:
        rclpy.shutdown(context=context)
