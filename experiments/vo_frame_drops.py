"""Probe: what does a dropped frame cost the shipped odometry? (A realtime run of the demo bag that dropped 2 VO
frames ended at 5.3 m ATE instead of 0.76 m.)

The shipped VisualOdometry (config/perception.yaml, the node's builder) runs over a sequence with every frame, and
again with single frames left out (every ``--every``-th frame from ``--offset``), as the realtime queue drops
them; ATE (SE(3), Sim(3)) on the frames it saw. Per drop, prints the step that spans it: its mode, scale source,
rotation error and length error against the ground truth, to find which part fails. Training ranges only.

    .venv/bin/python experiments/vo_frame_drops.py [--every 25]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from deep_vision.eval.trajectory_metrics import ate_rpe
from deep_vision.eval.vo_eval import kitti_sequence, shipped_factory, synthetic_sequence
from deep_vision.geometry.transforms import invert_transform


def rotation_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


def run(seq, keep: np.ndarray, factory, verbose: bool):
    vo = factory(seq.camera, seq.camera_height_m)
    poses, kept, last = [], [], None
    for k, frame in enumerate(seq.frames()):
        if not keep[k]:
            continue
        r = vo.process(frame, int(seq.stamps_ns[k]))
        poses.append(r.pose)
        if verbose and last is not None and k - last > 1:
            T_gt = invert_transform(seq.poses_gt[last]) @ seq.poses_gt[k]
            dR = rotation_deg(T_gt[:3, :3].T @ r.relative[:3, :3])
            lg, le = np.linalg.norm(T_gt[:3, 3]), np.linalg.norm(r.relative[:3, 3])
            print(f"    gap {last}->{k}: mode {r.mode}, scale {r.scale}, rotation error {dR:.2f} deg, length "
                  f"{le:.2f} m vs {lg:.2f} m", flush=True)
        kept.append(k)
        last = k
    stamps = (seq.stamps_ns[kept] - seq.stamps_ns[kept[0]]) / 1e9
    gt = invert_transform(seq.poses_gt[kept[0]]) @ seq.poses_gt[kept]
    P = np.stack(poses)
    return ate_rpe(gt, P, stamps)["ate_m"], ate_rpe(gt, P, stamps, correct_scale=True)["ate_m"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--offset", type=int, default=12)
    args = ap.parse_args()
    root = Path(args.data) / "kitti" / "sequences"
    shipped = shipped_factory()
    for seq in (synthetic_sequence(3, 300), kitti_sequence(root / "03", 0, 300)):
        seq = seq.preloaded()
        n = len(seq.stamps_ns)
        every = np.ones(n, bool)
        keep = every.copy()
        keep[args.offset::args.every] = False
        for chain in (False, True):
            def factory(camera, height, chain=chain):
                return shipped(camera, height, relative_scale=chain)

            print(f"{seq.name}, relative_scale {chain}: all frames: ATE SE(3) / Sim(3) "
                  f"{run(seq, every, factory, False)}", flush=True)
            print(f"  a frame dropped every {args.every}:", flush=True)
            print(f"  -> ATE SE(3) / Sim(3) {run(seq, keep, factory, True)}", flush=True)


if __name__ == "__main__":
    main()
