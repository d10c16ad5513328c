"""Benchmark harness: latency and throughput per model and backend, and of the classical baselines.

For each registered model (random weights: latency does not depend on them) and each
batch size, the model is exported to ONNX with the usual checks, loaded on every
requested backend through :func:`~deep_vision.inference.selection.load_backend`,
warmed up, then timed call by call. Classical baselines — the methods the networks
are compared against — are timed in the same run; later code adds its own with
:func:`register_baseline`. Results go to ``<out>/<date>-<host>.json`` and ``.md``,
with the machine (CPU model, cores, GPU), thread counts and library versions.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deep_vision.errors import BackendUnavailableError, ConfigError
from deep_vision.inference import devices

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchSettings:
    """How long to time each case."""

    warmup: int  # untimed calls first (allocations, lazy initialisation, caches)
    runs: int  # timed calls, at most ...
    max_seconds: float  # ... or until this much time has passed (at least min_runs)
    batches: tuple[int, ...]  # batch sizes for the networks
    min_runs: int = 10
    quick: bool = False


QUICK = BenchSettings(warmup=3, runs=50, max_seconds=1.0, batches=(1,), quick=True)
FULL = BenchSettings(warmup=20, runs=300, max_seconds=8.0, batches=(1, 8))


@dataclass
class Timing:
    """Latency of one case: a model on a backend at a batch size, or a baseline."""

    case: str
    kind: str  # "network" or "baseline"
    backend: str  # e.g. onnxruntime:cpu, torch:cpu, opencv:cpu
    device: str
    precision: str
    batch: int
    threads: int | str
    runs: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    throughput_per_s: float  # samples per second at this batch size (batch / mean latency)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchReport:
    results: list[Timing]
    machine: dict[str, Any]
    settings: dict[str, Any]
    command: str
    skipped: list[str]
    json_path: Path | None = None
    md_path: Path | None = None


#: Baseline name → (setup returning the zero-argument callable to time, description).
BASELINES: dict[str, tuple[Callable[[], Callable[[], Any]], str]] = {}


def register_baseline(name: str, setup: Callable[[], Callable[[], Any]], description: str = "") -> None:
    """Add a classical baseline to every bench run.

    ``setup()`` runs once, untimed (load images, build detectors), and returns the
    callable that is timed; that callable may set ``.extra`` (a dict, e.g. accuracy
    on the set-up data) on itself to add notes to the result.
    """
    if name in BASELINES:
        raise ConfigError(f"baseline {name!r} is already registered")
    BASELINES[name] = (setup, description)


# -- timing ------------------------------------------------------------------------------------
def time_call(fn: Callable[[], Any], settings: BenchSettings) -> np.ndarray:
    """Seconds per call of ``fn`` after ``settings.warmup`` untimed calls."""
    for _ in range(settings.warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < settings.runs:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= settings.min_runs and time.perf_counter() - start > settings.max_seconds:
            break
    return np.asarray(times)


def summarize(times: np.ndarray, batch: int) -> dict[str, float]:
    ms = times * 1e3
    return {
        "runs": int(len(times)),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p95_ms": round(float(np.percentile(ms, 95)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "throughput_per_s": round(float(batch / times.mean()), 1),
    }


def machine_info() -> dict[str, Any]:
    import cv2
    import onnxruntime
    import torch

    return {
        "host": socket.gethostname(),
        "cpu": devices.cpu_model(),
        "cores": devices.cpu_cores(),
        # Other processes' load when the run started: timings on a busy machine are slower and noisier.
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "gpu": devices.gpu_name() or None,
        "compute_capability": devices.compute_capability() or None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "onnxruntime": str(onnxruntime.__version__),
        "onnxruntime_providers": devices.onnxruntime_providers(),
        "tensorrt": devices.tensorrt_version() or None,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
    }


# -- networks ----------------------------------------------------------------------------------
def _model_spec(model: Any, batch: int) -> dict[str, Any]:
    try:
        return model.input_spec(batch)
    except TypeError:  # input_spec() without a batch argument
        return model.input_spec()


def bench_network(name: str, backends: Sequence[str], settings: BenchSettings, workdir: Path,
                  threads: int | None, skipped: list[str]) -> list[Timing]:
    """Export the registered model ``name`` at each batch size and time it on ``backends``."""
    import torch

    from deep_vision.inference.export import example_inputs_for, export_onnx
    from deep_vision.inference.selection import load_backend
    from deep_vision.models import build_model

    torch.manual_seed(0)
    model = build_model(name).eval()
    checkpoint = workdir / f"{name}.pt"
    torch.save(model.state_dict(), checkpoint)
    results = []
    for batch in settings.batches:
        example = example_inputs_for(model, batch)
        if example is None:
            skipped.append(f"{name} batch {batch}: the model gives no example inputs at this batch size")
            continue
        spec = _model_spec(model, batch)
        onnx_path = workdir / f"{name}-b{batch}.onnx"
        card = export_onnx(model, example, onnx_path, output_names=[o["name"] for o in spec["outputs"]],
                           dynamic_axes=getattr(model, "dynamic_axes", None), random_trials=1,
                           card_fields={"model_class": name, "model_config": getattr(model, "conf", {}),
                                        "checkpoint": checkpoint.name, "inputs": spec["inputs"],
                                        "outputs": spec["outputs"]})
        feeds = {k: v.numpy() for k, v in example.items()}
        for label in backends:
            try:
                backend = load_backend(onnx_path, label, threads=threads, engine_cache=workdir / "engines",
                                       torch_module_factory=lambda: model)
            except BackendUnavailableError as exc:
                skipped.append(f"{name} on {label}: {exc}")
                continue
            with backend:
                stats = summarize(time_call(lambda: backend.run(feeds), settings), batch)
                used_threads = backend.details.get("intra_op_threads", backend.details.get("threads", "-"))
                results.append(Timing(case=name, kind="network", backend=backend.label, device=backend.device,
                                      precision=backend.precision, batch=batch, threads=used_threads,
                                      extra={"onnx_sha256": card.sha256[:12]}, **stats))
            logger.info("%s b%d %s: p50 %.3f ms", name, batch, backend.label, stats["p50_ms"])
    return results


# -- baselines ---------------------------------------------------------------------------------
def _orb_ransac_setup() -> Callable[[], Any]:
    """ORB features + brute-force Hamming matching + RANSAC homography between two consecutive
    synthetic frames at KITTI size (1241 x 376): the classical baseline of the homography network."""
    import cv2

    from deep_vision.synthetic import SyntheticSequence, SyntheticWorldConfig
    from deep_vision.synthetic.config import SceneConfig

    config = SyntheticWorldConfig(frames=2, scene=SceneConfig(ground_texel_m=0.08, facade_texel_m=0.08,
                                                               margin_m=25.0))
    seq = SyntheticSequence(config)
    prev, cur = seq.image(0), seq.image(1)
    truth = seq.ground_homography(1)
    orb = cv2.ORB_create(nfeatures=1000)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)

    def orb_ransac_homography() -> np.ndarray | None:
        k1, d1 = orb.detectAndCompute(prev, None)
        k2, d2 = orb.detectAndCompute(cur, None)
        if d1 is None or d2 is None:
            return None
        matches = matcher.match(d1, d2)
        if len(matches) < 4:
            return None
        src = np.float32([k1[m.queryIdx].pt for m in matches])
        dst = np.float32([k2[m.trainIdx].pt for m in matches])
        H, _ = cv2.findHomography(src, dst, cv2.RANSAC, 3.0)
        return H

    H = orb_ransac_homography()
    h, w = prev.shape[:2]
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], float).T
    # Mean corner error against the ground-plane homography; large where buildings dominate the matches.
    if H is not None:
        a, b = H @ corners, truth @ corners
        mace = float(np.linalg.norm(a[:2] / a[2] - b[:2] / b[2], axis=0).mean())
    else:
        mace = float("nan")
    orb_ransac_homography.extra = {"image": f"{w}x{h} grey", "features": 1000,
                                   "corner_error_px_vs_ground_plane": round(mace, 2)}
    return orb_ransac_homography


register_baseline("orb_ransac_homography", _orb_ransac_setup,
                  "OpenCV ORB (1000) + Hamming cross-check matching + RANSAC homography, two 1241x376 frames")


def _sift_ransac_setup() -> Callable[[], Any]:
    """SIFT + ratio test + RANSAC (deep_vision.estimators.classical) on two consecutive 1241x376 synthetic frames."""
    from deep_vision.estimators.classical import FeatureHomography
    from deep_vision.synthetic import SyntheticSequence, SyntheticWorldConfig
    from deep_vision.synthetic.config import SceneConfig

    config = SyntheticWorldConfig(frames=2, scene=SceneConfig(ground_texel_m=0.08, facade_texel_m=0.08,
                                                               margin_m=25.0))
    seq = SyntheticSequence(config)
    prev, cur = seq.image(0), seq.image(1)
    sift = FeatureHomography("sift")

    def sift_ransac_homography() -> np.ndarray | None:
        return sift.estimate(prev, cur)

    sift_ransac_homography()
    sift_ransac_homography.extra = {"image": f"{prev.shape[1]}x{prev.shape[0]} grey", "features": sift.max_features,
                                    "inliers": sift.last_inliers}
    return sift_ransac_homography


register_baseline("sift_ransac_homography", _sift_ransac_setup,
                  "OpenCV SIFT (2000) + ratio test + RANSAC homography, two 1241x376 frames")


def bench_baselines(names: Sequence[str], settings: BenchSettings, threads: int | None = None) -> list[Timing]:
    """Time the registered baselines ``names``; ``threads`` caps OpenCV's threads (restored afterwards)."""
    import cv2

    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"unknown baseline(s) {unknown}; registered: {', '.join(sorted(BASELINES))}")
    previous = cv2.getNumThreads()
    if threads is not None:
        cv2.setNumThreads(threads)
    results = []
    try:
        for name in names:
            setup, description = BASELINES[name]
            fn = setup()
            stats = summarize(time_call(fn, settings), 1)
            results.append(Timing(case=name, kind="baseline", backend="opencv:cpu", device="cpu", precision="fp32",
                                  batch=1, threads=cv2.getNumThreads(),
                                  extra={"description": description, **getattr(fn, "extra", {})}, **stats))
            logger.info("%s: p50 %.3f ms", name, stats["p50_ms"])
    finally:
        cv2.setNumThreads(previous)
    return results


# -- the run -----------------------------------------------------------------------------------
def run_bench(models: Sequence[str], backends: Sequence[str], settings: BenchSettings, out_dir: str | Path, *,
              baselines: Sequence[str] | None = None, threads: int | Sequence[int] | None = None,
              command: str = "") -> BenchReport:
    """Time ``models`` on ``backends`` and the ``baselines`` (default: all registered); write JSON + markdown.

    ``threads``: CPU threads for ONNX Runtime (intra-op), torch and OpenCV, one count or
    several (each case runs once per count); default one per core.
    """
    counts = [threads] if isinstance(threads, int) else list(threads or [devices.cpu_cores()])
    skipped: list[str] = []
    machine = machine_info()  # before the run: the load average is other processes', not ours
    results = []
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="deep_vision_bench_") as tmp:
            for name in models:
                results += bench_network(name, backends, settings, Path(tmp), count, skipped)
        results += bench_baselines(list(BASELINES) if baselines is None else baselines, settings, count)
    report = BenchReport(results=results, machine=machine, command=command, skipped=skipped,
                         settings={**asdict(settings), "threads": counts[0] if len(counts) == 1 else counts,
                                   "date": datetime.datetime.now().isoformat(timespec="seconds")})
    write_report(report, Path(out_dir))
    return report


def write_report(report: BenchReport, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{datetime.date.today().isoformat()}-{report.machine['host']}"
    data = {"command": report.command, "machine": report.machine, "settings": report.settings,
            "results": [asdict(r) for r in report.results], "skipped": report.skipped}
    report.json_path = stem.with_suffix(".json")
    report.md_path = stem.with_suffix(".md")
    for path, text in ((report.json_path, json.dumps(data, indent=2) + "\n"), (report.md_path, markdown(report))):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def markdown(report: BenchReport) -> str:
    m, s = report.machine, report.settings
    lines = [
        "# Inference benchmark", "",
        f"Produced by `{report.command or 'deep-vision bench'}` on {s['date']}.", "",
        f"- machine: {m['host']}, {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}; load average "
        f"{m['load_average_1m']} when the run started (other processes share the cores: above ~0.5, expect "
        "slower and noisier timings, multi-threaded torch most of all)",
        f"- libraries: torch {m['torch']}, onnxruntime {m['onnxruntime']} ({', '.join(m['onnxruntime_providers'])}),"
        f" TensorRT {m['tensorrt'] or 'absent'}, OpenCV {m['opencv']}, numpy {m['numpy']}",
        f"- threads: {s['threads']} (ONNX Runtime intra-op, torch.set_num_threads, cv2.setNumThreads); warm-up "
        f"{s['warmup']} "
        f"calls, then up to {s['runs']} calls or {s['max_seconds']} s per case",
        "- latency per call in ms (one call = one batch); throughput in samples/s", "",
        "| case | backend | device | precision | batch | threads | runs | p50 | p95 | p99 | throughput |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.results:
        lines.append(f"| {r.case} | {r.backend} | {r.device} | {r.precision} | {r.batch} | {r.threads} | {r.runs} "
                     f"| {r.p50_ms:.3f} | {r.p95_ms:.3f} | {r.p99_ms:.3f} | {r.throughput_per_s:,.0f} |")
    pairs = _ort_vs_torch(report.results)
    if pairs:
        lines += ["", "## ONNX Runtime CPU vs PyTorch CPU (p50)", "",
                  "| network | batch | threads | onnxruntime ms | torch ms | torch / onnxruntime |",
                  "|---|---:|---:|---:|---:|---:|"]
        for case, batch, threads, o, t in pairs:
            lines.append(f"| {case} | {batch} | {threads} | {o:.3f} | {t:.3f} | {t / o:.2f}× |")
    baselines = {r.case: r for r in report.results if r.kind == "baseline"}  # notes are the same per thread count
    if baselines:
        lines += ["", "## Baselines", ""]
        for r in baselines.values():
            notes = ", ".join(f"{k}: {v}" for k, v in r.extra.items())
            lines.append(f"- **{r.case}**: {notes}")
    if report.skipped:
        lines += ["", "## Skipped", ""] + [f"- {s}" for s in report.skipped]
    return "\n".join(lines) + "\n"


def _ort_vs_torch(results: Sequence[Timing]) -> list[tuple[str, int, Any, float, float]]:
    by = {(r.case, r.batch, r.threads, r.backend): r.p50_ms for r in results if r.kind == "network"}
    return [(case, batch, threads, p50, by[(case, batch, threads, "torch:cpu")])
            for (case, batch, threads, backend), p50 in by.items()
            if backend == "onnxruntime:cpu" and (case, batch, threads, "torch:cpu") in by]
