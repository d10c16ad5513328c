"""Start the deep_vision nodes with one parameter file.

    ros2 launch deep_vision perception.launch.py [image:=/camera/image_raw] [camera_info:=/camera/camera_info]
        [gps_fix:=/gps/fix] [odometry:=odometry] [loop_closures:=loop_closures]
        [params_file:=<share>/config/perception.yaml] [use_sim_time:=false] [backend:=]
        [nodes:=homography,place_recognition,odometry,pose_graph] [namespace:=] [log_level:=info]
        [rviz:=false] [rviz_config:=<share>/config/deep_vision.rviz]

Only wiring: the node list, each node's input topics and declared parameters come from
deep_vision.nodes.registry (the same table `deep-vision run` uses), every parameter from the parameter file.
``rviz:=true`` also starts RViz2 with the package's view (camera image, TF, odometry, keyframe path, loop
closures) and has the pose graph publish its loop-closure markers.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from deep_vision.nodes.registry import DEFAULT_NODES, INPUT_TOPICS, NODES, node_overrides, remappings


def _nodes(context, *args, **kwargs):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    selected = [n.strip() for n in value("nodes").split(",") if n.strip()]
    unknown = sorted(set(selected) - set(NODES))
    if unknown:
        raise RuntimeError(f"nodes: unknown {unknown}; known: {sorted(NODES)}")
    overrides = {"use_sim_time": value("use_sim_time").lower() in ("true", "1")}
    if value("backend"):
        overrides["backend"] = value("backend")
    rviz = value("rviz").lower() in ("true", "1")
    if rviz:
        overrides["publish_markers"] = True  # the pose graph's loop-closure lines, which the view shows
    targets = {key: value(key) for key in INPUT_TOPICS}
    actions = []
    for key in selected:
        entry = NODES[key]
        actions.append(Node(
            package="deep_vision", executable=entry.executable, name=entry.name, namespace=value("namespace"),
            parameters=[value("params_file"), node_overrides(entry, overrides)],
            remappings=remappings(entry, targets),
            arguments=["--ros-args", "--log-level", value("log_level")], output="screen"))
    if rviz:
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", namespace=value("namespace"),
                            arguments=["-d", value("rviz_config")],
                            parameters=[{"use_sim_time": overrides["use_sim_time"]}], output="screen"))
    return actions


def generate_launch_description():
    share = FindPackageShare("deep_vision")
    return LaunchDescription([
        *[DeclareLaunchArgument(key, default_value=default, description=f"Input topic {topic!r} of the nodes")
          for key, (topic, default) in INPUT_TOPICS.items()],
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
        DeclareLaunchArgument("rviz", default_value="false", description="Also start RViz2 with rviz_config"),
        DeclareLaunchArgument("rviz_config", default_value=[share, "/config/deep_vision.rviz"],
                              description="RViz2 configuration (default: the package's view)"),
        OpaqueFunction(function=_nodes),
    ])
