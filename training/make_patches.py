"""Training patches for the patch descriptor (L2-Net), in HPatches' layout (deep_vision.eval.patch_sets).

Two kinds of sources, each written as ``<out>/<source>.npz`` files of :class:`PatchSequence` objects:

- real images warped by random homographies with photometric change: every reference image gets 5 targets,
  each the image seen through a random homography (perspective, rotation, scale; growing with the target's
  index) under an independent exposure / contrast / gamma / blur / noise change; its patches are found through
  the homography with HPatches-style easy and hard jitter;
- the synthetic world from several viewpoints (its depth gives the correspondence,
  :func:`deep_vision.synthetic.patches.depth_sequences`), viewpoint and illumination sequences, training seeds.

Held out, never read here: Oxford graf and boat, the synthetic worlds of seeds 9001 and above, KITTI 00 frames
100-159 and KITTI 03 frames 550-800 (the VO's evaluation), EuRoC (the loop-closure verification's real pairs),
Corridor places 0-60 (the place benchmark's held-out part). Nordland's 64×32 thumbnails are too small for
32×32 patches around keypoints and are not used.

    .venv/bin/python training/make_patches.py --out training_data/patches
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deep_vision.eval.homography_pairs import photometric  # noqa: E402
from deep_vision.eval.patch_sets import PatchSequence, homography_sequence  # noqa: E402

from training.common import resolve  # noqa: E402

logger = logging.getLogger("make_patches")

SHARED = "../shared/data"
#: (name, folder, pattern, first, last, step): the real training images.
REAL_SOURCES = [
    ("kitti00", f"{SHARED}/kitti/sequences/00/image_0", "*.png", 0, 99, 1),
    ("kitti03", f"{SHARED}/kitti/sequences/03/image_0", "*.jpg", 0, 549, 2),
    ("corridor_query", f"{SHARED}/vpr_corridor/query", "*.jpg", 61, 110, 1),
    ("corridor_ref", f"{SHARED}/vpr_corridor/ref", "*.jpg", 61, 110, 1),
]
SYNTHETIC_SEEDS = (0, 1, 2, 3, 4, 5)


def random_homography(shape: tuple[int, int], strength: float, rng: np.random.Generator) -> np.ndarray:
    """A homography that keeps an image of ``shape`` roughly in view: rotation about the centre (up to
    25°·strength), scale (2^±0.6·strength), and a perspective push of the corners (up to 20 %·strength)."""
    h, w = shape
    c = np.array([w / 2.0, h / 2.0])
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    th = np.radians(rng.uniform(-25, 25) * strength)
    s = 2.0 ** rng.uniform(-0.6 * strength, 0.6 * strength)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) * s
    moved = (corners - c) @ R.T + c + rng.uniform(-0.2, 0.2, (4, 2)) * strength * np.array([w, h])
    return cv2.getPerspectiveTransform(corners.astype(np.float32), moved.astype(np.float32)).astype(np.float64)


def real_sequences(name: str, image: np.ndarray, count: int, rng: np.random.Generator) -> PatchSequence:
    targets = []
    for t in range(5):
        H = random_homography(image.shape, 0.25 + 0.75 * t / 4, rng)
        warped = cv2.warpPerspective(image, H, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT)
        targets.append((photometric(warped, rng, brightness=0.25, contrast=0.3, gamma=0.4, noise=4.0,
                                    blur_prob=0.2), H))
    return homography_sequence(name, "viewpoint", photometric(image, rng, 0.1, 0.1, 0.1, 2.0, 0.0), targets,
                               count, rng)


def images(folder: str, pattern: str, first: int, last: int, step: int) -> list[Path]:
    files = sorted(resolve(folder).glob(pattern))
    return files[first:last + 1:step]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="training_data/patches")
    ap.add_argument("--per-image", type=int, default=100, help="keypoints per real reference image")
    ap.add_argument("--synthetic-sequences", type=int, default=12, help="per seed and kind")
    ap.add_argument("--per-sequence", type=int, default=300, help="keypoints per synthetic sequence")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["real", "synthetic"], default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = resolve(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    if args.only != "synthetic":
        for name, folder, pattern, first, last, step in REAL_SOURCES:
            files = images(folder, pattern, first, last, step)
            if not files:
                raise SystemExit(f"make_patches: no images for {name} in {resolve(folder)}")
            t0 = time.perf_counter()
            seqs = []
            for i, f in enumerate(files):
                grey = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
                if grey is None:
                    raise SystemExit(f"make_patches: cannot read {f}")
                seqs.append(real_sequences(f"{name}-{f.stem}", grey, args.per_image, rng))
                if (i + 1) % 50 == 0 or i + 1 == len(files):
                    logger.info("%s: %d/%d images, %d correspondences (%.0f s)", name, i + 1, len(files),
                                sum(len(s) for s in seqs), time.perf_counter() - t0)
            save(out / f"{name}.npz", seqs)
    if args.only != "real":
        from deep_vision.synthetic.patches import depth_sequences

        for seed in SYNTHETIC_SEEDS:
            for kind in ("viewpoint", "illumination"):
                t0 = time.perf_counter()
                seqs = depth_sequences(seed, kind, args.synthetic_sequences, args.per_sequence, rng)
                logger.info("synthetic seed %d %s: %d sequences, %d correspondences (%.0f s)", seed, kind,
                            len(seqs), sum(len(s) for s in seqs), time.perf_counter() - t0)
                save(out / f"synthetic{seed}_{kind}.npz", seqs)


def save(path: Path, seqs: list[PatchSequence]) -> None:
    """Sequences concatenated: ``ref`` [M x S x S], ``targets_<level>`` [T x M x S x S], ``sequence`` [M] index
    into ``names`` and ``kinds``."""
    seqs = [s for s in seqs if len(s)]
    levels = sorted(seqs[0].targets)
    np.savez(path, ref=np.concatenate([s.ref for s in seqs]),
             sequence=np.concatenate([np.full(len(s), i, np.int32) for i, s in enumerate(seqs)]),
             names=np.array([s.name for s in seqs]), kinds=np.array([s.kind for s in seqs]),
             **{f"targets_{lv}": np.concatenate([s.targets[lv] for s in seqs], axis=1) for lv in levels})
    logger.info("wrote %s", path)


if __name__ == "__main__":
    main()
