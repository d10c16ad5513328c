"""Start the deep_vision nodes with one parameter file.

    ros2 launch deep_vision perception.launch.py [image:=/camera/image_raw] [camera_info:=/camera/camera_info]
        [params_file:=<share>/config/perception.yaml] [use_sim_time:=false] [backend:=] [nodes:=homography,place_recognition]
        [namespace:=] [log_level:=info]

Only wiring: the node list comes from deep_vision.nodes.registry (the same list
`deep-vision run` uses) and every parameter from the parameter file.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from deep_vision.nodes.registry import DEFAULT_NODES, NODES


def _nodes(context, *args, **kwargs):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    selected = [n.strip() for n in value("nodes").split(",") if n.strip()]
    unknown = sorted(set(selected) - set(NODES))
    if unknown:
        raise RuntimeError(f"nodes: unknown {unknown}; known: {sorted(NODES)}")
    overrides = {"use_sim_time": value("use_sim_time").lower() in ("true", "1")}
    if value("backend"):
        overrides["backend"] = value("backend")
    actions = []
    for key in selected:
        entry = NODES[key]
        actions.append(Node(
            package="deep_vision", executable=entry.executable, name=entry.name, namespace=value("namespace"),
            parameters=[value("params_file"), overrides],
            remappings=[("image", value("image")), ("camera_info", value("camera_info"))],
            arguments=["--ros-args", "--log-level", value("log_level")], output="screen"))
    return actions


def generate_launch_description():
    share = FindPackageShare("deep_vision")
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="Camera image topic"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info", description="CameraInfo topic"),
        DeclareLaunchArgument("params_file", default_value=[share, "/config/perception.yaml"],
                              description="Node parameter file"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (bag playback with --clock)"),
        DeclareLaunchArgument("backend", default_value="",
                              description="Inference backend for every node (auto, tensorrt, onnxruntime, torch, ...); "
                                          "empty: the parameter file's"),
        DeclareLaunchArgument("nodes", default_value=",".join(DEFAULT_NODES),
                              description=f"Comma-separated nodes to start, of: {', '.join(NODES)}"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of every node"),
        DeclareLaunchArgument("log_level", default_value="info", description="ROS log level"),
        OpaqueFunction(function=_nodes),
    ])
