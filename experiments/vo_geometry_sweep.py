"""Benchmark: two-view geometry front ends compared on a selection set (GT step lengths, KITTI t_rel).

Usage: .venv/bin/python experiments/vo_geometry_sweep.py [--kitti-frames 0:99] [--seeds 1,2] CASE [CASE ...]
A CASE is ``tracker:<FeatureTracker or DenseFlowTracker call>`` (the geometry alone, run like the classical
baseline of ``deep-vision evaluate vo``: a frame whose geometry fails repeats the previous motion) or
``vo:<VisualOdometry keyword arguments>`` (hybrid mode with the shipped model, so the network prior can be
switched on). Every case gets each step's ground-truth length, so only rotation and direction are compared.
Meant for choosing settings on sequences that the held-out evaluation does not use: KITTI 00 frames 0-99
and the synthetic training routes (seeds 1, 2); the geometry learns nothing from them.
Writes bench/results/<date>-vo-geometry-sweep.md (appends a section per run).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from deep_vision.estimators.odometry import VisualOdometry  # noqa: E402
from deep_vision.estimators.two_view import DenseFlowTracker, FeatureTracker  # noqa: E402
from deep_vision.eval.trajectory_metrics import kitti_relative_errors  # noqa: E402
from deep_vision.eval.vo_eval import (  # noqa: E402
    integrate,
    kitti_sequence,
    run_classical,
    run_vo,
    synthetic_sequence,
    with_gt_scale,
)


def run_case(case: str, seq, model: str) -> tuple[float, float, float]:
    """(t_rel %, r_rel °/100 m, ms per frame p50) of one case on one sequence, GT step lengths."""
    kind, _, expr = case.partition(":")
    if kind == "tracker":
        tracker = eval(expr, {"FeatureTracker": FeatureTracker, "DenseFlowTracker": DenseFlowTracker})
        rel, times, _ = run_classical(seq, tracker)
    elif kind == "vo":
        kwargs = eval(f"dict({expr})")
        vo = VisualOdometry.from_model(model, camera=seq.camera, mode="hybrid", threads=1, **kwargs)
        rel, times = run_vo(vo, seq)
    else:
        raise SystemExit(f"case {case!r}: start with tracker: or vo:")
    e = kitti_relative_errors(seq.poses_gt, integrate(with_gt_scale(rel, seq.poses_gt)))
    return e["t_rel_pct"], e["r_rel_deg_per_100m"], float(np.median(times[1:]))  # the first frame has no pair


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="+")
    parser.add_argument("--kitti", default=str(ROOT.parent / "shared" / "data" / "kitti" / "sequences" / "00"))
    parser.add_argument("--kitti-frames", default="0:99")
    parser.add_argument("--seeds", default="1,2", help="synthetic routes (default route of each world seed)")
    parser.add_argument("--frames", type=int, default=300, help="frames per synthetic route")
    parser.add_argument("--model", default=str(ROOT / "models" / "vo.onnx"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    first, last = (int(v) for v in args.kitti_frames.split(":"))
    seqs = []
    if Path(args.kitti).is_dir():
        seqs.append(kitti_sequence(Path(args.kitti), first, last))
    seqs += [synthetic_sequence(int(s), args.frames) for s in args.seeds.split(",") if s]
    cached = [seq.preloaded() for seq in seqs]  # render / read once
    command = ".venv/bin/python experiments/vo_geometry_sweep.py " + " ".join(f"'{a}'" if " " in a or "(" in a else a
                                                                       for a in sys.argv[1:])
    lines = [f"## {time.strftime('%Y-%m-%d %H:%M')}", "", f"`{command}`", "",
             "t_rel % / r_rel °/100 m (GT step lengths), ms per frame p50 (noisy: a shared 2-core host)", "",
             "| case | " + " | ".join(s.name for s in cached) + " | mean t_rel |",
             "|---|" + "---|" * (len(cached) + 1)]
    for case in args.cases:
        cells, trels = [], []
        for seq in cached:
            t_rel, r_rel, ms = run_case(case, seq, args.model)
            trels.append(t_rel)
            cells.append(f"{t_rel:.2f} / {r_rel:.1f}, {ms:.0f} ms")
        lines.append(f"| `{case}` | " + " | ".join(cells) + f" | {np.mean(trels):.2f} |")
        print(lines[-1], flush=True)
    out = Path(args.out) / f"{date.today().isoformat()}-vo-geometry-sweep.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    head = "" if out.exists() else "# Two-view geometry front ends on the selection set\n\n" + __doc__.split("\n\n")[1] + "\n\n"
    with out.open("a") as f:
        f.write(head + "\n".join(lines) + "\n\n")
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
