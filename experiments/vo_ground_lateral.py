"""Probe: does bounding the ground plane's candidate points sideways (a lane's width, not the verges, kerbs and
parked cars beside it) make the ground-plane step length more accurate?

A ground point x metres to the side of the camera and d = the camera height below it has a ray whose sideways
component over its downward one is x / d, so a bound of L metres sideways keeps the rays with |ray · right| <
(L / height) · (ray · down): scale-free, before triangulation. On training ranges only (KITTI 03 frames 0-549,
KITTI 00 frames 0-99, synthetic worlds 1-3; the dense-flow steps cached under --cache as in
vo_ground_diagnosis.py). Per bound: per-frame length error and the ATE of the trajectory with those lengths.

    .venv/bin/python experiments/vo_ground_lateral.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from deep_vision.estimators.ground_scale import GroundPlaneScale

sys.path.insert(0, str(Path(__file__).parent))
from vo_ground_diagnosis import report_lengths, training_steps  # noqa: E402


def lateral_mask(K: np.ndarray, p: np.ndarray, up: np.ndarray, bound_m: float, height_m: float) -> np.ndarray:
    """Rays of pixels ``p`` at most ``bound_m`` sideways of the camera where they meet a ground ``height_m`` below."""
    rays = np.c_[p, np.ones(len(p))] @ np.linalg.inv(K).T
    down = -up
    forward = np.array([0.0, 0.0, 1.0]) - down * down[2]  # the optical axis on the ground plane
    right = np.cross(down, forward / np.linalg.norm(forward))
    return np.abs(rays @ right) < bound_m / height_m * (rays @ down)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--cache", default="/tmp/gdiag")
    ap.add_argument("--bounds", default="2,3,4,6,inf,3+inf,4+inf,3+6+inf",
                    help="sideways bounds (m); a+b: bound a, where that finds no plane bound b")
    args = ap.parse_args()
    for seq, rec, gt, steps in training_steps(args.data, args.cache):
        ground = GroundPlaneScale(seq.camera_height_m)  # the shipped settings
        K = seq.camera.K
        print(f"{seq.name}:", flush=True)
        for spec in args.bounds.split(","):
            est = np.full(len(rec), np.nan)
            for k, r in enumerate(rec):
                for bound in (float(b) for b in spec.split("+")) if r is not None else ():
                    keep = lateral_mask(K, r[2], ground._up, bound, seq.camera_height_m) if np.isfinite(bound) \
                        else np.ones(len(r[2]), bool)
                    e = ground.estimate(r[0], r[1], K, r[2][keep], r[3][keep])
                    if e is not None:
                        est[k] = e.scale_m
                        break
            report_lengths(seq, steps, f"sideways <= {spec} m", est, gt)


if __name__ == "__main__":
    main()
