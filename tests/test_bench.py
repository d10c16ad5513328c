"""The benchmark harness: a quick run on one test network writes JSON + markdown with machine and threads.
bench/run.py lists and runs the registered benchmarks; bench/gpu.py runs on the CPU as a check."""

from __future__ import annotations

import datetime
import importlib.util
import json
import socket
import sys
from pathlib import Path

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


REPO = Path(__file__).resolve().parents[1]


def _bench_script(name: str):
    """A script of bench/ (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f"bench_script_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bench_runner_lists_and_expands_every_benchmark(capsys):
    run = _bench_script("run")
    for b in run.BENCHMARKS.values():
        assert b.command[0] == "-m" or (REPO / b.command[0]).is_file(), f"{b.name}: {b.command[0]} is missing"
    assert run.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(f"{name}\n" in listed for name in run.BENCHMARKS)
    assert run.main(["all", "--quick", "--dry-run", "--bag", "/data/bag", "--results", "/tmp/res"]) == 0
    out = capsys.readouterr().out
    date = datetime.date.today().isoformat()
    assert f"bench/realtime_rates.py /data/bag --rates 1,2,3 --label current --out /tmp/res/realtime-{date} " \
           "--rates 2" in out
    assert "place_vpr_models: skipped, no --quick version" in out
    assert run.main(["vo_latency", "--repeats", "5", "--dry-run"]) == 0  # the script's own options pass through
    assert "bench/vo_latency.py --repeats 3 --out bench/results --repeats 5" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run.main(["no_such_benchmark"])


def test_gpu_bench_runs_on_the_cpu(tmp_path):
    """The GPU benchmark's CPU check: latency and throughput per network, the card's checkpoint or random weights
    where it is absent, and the DDP step under torchrun (gloo, one process)."""
    gpu = _bench_script("gpu")
    models = tmp_path / "models"
    models.mkdir()
    for name in ("vo", "homography"):
        (models / f"{name}.yaml").write_text((REPO / "models" / f"{name}.yaml").read_text())
    (models / "vo.pt").symlink_to(REPO / "models" / "vo.pt")  # homography: no checkpoint
    out = tmp_path / "out"
    assert gpu.main(["--device", "cpu", "--quick", "--threads", "1", "--networks", "vo", "homography",
                     "--ddp-network", "vo", "--models", str(models), "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["machine"]["gpu"] is None
    assert data["networks"]["vo"]["weights"].endswith("vo.pt")
    assert data["networks"]["homography"]["weights"].startswith("random")
    assert [(r["network"], r["batch"]) for r in data["throughput"]] == [("vo", 1), ("vo", 4), ("homography", 1),
                                                                        ("homography", 4)]
    assert all(0 < r["p50_ms"] <= r["p95_ms"] and r["precision"] == "fp32" for r in data["latency"])
    ddp = data["ddp"]
    assert ddp["network"] == "vo" and ddp["processes"] == 1 and ddp["backend"] == "gloo" and ddp["steps_per_s"] > 0
    md = (out / "README.md").read_text()
    assert "python bench/gpu.py --device cpu --quick" in md and "## DDP training step (torchrun)" in md
