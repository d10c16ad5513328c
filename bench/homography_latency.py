"""Benchmark: homography estimation latency per full-resolution frame pair (network + refinement vs SIFT/ORB).

Usage: .venv/bin/python bench/homography_latency.py [--model models/homography.onnx] [--threads 2]
Times, in one run on the same frame pairs (KITTI 00 frames 100-159, 1241x376, consecutive):
the estimator with ONNX Runtime (refinement on, and the network alone), SIFT + RANSAC and ORB + RANSAC.
Writes bench/results/<date>-<host>-homography-latency.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from deep_vision.estimators.classical import FeatureHomography  # noqa: E402
from deep_vision.estimators.homography import HomographyEstimator  # noqa: E402
from deep_vision.eval.homography_pairs import list_images, load_grey  # noqa: E402
from deep_vision.inference.devices import cpu_model  # noqa: E402


def time_pairs(fn, pairs, repeats: int, warmup: int = 5):
    for a, b in pairs[:warmup]:
        fn(a, b)
    times = []
    for _ in range(repeats):
        for a, b in pairs:
            t0 = time.perf_counter()
            fn(a, b)
            times.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "homography.onnx"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--kitti", default=str(ROOT.parent / "shared" / "data" / "kitti" / "sequences" / "00" / "image_0"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    import cv2

    cv2.setNumThreads(args.threads)
    frames = [load_grey(p) for p in list_images(Path(args.kitti), "*.png", first=100, last=159)]
    pairs = list(zip(frames[:-1], frames[1:]))
    refine = HomographyEstimator.from_model(args.model, backend="onnxruntime", refine=True, threads=args.threads)
    raw = HomographyEstimator.from_model(args.model, backend="onnxruntime", refine=False, threads=args.threads)
    sift, orb = FeatureHomography("sift"), FeatureHomography("orb")
    stages: dict[str, list[float]] = {}

    def refined(a, b):
        r = refine.estimate(a, b)
        for k, v in r.timings_ms.items():
            stages.setdefault(k, []).append(v)

    cases = {
        "network + refinement (ONNX Runtime)": refined,
        "network only (ONNX Runtime)": lambda a, b: raw.estimate(a, b),
        "SIFT + RANSAC": sift.estimate,
        "ORB + RANSAC": orb.estimate,
    }
    results = {}
    for name, fn in cases.items():
        t = time_pairs(fn, pairs, args.repeats)
        results[name] = {"p50_ms": round(float(np.percentile(t, 50)), 2), "p95_ms": round(float(np.percentile(t, 95)), 2),
                         "p99_ms": round(float(np.percentile(t, 99)), 2), "calls": int(t.size)}
        print(name, results[name], flush=True)
    breakdown = {k: round(float(np.median(v)), 2) for k, v in stages.items()}
    load = os.getloadavg()
    header = {"command": "python bench/homography_latency.py " + " ".join(sys.argv[1:]), "date": date.today().isoformat(),
              "host": socket.gethostname(), "cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
              "backend": refine.backend.describe(), "frames": f"KITTI 00 frames 100-159, {frames[0].shape[1]}x{frames[0].shape[0]}",
              "load_average_at_end": [round(x, 2) for x in load]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{header['date']}-{header['host']}-homography-latency"
    stem.with_suffix(".json").write_text(json.dumps({"header": header, "results": results,
                                                     "refined_stage_p50_ms": breakdown}, indent=2) + "\n")
    lines = ["# Homography latency per frame pair", ""] + [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "| method | p50 ms | p95 ms | p99 ms | calls |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['p50_ms']} | {v['p95_ms']} | {v['p99_ms']} | {v['calls']} |" for k, v in results.items()]
    lines += ["", "Refined pipeline, median per stage (ms): " + ", ".join(f"{k} {v}" for k, v in breakdown.items()), ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
