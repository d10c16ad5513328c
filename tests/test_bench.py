"""The benchmark harness: a quick run on one test network writes JSON + markdown with machine and threads."""

from __future__ import annotations

import datetime
import json
import socket

import pytest

from deep_vision.cli.main import main
from deep_vision.errors import ConfigError
from deep_vision.inference import bench


def test_quick_bench_writes_results(tmp_path, monkeypatch):
    calls = []

    def setup():
        def baseline():
            calls.append(1)
        baseline.extra = {"note": "counts calls"}
        return baseline

    monkeypatch.setitem(bench.BASELINES, "counting_baseline", (setup, "a test baseline"))
    report = bench.run_bench(["testnet_linear"], ["onnxruntime:cpu", "torch:cpu"], bench.QUICK, tmp_path,
                             threads=1, command="deep-vision bench --quick (test)")
    stem = f"{datetime.date.today().isoformat()}-{socket.gethostname()}"
    assert report.json_path == tmp_path / f"{stem}.json" and report.md_path == tmp_path / f"{stem}.md"
    data = json.loads(report.json_path.read_text())
    assert data["command"] == "deep-vision bench --quick (test)"
    assert {"cpu", "cores", "gpu", "host", "torch", "onnxruntime"} <= set(data["machine"])
    assert data["machine"]["cores"] >= 1 and data["settings"]["threads"] == 1
    rows = {(r["case"], r["backend"]): r for r in data["results"]}
    assert set(rows) == {("testnet_linear", "onnxruntime:cpu"), ("testnet_linear", "torch:cpu"),
                         ("orb_ransac_homography", "opencv:cpu"), ("sift_ransac_homography", "opencv:cpu"),
                         ("counting_baseline", "opencv:cpu")}
    for r in data["results"]:
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] and r["runs"] >= bench.QUICK.min_runs
        assert r["throughput_per_s"] > 0 and r["batch"] == 1
    assert rows[("testnet_linear", "onnxruntime:cpu")]["threads"] == 1
    assert rows[("testnet_linear", "torch:cpu")]["threads"] == 1
    assert rows[("orb_ransac_homography", "opencv:cpu")]["threads"] == 1
    assert len(calls) >= bench.QUICK.warmup + bench.QUICK.min_runs
    orb = rows[("orb_ransac_homography", "opencv:cpu")]["extra"]
    assert orb["image"] == "1241x376 grey" and orb["corner_error_px_vs_ground_plane"] >= 0
    md = report.md_path.read_text()
    assert "Produced by `deep-vision bench --quick (test)`" in md
    assert "| testnet_linear | onnxruntime:cpu | cpu | fp32 | 1 | 1 |" in md
    assert "## ONNX Runtime CPU vs PyTorch CPU (p50)" in md and "| testnet_linear | 1 | 1 |" in md
    assert "counting_baseline" in md and "note: counts calls" in md


def test_register_baseline_refuses_duplicates(monkeypatch):
    monkeypatch.setattr(bench, "BASELINES", dict(bench.BASELINES))
    bench.register_baseline("mine", lambda: (lambda: None))
    with pytest.raises(ConfigError, match="already registered"):
        bench.register_baseline("mine", lambda: (lambda: None))
    with pytest.raises(ConfigError, match=r"unknown baseline\(s\) \['nope'\]"):
        bench.bench_baselines(["nope"], bench.QUICK)


def test_cli_bench(tmp_path, capsys, monkeypatch):
    from deep_vision.inference import devices

    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    code = main(["bench", "--quick", "--models", "testnet_lstm", "--backends", "onnxruntime:cpu", "torch:cuda",
                 "--threads", "1", "--no-baselines", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "Produced by `deep-vision bench --quick --models testnet_lstm --backends onnxruntime:cpu torch:cuda " \
           f"--threads 1 --no-baselines --out {tmp_path}`" in out
    assert "## Skipped" in out and "testnet_lstm on torch:cuda" in out  # no GPU here: recorded, not fatal
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert [r["backend"] for r in data["results"]] == ["onnxruntime:cpu"]
