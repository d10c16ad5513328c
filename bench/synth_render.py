"""Benchmark: synthetic world build, per-frame rendering and a full 600-frame bag recording.

Usage: .venv/bin/python bench/synth_render.py [--frames 600]
Writes bench/results/<date>-<host>-synth.json and .md (the command is recorded in both).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from deep_vision.inference.devices import cpu_model
from deep_vision.synthetic import SyntheticSequence, SyntheticWorldConfig
from deep_vision.synthetic.recording import record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()
    import os

    config = SyntheticWorldConfig(frames=args.frames)
    t0 = time.perf_counter()
    seq = SyntheticSequence(config)
    seq.world
    build_s = time.perf_counter() - t0
    times = []
    for i in range(0, min(args.frames, 200), 4):
        t = time.perf_counter()
        seq.image(i)
        times.append(time.perf_counter() - t)
    render_ms = np.array(times) * 1e3

    tmp = Path(tempfile.mkdtemp())
    try:
        t0 = time.perf_counter()
        rec = record(config, tmp / "bag", workers=0)
        record_s = time.perf_counter() - t0
        size_mb = sum(f.stat().st_size for f in (tmp / "bag").rglob("*") if f.is_file()) / 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "command": "python bench/synth_render.py " + " ".join(sys.argv[1:]),
        "date": date.today().isoformat(),
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "frames": args.frames,
        "image": f"{config.camera.width}x{config.camera.height} {config.camera.encoding}",
        "world_build_s": round(build_s, 2),
        "render_ms_p50": round(float(np.percentile(render_ms, 50)), 1),
        "render_ms_p95": round(float(np.percentile(render_ms, 95)), 1),
        "record_total_s": round(record_s, 1),
        "record_frames_per_s": round(args.frames / record_s, 1),
        "bag_size_mb": round(size_mb, 1),
        "revisit_pairs": rec.revisits,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{result['date']}-{result['host']}-synth"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    rows = "\n".join(f"| {k} | {v} |" for k, v in result.items())
    stem.with_suffix(".md").write_text(f"# Synthetic world rendering\n\n| quantity | value |\n|---|---|\n{rows}\n")
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
