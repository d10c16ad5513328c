"""Probe: does the ground plane's RANSAC with more hypotheses make the drift depend less on its seed?

One rendered route's ATE moved from 0.31 to 0.51 m with the RANSAC seed alone (vo_route_spread.py). On the
training ranges (the dense-flow steps cached as in vo_ground_diagnosis.py; the top views' lengths from
``vo_length_error_structure.py --dump``), the plane with 200 (shipped) and 1000 hypotheses, seeds 0-2, fused with
the top view as shipped: the ATE of each and the plane's time per frame.

    .venv/bin/python experiments/vo_length_error_structure.py --dump /tmp/probe/dump   # once, for the top views
    .venv/bin/python experiments/vo_ground_ransac_seeds.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from deep_vision.estimators.ground_scale import GroundPlaneScale

sys.path.insert(0, str(Path(__file__).parent))
from vo_ground_diagnosis import report_lengths, training_steps  # noqa: E402
from vo_topview_fusion import fused  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--cache", default="/tmp/gdiag")
    ap.add_argument("--dump", default="/tmp/probe/dump")
    ap.add_argument("--iterations", default="200,1000")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    for seq, rec, gt, steps in training_steps(args.data, args.cache):
        top = np.load(Path(args.dump) / f"{seq.name}.npz")["top"]
        print(seq.name, flush=True)
        for it in (int(x) for x in args.iterations.split(",")):
            for s in (int(x) for x in args.seeds.split(",")):
                g = GroundPlaneScale(seq.camera_height_m, iterations=it, seed=s)
                t0 = time.perf_counter()
                found = [None if r is None else g.estimate(r[0], r[1], seq.camera.K, r[2], r[3]) for r in rec]
                plane = np.array([np.nan if e is None else e.scale_m for e in found])
                ms = (time.perf_counter() - t0) / len(rec) * 1e3
                report_lengths(seq, steps, f"iter {it} seed {s} fused ({ms:.1f} ms/plane)",
                               fused(plane, top, "mean", 0.2), gt)


if __name__ == "__main__":
    main()
