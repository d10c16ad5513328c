"""The ROS package as a user builds it: colcon installs the launch file, configuration, models and executables;
a copy without the linked folders fails to build, loudly."""

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
