"""Prepare VO training sequences: frames resized to the network size + camera poses, one .npz each.

Usage (repository root):
    .venv/bin/python training/make_vo_sequences.py --out training_data/vo --seeds 1:11 \
        [--kitti-frames 00:0:99,03:0:549]

Synthetic seeds get a random speed (5-15 m/s) each; with ``--vary-routes`` also a
route of their own (``deep_vision.synthetic.route.vary_route``: turn rates
spread over 1-11 degrees per frame instead of the default route's single
radius). Frames are rendered at 1241x376 and resized with
INTER_AREA exactly as the estimator does at run time.
Each KITTI range ``SEQ:FIRST:LAST`` of ``--kitti-frames`` (inclusive; default KITTI 00 frames 0-99 and
KITTI 03 frames 0-549, from ../shared/data) is added as one sequence; ``''``: none. Evaluate only on frames
outside those ranges (``deep-vision evaluate vo`` holds out KITTI 00 100-159 and KITTI 03 550-800).
``--kitti-labels odometry`` labels those frames without ground truth (self-supervised): the poses stored are
what the shipped odometry (config/perception.yaml's odometry_node, two-view geometry with the ground plane's
scale, without the network) estimates on the full-resolution frames, so a camera with no ground truth can be
trained on. ``--seeds ''``: no synthetic routes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deep_vision.eval.vo_eval import VOSequence, integrate, kitti_ranges, shipped_factory  # noqa: E402
from deep_vision.io.kitti import KittiSequence  # noqa: E402
from deep_vision.synthetic import SyntheticSequence, SyntheticWorldConfig  # noqa: E402
from deep_vision.synthetic.route import vary_route  # noqa: E402

from training.make_synthetic_images import parse_seeds  # noqa: E402


def odometry_poses(seq: KittiSequence, idx: list[int]) -> np.ndarray:
    """[N x 4 x 4] camera poses of the KITTI frames ``idx`` as the shipped odometry estimates them without the
    network (the first frame's camera is the origin; KITTI's camera height); the ground truth is not read."""
    vo = shipped_factory()(seq.camera, VOSequence.camera_height_m, use_network=False)
    stamps = np.round(seq.times[idx] * 1e9).astype(np.int64)
    relatives = [vo.process(seq.image(i), int(s)).relative
                 for i, s in zip(tqdm(idx, desc="shipped odometry", unit="frame"), stamps)][1:]
    return integrate(relatives)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", default="1:11")
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--size", default="320x96", help="stored frame size WxH (the network input)")
    parser.add_argument("--kitti-root", default=str(ROOT.parent / "shared" / "data" / "kitti" / "sequences"))
    parser.add_argument("--kitti-frames", default="00:0:99,03:0:549",
                        help="KITTI ranges SEQ:FIRST:LAST (inclusive), comma-separated; '' for none")
    parser.add_argument("--kitti-labels", choices=("gt", "odometry"), default="gt",
                        help="KITTI poses: the ground truth, or the shipped odometry's estimate (no ground truth)")
    parser.add_argument("--vary-routes", action="store_true", help="each synthetic seed drives a route of its own")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in parse_seeds(args.seeds):
        rng = np.random.default_rng([seed, 31])
        config = SyntheticWorldConfig(seed=seed, frames=args.frames)
        config.route.speed_mps = float(rng.uniform(5.0, 15.0))
        if args.vary_routes:
            vary_route(config.route, rng)
        seq = SyntheticSequence(config)
        frames = np.stack([cv2.resize(seq.image(i), (w, h), interpolation=cv2.INTER_AREA)
                           for i in tqdm(range(len(seq)), desc=f"seed {seed}", unit="frame")])
        np.savez_compressed(out / f"synthetic_{seed:04d}.npz", frames=frames, poses=seq.kitti_poses,
                            times=seq.trajectory.times, cx=seq.camera.scaled(w / seq.camera.width).cx)
    for name, first, last in kitti_ranges(args.kitti_frames):
        folder = Path(args.kitti_root) / name
        if not folder.is_dir():
            print(f"no KITTI sequence {name} under {args.kitti_root}: left out", file=sys.stderr)
            continue
        seq = KittiSequence(folder)
        if seq.poses is None and args.kitti_labels == "gt":
            raise SystemExit(f"KITTI {name}: no ground-truth poses (poses/{name}.txt)")
        idx = list(range(first, min(last, len(seq) - 1) + 1))
        frames = np.stack([cv2.resize(seq.image(i), (w, h), interpolation=cv2.INTER_AREA)
                           for i in tqdm(idx, desc=f"KITTI {name}", unit="frame")])
        if args.kitti_labels == "odometry":
            poses, suffix = odometry_poses(seq, idx), "_odometry"
        else:
            poses, suffix = seq.poses[idx], ""
        np.savez_compressed(out / f"kitti_{name}_{first:04d}_{idx[-1]:04d}{suffix}.npz", frames=frames,
                            poses=poses, times=seq.times[idx], cx=seq.camera.scaled(w / seq.camera.width).cx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
