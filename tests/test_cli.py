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
