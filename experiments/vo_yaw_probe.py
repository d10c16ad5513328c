"""Probe: does the VO network read rotation from geometry on real frames, or from what the scene looks like?

Usage: .venv/bin/python experiments/vo_yaw_probe.py --model models/vo.onnx [--model runs/x/vo.onnx ...] [--out bench/results]
For each model, in network mode on KITTI 00 (frames 0-99: inside the shipped model's training data; 100-159:
held out, a right turn), as recorded and mirrored left-right about the principal point (the ground truth
mirrored with it): the correlation of the predicted per-frame yaw with the true one, the mean yaw of both, the
mean predicted and true step length. A network that reads geometry has a yaw correlation near +1 on both, the
mirrored frames included. Writes bench/results/vo-yaw-probe-<date>.md.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deep_vision.estimators.odometry import VisualOdometry  # noqa: E402
from deep_vision.geometry.transforms import invert_transform  # noqa: E402
from deep_vision.io.kitti import KittiSequence  # noqa: E402

from training.train_vo import mirror_frames, mirror_poses  # noqa: E402

RANGES = ((0, 99), (100, 159))


def yaw_deg(T: np.ndarray) -> float:
    """Rotation about the camera's y axis (down; positive turns right), degrees."""
    return float(np.degrees(Rotation.from_matrix(T[:3, :3]).as_rotvec()[1]))


def probe(model: Path, seq: KittiSequence, first: int, last: int, mirrored: bool, threads: int) -> dict[str, float]:
    vo = VisualOdometry.from_model(model, backend="onnxruntime", threads=threads)
    idx = list(range(first, last + 1))
    poses = seq.poses[idx]
    frames = np.stack([seq.image(i) for i in idx])
    if mirrored:
        frames, poses = mirror_frames(frames, seq.camera.cx), mirror_poses(poses)
    pred, true, len_p, len_t = [], [], [], []
    for k, f in enumerate(frames):
        r = vo.process(f, round(seq.times[idx[k]] * 1e9) + 1)
        if k:
            gt = invert_transform(poses[k - 1]) @ poses[k]
            pred.append(yaw_deg(r.relative))
            true.append(yaw_deg(gt))
            len_p.append(np.linalg.norm(r.relative[:3, 3]))
            len_t.append(np.linalg.norm(gt[:3, 3]))
    return {"corr": float(np.corrcoef(pred, true)[0, 1]), "yaw_pred": float(np.mean(pred)),
            "yaw_true": float(np.mean(true)), "yaw_mae": float(np.mean(np.abs(np.subtract(pred, true)))),
            "step_pred": float(np.mean(len_p)), "step_true": float(np.mean(len_t))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="a VO .onnx with its card (repeatable)")
    parser.add_argument("--kitti", default=str(ROOT.parent / "shared" / "data" / "kitti" / "sequences" / "00"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    seq = KittiSequence(Path(args.kitti))
    rows = []
    for model in args.model:
        for first, last in RANGES:
            for mirrored in (False, True):
                r = probe(Path(model), seq, first, last, mirrored, args.threads)
                rows.append(f"| {model} | {first}-{last} | {'mirrored' if mirrored else 'as recorded'} | "
                            f"{r['corr']:+.2f} | {r['yaw_pred']:+.2f} / {r['yaw_true']:+.2f} | {r['yaw_mae']:.2f} | "
                            f"{r['step_pred']:.2f} / {r['step_true']:.2f} |")
                print(rows[-1], flush=True)
    out = Path(args.out) / f"vo-yaw-probe-{date.today().isoformat()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join([
        f"# VO network on real frames: yaw probe ({date.today().isoformat()})", "",
        f"- command: .venv/bin/python experiments/vo_yaw_probe.py {' '.join('--model ' + m for m in args.model)} "
        f"--threads {args.threads}",
        "- KITTI 00 frames 0-99 are in the shipped VO's training data; 100-159 are held out (a right turn).",
        "- yaw: rotation about the camera's y axis per frame, degrees (positive: right). Mirrored: frames reflected "
        "about the principal point, ground truth reflected with them.", "",
        "| model | KITTI 00 frames | frames | yaw correlation | mean yaw pred / true ° | yaw MAE ° | "
        "step pred / true m |",
        "|---|---|---|---|---|---|---|", *rows, ""]))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
