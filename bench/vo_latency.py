"""Benchmark: visual odometry latency per full-resolution frame (network and hybrid modes vs classical VO).

Usage: .venv/bin/python bench/vo_latency.py [--model models/vo.onnx] [--threads 1] [--repeats 3]
Times, in one run on the same frames (KITTI 00 frames 100-159, 1241x376, as a stream):
``VisualOdometry.process`` in network mode, in hybrid mode (dense-flow geometry with the network's step length;
also with twice the ONNX Runtime threads and without the non-linear refinement of the geometry; and the
corner-tracking front end with the network prior, the hybrid of earlier releases), as the shipped
config/perception.yaml builds it (ground-plane scale fused with the top views, no network; without the top views;
and with ``use_network: true``), and the classical
baseline of ``deep-vision evaluate vo`` (Shi-Tomasi + Lucas-Kanade at full resolution + essential matrix), each
timed as ``deep-vision evaluate vo`` times it (``run_vo``, ``run_classical``).
The cases take turns in ``--repeats`` rounds, so a change in the shared host's speed reaches every case
alike; each round's p50 is reported beside the overall one. ``--threads`` is ONNX Runtime's intra-op count
(in hybrid mode the two-view geometry runs beside the network in threads of its own).
Writes bench/results/<date>-<host>-vo-latency.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from deep_vision.estimators.odometry import VisualOdometry  # noqa: E402
from deep_vision.eval.vo_eval import kitti_sequence, run_classical, run_vo, shipped_factory  # noqa: E402
from deep_vision.inference.devices import cpu_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "vo.onnx"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all cases (default 3)")
    parser.add_argument("--kitti", default=str(ROOT.parent / "shared" / "data" / "kitti" / "sequences" / "00"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()

    seq = kitti_sequence(Path(args.kitti), 100, 159).preloaded()
    frames = list(seq.frames())
    shipped = shipped_factory(None, args.model, args.threads)

    def vo(threads: int = args.threads, **kwargs):
        """ms per frame of a fresh VisualOdometry over the stream (the first frame, which has no pair, left out)."""
        return run_vo(VisualOdometry.from_model(args.model, backend="onnxruntime", camera=seq.camera,
                                                threads=threads, **kwargs), seq)[1][1:]

    cases = {
        "network mode": lambda: vo(mode="network"),
        "hybrid, dense flow (default: refined geometry)": lambda: vo(mode="hybrid"),
        "shipped (config/perception.yaml: hybrid, ground plane + top views, no network)":
            lambda: run_vo(shipped(seq.camera, seq.camera_height_m), seq)[1][1:],
        "shipped without the top views (ground_topview: false)":
            lambda: run_vo(shipped(seq.camera, seq.camera_height_m, ground_topview=False), seq)[1][1:],
        "shipped with use_network: true": lambda: run_vo(shipped(seq.camera, seq.camera_height_m, use_network=True),
                                                         seq)[1][1:],
        "hybrid, dense flow, geometry not refined": lambda: vo(mode="hybrid", refine_geometry=False),
        f"hybrid, dense flow, ONNX Runtime {2 * args.threads} threads": lambda: vo(2 * args.threads, mode="hybrid"),
        "hybrid, corners + network prior (640 px)": lambda: vo(mode="hybrid", geometry="features", track_width=640,
                                                              prior_max_disagreement_deg=0.5,
                                                              refine_geometry=False),
        "classical (corners, full resolution)": lambda: run_classical(seq)[1][1:],
    }
    rounds: dict[str, list[list[float]]] = {name: [] for name in cases}
    for r in range(args.repeats):
        for name, run in cases.items():
            rounds[name].append(run())
            print(f"round {r + 1}/{args.repeats} {name}: p50 {np.median(rounds[name][-1]):.2f} ms", flush=True)
    results = {}
    for name, per_round in rounds.items():
        t = np.concatenate(per_round)
        results[name] = {"p50_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95)),
                         "round_p50_ms": [float(np.median(x)) for x in per_round], "frames": int(t.size)}
    host = socket.gethostname().split(".")[0] or "host"
    stem = f"{date.today().isoformat()}-{host}-vo-latency"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = ".venv/bin/python bench/vo_latency.py " + " ".join(sys.argv[1:])
    meta = {"command": command, "cpu": cpu_model(), "cores": os.cpu_count(), "onnx_threads": args.threads,
            "frames": f"KITTI 00 frames 100-159 ({frames[0].shape[1]}x{frames[0].shape[0]})",
            "repeats": args.repeats}
    (out / f"{stem}.json").write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    lines = [f"# Visual odometry latency ({date.today().isoformat()})", "",
             f"- command: `{command}`", f"- CPU: {meta['cpu']} ({meta['cores']} cores), ONNX Runtime intra-op "
             f"threads {args.threads}", f"- frames: {meta['frames']}, each case as a stream, {args.repeats} "
             "interleaved rounds", "", "| case | p50 ms | p95 ms | p50 per round (ms) |", "|---|---|---|---|"]
    for name, m in results.items():
        lines.append(f"| {name} | {m['p50_ms']:.1f} | {m['p95_ms']:.1f} | "
                     f"{' / '.join(f'{x:.1f}' for x in m['round_p50_ms'])} |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"report: {out / stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
