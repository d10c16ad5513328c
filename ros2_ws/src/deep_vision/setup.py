"""deep_vision: an ament_python package that is also a plain pip package.

``colcon build`` installs it into a ROS 2 workspace (console scripts under
``lib/deep_vision`` so ``ros2 run`` finds them, see setup.cfg); ``pip install``
installs the same package and the ``deep-vision`` command into any environment.
"""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "deep_vision"
HERE = Path(__file__).resolve().parent


def _files(folder: str, pattern: str) -> list[str]:
    """Files of ``folder`` (relative to this file, as setuptools wants) matching ``pattern``; none is an error.

    launch/, config/ and models/ are links to the repository's top-level folders: a copy that lost the links
    (an archive without them, a file system without symbolic links) would otherwise install an empty share/.
    """
    found = sorted(str(p.relative_to(HERE)) for p in (HERE / folder).glob(pattern))
    if not found:
        raise SystemExit(f"deep_vision setup.py: no {pattern} in {HERE / folder} (a link to the repository's "
                         f"{folder}/ folder): clone the whole repository, with its symbolic links")
    return found

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Real-time learned perception for ROS 2 (homography, place recognition, visual odometry)",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(exclude=["test", "tests"]),
    package_data={PACKAGE: ["msg/*.msg"]},
    # launch/, config/ and models/ are links to the repository's top-level folders.
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", _files("launch", "*.launch.py")),
        (f"share/{PACKAGE}/config", _files("config", "*.yaml") + _files("config", "*.rviz") +
         _files("config", "*.json")),
        (f"share/{PACKAGE}/models", _files("models", "*.onnx") + _files("models", "*.yaml") + _files("models", "*.pt")),
    ],
    # The message and ROS packages come from ROS (apt or wheels); see package.xml.
    install_requires=[
        "numpy",
        "PyYAML",
        "opencv-python-headless",
        "rosbags>=0.10",
        "scipy",
        "matplotlib",
        "tqdm",
    ],
    extras_require={
        "ml": ["torch", "onnx", "onnxruntime"],
        "slam": ["gtsam", "faiss-cpu"],
        "test": ["pytest", "pytest-timeout"],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "deep-vision = deep_vision.cli.main:main",
            "homography_node = deep_vision.nodes.homography_node:main",
            "odometry_node = deep_vision.nodes.odometry_node:main",
            "place_recognition_node = deep_vision.nodes.place_recognition_node:main",
            "pose_graph_node = deep_vision.nodes.pose_graph_node:main",
        ],
    },
)
