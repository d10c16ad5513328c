"""One parameter schema (deep_vision.params): the shipped file, the reference and every bad value, one line each."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO
from deep_vision.errors import ConfigError
from deep_vision.params import SCHEMA, load_params, parameter_table


def test_the_shipped_file_lists_every_parameter_at_its_declared_default():
    """config/perception.yaml is what a node gets without it: same keys, same values, for every node."""
    shipped = load_params(REPO / "config" / "perception.yaml", complete=False)
    assert set(shipped) == set(SCHEMA)
    for node, params in SCHEMA.items():
        assert list(shipped[node]) == [p.name for p in params], node
        for p in params:
            assert shipped[node][p.name] == p.default, f"{node}.{p.name}: file {shipped[node][p.name]!r}, " \
                                                       f"declared {p.default!r}"


def test_the_parameter_reference_is_generated_from_the_schema():
    doc = (REPO / "docs" / "parameters.md").read_text()
    begin = doc.index("<!-- parameters:begin")
    start = doc.index("\n", begin) + 1
    end = doc.index("<!-- parameters:end -->")
    assert doc[start:end].strip() == parameter_table().strip(), \
        "docs/parameters.md is stale: regenerate it with deep_vision.params.parameter_table()"


def _file(tmp_path, text: str):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("/**/place_recognition_node:\n  ros__parameters:\n    min_inlier: 10\n",
     "place_recognition_node: unknown parameter 'min_inlier' (did you mean 'min_inliers'?)"),
    ("/**/odometry_node:\n  ros__parameters:\n    threads: many\n",
     "odometry_node.threads: 'many' is not an integer in 0..64"),
    ("/**/place_recognition_node:\n  ros__parameters:\n    ransac_px: abc\n",
     "place_recognition_node.ransac_px: 'abc' is not a number in 0.1..50"),
    ("/**/homography_node:\n  ros__parameters:\n    queue_depth: 0\n",
     "homography_node.queue_depth: 0 is not an integer in 1..100"),
    ("/**/homography_node:\n  ros__parameters:\n    refine: 1\n",
     "homography_node.refine: 1 is not true or false"),
    ("/**/odometry_node:\n  ros__parameters:\n    mode: hybird\n",
     "odometry_node.mode: 'hybird' is not one of network, hybrid"),
    ("/**/odometry_nod:\n  ros__parameters:\n    mode: hybrid\n",
     "unknown node section '/**/odometry_nod' (did you mean 'odometry_node'?)"),
    ("/**/odometry_node:\n  ros__parameters:\n    mode: a: b\n",
     ":3:12: YAML syntax error: mapping values are not allowed here"),
    ("/**/odometry_node:\n  mode: hybrid\n", "section '/**/odometry_node' has no ros__parameters"),
])
def test_bad_values_are_one_line_naming_node_parameter_value_and_expectation(tmp_path, text, message):
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value) and "\n" not in str(err.value)


def test_values_are_completed_and_typed():
    p = load_params(REPO / "config" / "perception.yaml")
    assert p["pose_graph_node"]["loop_kernel"] == "cauchy"
    path = REPO / "config" / "perception.yaml"
    assert load_params(path, complete=False)["odometry_node"]["camera_pose"] == \
        [0.0, 0.0, 1.65, 0.5, -0.5, 0.5, -0.5]


@pytest.mark.parametrize("command", [["evaluate", "BAG"], ["run", "--nodes", "homography", "--duration", "0.1"]])
def test_cli_refuses_a_bad_parameter_file_in_one_line(tmp_path, command):
    """``evaluate`` and ``run`` check the file before anything else (no bag needed, no model loaded)."""
    path = _file(tmp_path, "/**/homography_node:\n  ros__parameters:\n    min_corelation: 0.5\n")
    result = subprocess.run([sys.executable, "-m", "deep_vision.cli.main", *command, "--params", str(path)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert lines[-1].endswith("homography_node: unknown parameter 'min_corelation' (did you mean "
                              "'min_correlation'?)"), result.stderr
