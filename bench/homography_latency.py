"""Benchmark: homography estimation latency per full-resolution frame pair (network + refinement vs SIFT/ORB).

Usage: .venv/bin/python bench/homography_latency.py [--model models/homography.onnx] [--threads 2]
Times, in one run on the same frame pairs (KITTI 00 frames 100-159, 1241x376, consecutive):
the estimator with ONNX Runtime (refinement on, and the network alone), SIFT + RANSAC and ORB + RANSAC.
The methods take turns in ``--repeats`` rounds (each round times every method on all pairs), so a
change in the shared host's speed during the run reaches every method alike; the per-round p50
is reported beside the overall one, which shows how much the host's speed moved.
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


def time_pairs(fn, pairs, warmup: int = 5) -> list[float]:
    for a, b in pairs[:warmup]:
        fn(a, b)
    times = []
    for a, b in pairs:
        t0 = time.perf_counter()
        fn(a, b)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "homography.onnx"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all methods (default 3)")
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
    rounds: dict[str, list[list[float]]] = {name: [] for name in cases}
    for r in range(args.repeats):
        for name, fn in cases.items():
            rounds[name].append(time_pairs(fn, pairs))
            print(f"round {r + 1}/{args.repeats} {name}: p50 {np.median(rounds[name][-1]):.2f} ms", flush=True)
    results = {}
    for name, per_round in rounds.items():
        t = np.concatenate(per_round)
        results[name] = {"p50_ms": round(float(np.percentile(t, 50)), 2), "p95_ms": round(float(np.percentile(t, 95)), 2),
                         "p99_ms": round(float(np.percentile(t, 99)), 2), "calls": int(t.size),
                         "round_p50_ms": [round(float(np.median(x)), 2) for x in per_round]}
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
    lines += ["", "| method | p50 ms | p95 ms | p99 ms | calls | p50 ms per round |", "|---|---|---|---|---|---|"]
    lines += [f"| {k} | {v['p50_ms']} | {v['p95_ms']} | {v['p99_ms']} | {v['calls']} | "
              f"{' / '.join(str(x) for x in v['round_p50_ms'])} |" for k, v in results.items()]
    lines += ["", "Refined pipeline, median per stage (ms): " + ", ".join(f"{k} {v}" for k, v in breakdown.items()), ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
