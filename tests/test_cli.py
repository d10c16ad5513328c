"""The deep-vision command: synth writes a bag folder; known errors give one line and exit 1."""

from __future__ import annotations

import subprocess
import sys

import yaml

from deep_vision.cli.main import main
from deep_vision.io.bag import BagSequence


def small_config(tmp_path):
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump({"scene": {"ground_texel_m": 0.08, "facade_texel_m": 0.08, "margin_m": 25.0}}))
    return path


def test_synth_writes_a_bag(tmp_path, capsys):
    out = tmp_path / "synth"
    code = main(["synth", "--out", str(out), "--frames", "6", "--seed", "2", "--storage", "sqlite3",
                 "--size", "160x64", "--encoding", "rgb8", "--config", str(small_config(tmp_path)), "--workers", "1"])
    assert code == 0
    text = capsys.readouterr().out
    assert str(out) in text and "preview" in text
    bag = BagSequence(out)
    frames = list(bag)
    assert len(frames) == 6 and frames[0].image.shape == (64, 160, 3) and frames[0].encoding == "rgb8"
    world = yaml.safe_load((out / "ground_truth" / "world.yaml").read_text())
    assert world["seed"] == 2 and world["camera"]["width"] == 160


def test_known_errors_are_one_line(tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "deep_vision.cli.main", "synth", "--out", str(out), "--frames", "2"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"deep-vision synth: error: bag output already exists: {out} (remove it or choose another --out)"
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("camera:\n  widht: 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "deep_vision.cli.main", "synth", "--out", str(tmp_path / "x"), "--config", str(bad)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "unknown key(s) camera.widht" in result.stderr


def test_logs_are_quiet_one_line_per_event(tmp_path):
    """A short evaluation logs only deep_vision's own lines at INFO (one per model loaded), nothing from
    other libraries below WARNING (faiss's loader, onnxruntime), and no traceback."""
    bag = tmp_path / "bag"
    assert main(["synth", "--out", str(bag), "--frames", "8", "--size", "160x64"]) == 0
    result = subprocess.run([sys.executable, "-m", "deep_vision.cli.main", "evaluate", str(bag), "--out",
                             str(tmp_path / "eval"), "--stages", "homography,loop_closure"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    logged = [line for line in result.stderr.splitlines() if line.split(" ")[0] in ("DEBUG", "INFO", "WARNING")]
    assert all(line.split(" ")[1].startswith("deep_vision") for line in logged), logged
    assert len([line for line in logged if line.startswith("INFO")]) <= 6, logged
    assert "swigfaiss" not in result.stderr and "Traceback" not in result.stderr


def test_reports_quote_the_command_line_as_a_shell_needs_it(monkeypatch):
    """An empty argument (``--kitti-frames ''``) stays in the command a report prints, so it can be rerun."""
    from deep_vision.eval.progress import cli_command

    monkeypatch.setattr(sys, "argv", ["/x/.venv/bin/deep-vision", "evaluate", "vo-cases", "--kitti-frames", "",
                                      "--out", "a b"])
    assert cli_command() == "deep-vision evaluate vo-cases --kitti-frames '' --out 'a b'"
