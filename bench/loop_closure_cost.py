"""Benchmark: where a loop-closure keyframe's time goes, with the shipped settings (config/perception.yaml).

Usage: .venv/bin/python bench/loop_closure_cost.py BAG [--params config/perception.yaml] [--out bench/results]
       [--tag TAG]
Runs ``LoopClosureDetector.process`` (built as place_recognition_node builds it) over every frame of BAG, offline,
and reports per keyframe: describing, local features, query + geometric verification of the candidates, total
(``QueryResult.timings_ms``). Then times ``GeometricVerifier.verify`` again on every (keyframe, candidate) pair
of the run, each pair once, and counts the verified ones. Writes bench/results/<date>-loop-closure-cost[-TAG].{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from deep_vision.io.bag import BagSequence
from deep_vision.params import load_params
from deep_vision.pipeline.build import build_loop_detector


def stats(values: list[float]) -> str:
    return f"{np.median(values):.1f} / {np.percentile(values, 95):.1f} / {np.max(values):.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bag")
    parser.add_argument("--params", default=str(ROOT / "config" / "perception.yaml"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    detector = build_loop_detector(load_params(args.params)["place_recognition_node"])
    bag = BagSequence(args.bag)
    results = []
    for frame in bag.frames():
        K = frame.camera.K if frame.camera is not None else None
        r = detector.process(frame.image, frame.stamp_ns, K=K)
        if r is not None:
            results.append((r, K))
    keys = ("describe_ms", "features_ms", "query_verify_ms", "total_ms")
    per_key = {k: [r.timings_ms[k] for r, _ in results] for k in keys}
    candidates = [len(r.candidates) for r, _ in results]

    pair_ms, verified = [], 0
    for r, K in results:
        query = detector.db.features(r.query_id)
        for c in r.candidates:
            t0 = time.perf_counter()
            v = detector.verifier.verify(query, detector.db.features(c.match_id), K, detector.db._K[c.match_id])
            pair_ms.append((time.perf_counter() - t0) * 1e3)
            verified += bool(v.verified)

    command = ".venv/bin/python bench/loop_closure_cost.py " + " ".join(sys.argv[1:])
    stem = f"{date.today().isoformat()}-loop-closure-cost" + (f"-{args.tag}" if args.tag else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"command": command, "bag": args.bag, "keyframes": len(results), "frames": len(bag),
            "candidates_mean": float(np.mean(candidates)) if candidates else 0.0,
            "keyframe_ms": {k: {"p50": float(np.median(v)), "p95": float(np.percentile(v, 95)),
                                "max": float(np.max(v))} for k, v in per_key.items()},
            "verify_pair_ms": {"p50": float(np.median(pair_ms)), "p95": float(np.percentile(pair_ms, 95)),
                               "mean": float(np.mean(pair_ms)), "pairs": len(pair_ms), "verified": verified}
            if pair_ms else {"pairs": 0, "verified": 0}}  # a bag without revisits: no candidate to verify
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [f"# Loop-closure keyframe cost ({date.today().isoformat()})", "", f"- command: `{command}`",
             (f"- {len(results)} keyframes of {len(bag)} frames, {data['candidates_mean']:.1f} candidates per "
              "keyframe on average (offline, one process, the shipped settings)"), "",
             "| per keyframe | p50 / p95 / max ms |", "|---|---|"]
    lines += [f"| {k.removesuffix('_ms').replace('_', ' + ')} | {stats(v)} |" for k, v in per_key.items()]
    lines += ["", (f"Geometric verification timed again per (keyframe, candidate) pair: {len(pair_ms)} pairs "
                   f"({verified} verified), p50 {data['verify_pair_ms']['p50']:.1f} ms, p95 "
                   f"{data['verify_pair_ms']['p95']:.1f} ms, mean {data['verify_pair_ms']['mean']:.1f} ms."
                   if pair_ms else "No loop-closure candidate in this bag: no verification to time.")]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
