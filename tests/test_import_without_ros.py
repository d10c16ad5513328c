"""Everything but deep_vision.nodes imports on a machine without ROS (rclpy hidden)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    BLOCKED = ("rclpy", "rosidl_runtime_py", "rosidl_parser", "sensor_msgs", "std_msgs", "nav_msgs",
               "geometry_msgs", "diagnostic_msgs", "builtin_interfaces", "deep_vision_msgs", "tf2_ros",
               "cv_bridge")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is hidden for this test")
            return None

    sys.meta_path.insert(0, Block())
    import deep_vision
    names = []
    for mod in pkgutil.walk_packages(deep_vision.__path__, "deep_vision."):
        if mod.name == "deep_vision.nodes" or mod.name.startswith("deep_vision.nodes."):
            continue
        importlib.import_module(mod.name)
        names.append(mod.name)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print(len(names), "modules imported")
    """
)


def test_core_imports_without_rclpy():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    count = int(result.stdout.split()[0])
    assert count >= 15


def test_cli_help_runs_without_ros():
    script = SCRIPT.split("import deep_vision\n")[0] + (
        "from deep_vision.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "synth" in result.stdout
