"""Time of describing a frame and of SpatialReranker's spatial scores when the two alternate in one process, as in
two-stage place recognition, with OpenCV's default thread pool or with ``cv2.setNumThreads(N)``.

The homography score calls OpenCV's RANSAC, which runs on OpenCV's thread pool; ONNX Runtime describes the next
frame on its own threads. On a 2-core machine the two pools can compete. This measures it: Corridor's reference
frames in turn, each described (``describe_local``, ONNX Runtime, 2 threads), then scored against 5 fixed maps.

Usage (repository root, about 10 s per setting):
    .venv/bin/python experiments/place_rerank_threads.py [--cv2-threads default 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def measure(cv2_threads: str) -> list[str]:
    import cv2
    from deep_vision.estimators import PlaceRecognizer, SpatialReranker
    from deep_vision.io.vpr import load_corridor, read_image

    if cv2_threads != "default":
        cv2.setNumThreads(int(cv2_threads))
    rec = PlaceRecognizer.from_model(ROOT / "models" / "place.onnx", backend="onnxruntime:cpu", threads=2)
    images = [read_image(p) for p in load_corridor(DATA / "vpr_corridor").references]
    fixed = [rec.describe_local(im)[1] for im in images[:5]]
    lines = []
    for name, reranker in (("shift", SpatialReranker(score="shift")), ("homography", SpatialReranker())):
        describe, score = [], []
        for im in images:
            t0 = time.perf_counter()
            _, local = rec.describe_local(im)
            describe.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for other in fixed:
                reranker.spatial_score(local, other)
            score.append(time.perf_counter() - t0)
        lines.append(f"| {cv2_threads} ({cv2.getNumThreads()}) | {name} | {1e3 * np.median(describe):.2f} | "
                     f"{1e3 * np.median(score):.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cv2-threads", nargs="+", default=["default", "1"])
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: one setting
    args = parser.parse_args(argv)
    if args.one:
        print("\n".join(measure(args.one)))
        return 0
    print("| cv2 threads (pool size) | score | describe p50 ms | 5 spatial scores p50 ms |\n|---|---|---|---|")
    for setting in args.cv2_threads:  # a fresh process each: OpenCV's pool is set once per process
        subprocess.run([sys.executable, __file__, "--one", setting], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
