"""Probe: how far does one rendered route's ATE move when nothing that matters changes?

The held-out rules compare one run per configuration and route, with a margin (10 % and 0.02 m). A route whose
ATE moves by more than that under a change that should not matter makes the comparison a coin toss. Here the
shipped odometry (config/perception.yaml, or --params files) runs on a rendered route several times with only
the ground plane's RANSAC seed changed (the same frames, the same settings), and the Sim(3) / SE(3) ATE of each
run is printed with the spread.

    .venv/bin/python experiments/vo_route_spread.py --routes 3,9002 --ground-seeds 0,1,2,3
"""

from __future__ import annotations

import argparse

import numpy as np

from deep_vision.eval.trajectory_metrics import ate_rpe
from deep_vision.eval.vo_eval import integrate, run_vo, shipped_factory, synthetic_sequence


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--routes", default="3", help="synthetic world seeds (comma-separated)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--params", default="", help="parameter files (comma-separated; default: the shipped one)")
    ap.add_argument("--ground-seeds", default="0,1,2,3")
    args = ap.parse_args()
    for route in (int(x) for x in args.routes.split(",")):
        seq = synthetic_sequence(route, args.frames).preloaded()
        stamps = (seq.stamps_ns - seq.stamps_ns[0]) / 1e9
        for params in args.params.split(",") if args.params else [None]:
            make = shipped_factory(params)
            sim3, se3 = [], []
            for s in (int(x) for x in args.ground_seeds.split(",")):
                vo = make(seq.camera, seq.camera_height_m)
                vo.ground.seed = s
                rel, _ = run_vo(vo, seq)
                poses = integrate(rel)
                sim3.append(ate_rpe(seq.poses_gt, poses, stamps, correct_scale=True)["ate_m"])
                se3.append(ate_rpe(seq.poses_gt, poses, stamps)["ate_m"])
                print(f"{seq.name} {params or 'shipped'} ground seed {s}: Sim(3) {sim3[-1]:.3f} SE(3) {se3[-1]:.3f}",
                      flush=True)
            print(f"{seq.name} {params or 'shipped'}: Sim(3) mean {np.mean(sim3):.3f} min {np.min(sim3):.3f} max "
                  f"{np.max(sim3):.3f} std {np.std(sim3, ddof=1):.3f}; SE(3) mean {np.mean(se3):.3f} std "
                  f"{np.std(se3, ddof=1):.3f}", flush=True)


if __name__ == "__main__":
    main()
