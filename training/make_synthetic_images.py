"""Render grey training images from synthetic worlds (one world per seed, varied camera poses).

Usage (from the repository root):
    .venv/bin/python training/make_synthetic_images.py --out training_data/synthetic --seeds 1:21 --per-seed 100

Poses are drawn along each world's route with random yaw (±50°), pitch (±8°),
roll (±4°) and height (1.2–2.6 m) so façades and ground are seen from many
angles. Seeds used for evaluation must not be used here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deep_vision.synthetic import SyntheticSequence, SyntheticWorldConfig  # noqa: E402


def parse_seeds(text: str) -> list[int]:
    if ":" in text:
        a, b = text.split(":")
        return list(range(int(a), int(b)))
    return [int(s) for s in text.split(",") if s.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", default="1:21", help="a:b (range) or comma list")
    parser.add_argument("--per-seed", type=int, default=100)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = parse_seeds(args.seeds)
    with tqdm(total=len(seeds) * args.per_seed, unit="img") as bar:
        for seed in seeds:
            seq = SyntheticSequence(SyntheticWorldConfig(seed=seed, frames=600))
            rng = np.random.default_rng([seed, 99])
            for k in range(args.per_seed):
                i = int(rng.integers(0, len(seq)))
                T = seq.T_world_cam[i].copy()
                # Perturb the optical frame: yaw about world z, then pitch/roll about the camera axes.
                R_extra = Rotation.from_euler("yxz", [rng.uniform(-50, 50), rng.uniform(-8, 8), rng.uniform(-4, 4)],
                                              degrees=True).as_matrix()
                T[:3, :3] = T[:3, :3] @ R_extra
                T[2, 3] = rng.uniform(1.2, 2.6)
                image = seq.renderer.render(T, np.random.default_rng([seed, 5, k]))
                cv2.imwrite(str(out / f"s{seed:04d}_{k:04d}.png"), image)
                bar.update(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
