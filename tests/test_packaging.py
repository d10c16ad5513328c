"""The ROS package as a user builds it: colcon installs the launch file, configuration, models and executables;
a copy without the linked folders fails to build, loudly; package.xml declares what the nodes import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from deep_vision.nodes.registry import NODES

PACKAGE = REPO / "ros2_ws" / "src" / "deep_vision"


def _colcon() -> Path | None:
    found = shutil.which("colcon", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return Path(found) if found else None


def test_colcon_build_installs_launch_config_models_and_executables(tmp_path):
    colcon = _colcon()
    if colcon is None:
        pytest.skip("colcon is not installed (make setup installs it)")
    prefix = str(Path(sys.executable).parent.parent)
    env = {**os.environ, "AMENT_PREFIX_PATH": os.environ.get("AMENT_PREFIX_PATH", prefix),
           "CMAKE_PREFIX_PATH": os.environ.get("CMAKE_PREFIX_PATH", prefix),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([str(colcon), "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(PACKAGE),
                           "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
                           "--event-handlers", "console_cohesion-", "status-"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    share = tmp_path / "install" / "deep_vision" / "share" / "deep_vision"
    assert (share / "launch" / "perception.launch.py").is_file() and (share / "config" / "perception.yaml").is_file()
    models = sorted(p.name for p in (REPO / "models").iterdir() if p.suffix in (".onnx", ".yaml", ".pt"))
    assert models and sorted(p.name for p in (share / "models").iterdir()) == models
    executables = {p.name for p in (tmp_path / "install" / "deep_vision" / "lib" / "deep_vision").iterdir()}
    assert {entry.executable for entry in NODES.values()} <= executables


def test_a_copy_without_the_linked_folders_fails_to_build(tmp_path):
    """launch/, config/ and models/ are links to the repository's folders; where they do not resolve (an
    archive or file system without them), setup.py stops with the folder named instead of installing nothing."""
    copy = tmp_path / "deep_vision"
    shutil.copytree(PACKAGE, copy, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    assert os.path.islink(copy / "launch") and not (copy / "launch").exists()  # the link dangles here
    done = subprocess.run([sys.executable, "setup.py", "--name"], cwd=copy, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert "no *.launch.py in" in done.stderr and "clone the whole repository" in done.stderr, done.stderr


#: Imported module -> the package.xml key that provides it (ROS packages by their own name).
ROSDEP_KEYS = {"numpy": "python3-numpy", "yaml": "python3-yaml", "cv2": "python3-opencv", "scipy": "python3-scipy",
               "matplotlib": "python3-matplotlib", "tqdm": "python3-tqdm", "faiss": "python3-faiss",
               "onnxruntime": "python3-onnxruntime-pip", "rosbags": "python3-rosbags-pip", "mcap": "python3-mcap-pip",
               "tf2_ros": "tf2_ros_py"}
#: Imported by the nodes but not declared, each with why (package.xml says the same in a comment).
UNDECLARED = {"gtsam": "no rosdep key gives its Python module: pip install gtsam",
              "torch": "optional backend (.pt checkpoints)",
              "tensorrt": "optional backend, installed with TensorRT (JetPack)",
              "onnx": "TensorRT engines built from an ONNX file without a model card",
              "zstandard": "compressed MCAP chunks: installed with mcap",
              "lz4": "compressed MCAP chunks: installed with mcap"}
#: Of those, the ones the nodes must start without: imported inside functions only.
OPTIONAL = {"torch", "tensorrt", "onnx", "zstandard", "lz4"}


def _imports(start: list[Path]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Third-party top-level modules imported from ``start`` and the deep_vision modules they reach:
    (at any level, at module level only), each {module: files}."""
    import ast

    def module_file(name: str) -> Path | None:
        base = PACKAGE / Path(*name.split("."))
        for f in (base.with_suffix(".py"), base / "__init__.py"):
            if f.is_file():
                return f
        return None

    found: tuple[dict[str, set[str]], dict[str, set[str]]] = ({}, {})
    for top_level_only, out in ((False, found[0]), (True, found[1])):
        stack, done = list(start), set()
        while stack:
            f = stack.pop()
            if f in done:
                continue
            done.add(f)
            tree = ast.parse(f.read_text())
            nodes = ast.walk(tree) if not top_level_only else (
                n for stmt in tree.body for n in ([stmt] + (stmt.body if isinstance(stmt, ast.Try) else [])))
            for node in nodes:
                if isinstance(node, ast.Import):
                    names = [(a.name, []) for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [(node.module, [a.name for a in node.names])]
                else:
                    continue
                for name, members in names:
                    if name.split(".")[0] != "deep_vision":
                        out.setdefault(name.split(".")[0], set()).add(str(f.relative_to(REPO)))
                        continue
                    parts = name.split(".")
                    for target in [".".join(parts[:i]) for i in range(2, len(parts) + 1)] + \
                            [f"{name}.{m}" for m in members]:
                        if (mf := module_file(target)) is not None and mf not in done:
                            stack.append(mf)
    return found


def test_package_xml_declares_what_the_nodes_and_launch_file_import():
    """Every module the nodes and the launch file import, however deep in deep_vision, is a dependency in
    package.xml (rosdep installs it), or listed here as undeclared with why; the optional ones are imported
    inside functions only, so that the nodes start without them."""
    import xml.etree.ElementTree as ET

    xml = ET.parse(PACKAGE / "package.xml").getroot()
    declared = {e.text for e in xml if e.tag in ("depend", "exec_depend")}
    start = [PACKAGE / Path(*e.module.split(".")).with_suffix(".py") for e in NODES.values()]
    start += [REPO / "launch" / "perception.launch.py"]
    anywhere, top_level = _imports(start)
    third_party = {m: files for m, files in anywhere.items() if m not in sys.stdlib_module_names}
    missing = {m: sorted(files)[0] for m, files in third_party.items()
               if ROSDEP_KEYS.get(m, m) not in declared and m not in UNDECLARED}
    assert not missing, f"imported but not in package.xml: {missing}"
    assert {"rclpy", "launch_ros", "tf2_ros", "gtsam", "faiss", "onnxruntime"} <= set(third_party)  # the scan works
    assert not OPTIONAL & set(top_level), {m: top_level[m] for m in OPTIONAL & set(top_level)}
    for m in UNDECLARED:
        assert m in (PACKAGE / "package.xml").read_text(), f"package.xml should say why {m} is not declared"
