"""Choose the ground-plane scale's settings on training sequences (never on the held-out ones).

The hybrid VO (shipped models/vo.onnx, dense-flow geometry) runs once per sequence; its two-view motions are
replayed for every setting, so only the scale changes between rows. Sequences: KITTI 00 frames 0-99 and the
synthetic training routes 3 and 5 (models/vo.yaml: trained on routes 1-10 and KITTI 0-99; held out are KITTI
100-159 and routes 9001+, which ``deep-vision evaluate vo`` measures).

Per setting: t_rel (KITTI protocol, the evaluation's scaled segment lengths) with that scale, and the median /
90th percentile of the per-frame step-length error against the ground truth. ``network`` is the network's own
length, as the shipped hybrid does without ``scale_source="ground"``. Writes a table (stdout and ``--out``)
and a plot of the step lengths for the chosen setting.

Usage (repository root; on 2 cores about 12 min for the default grid of 36 settings):
    .venv/bin/python experiments/vo_ground_scale.py [--model models/vo.onnx] [--out bench/results]
        [--tols 0.01,0.02,0.04] [--below 1,3,6] [--windows 1,3,5,9] [--tag NAME]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ros2_ws" / "src" / "deep_vision"))

from deep_vision.estimators.ground_scale import GroundPlaneScale
from deep_vision.estimators.odometry import VisualOdometry
from deep_vision.estimators.two_view import DenseFlowTracker
from deep_vision.eval.trajectory_metrics import kitti_relative_errors
from deep_vision.eval.vo_eval import (
    integrate,
    kitti_sequence,
    run_vo,
    synthetic_sequence,
)
from deep_vision.geometry.transforms import invert_transform


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


class Replay:
    """A tracker that records the dense-flow tracker's motions on the first pass and replays them after."""

    def __init__(self) -> None:
        self.live = DenseFlowTracker(width=400, refine=True)
        self.cache: list = []
        self.k = 0
        self.recording = True

    def motion(self, prev, curr, K, prior=None):
        if self.recording:
            self.cache.append(self.live.motion(prev, curr, K, prior=prior))
            return self.cache[-1]
        m = self.cache[self.k]
        self.k += 1
        return m

    def rewind(self) -> None:
        self.recording, self.k = False, 0


def step_errors(rel: list[np.ndarray], poses_gt: np.ndarray) -> np.ndarray:
    gt = np.array([np.linalg.norm((invert_transform(poses_gt[k]) @ poses_gt[k + 1])[:3, 3]) for k in range(len(rel))])
    est = np.array([np.linalg.norm(T[:3, 3]) for T in rel])
    keep = gt > 0.05
    return est[keep] / gt[keep] - 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "vo.onnx"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=None, help="folder for the table (.md) and the plot")
    parser.add_argument("--tols", default="0.01,0.02,0.04", help="inlier_tol values")
    parser.add_argument("--below", default="1,3,6", help="min_below_deg values")
    parser.add_argument("--windows", default="1,3,5,9", help="scale_window values")
    parser.add_argument("--tag", default="", help="suffix of the output files' names")
    args = parser.parse_args(argv)
    seqs = []
    kitti = Path(args.data) / "kitti" / "sequences" / "00"
    if kitti.is_dir():
        seqs.append(kitti_sequence(kitti, 0, 99).preloaded())
    seqs += [synthetic_sequence(seed, 300).preloaded() for seed in (3, 5)]
    grid = itertools.product(floats(args.tols), floats(args.below), [int(w) for w in floats(args.windows)])
    settings = [("network", None)] + [("ground", s) for s in grid]
    rows: dict[str, list[str]] = {}
    means: dict[str, float] = {}
    steps: dict[str, dict[str, np.ndarray]] = {}
    for seq in seqs:
        replay = Replay()
        for source, s in settings:
            label = source if s is None else f"tol {s[0]}, below {s[1]:g}°, window {s[2]}"
            kwargs = {} if s is None else {"ground": GroundPlaneScale(inlier_tol=s[0], min_below_deg=s[1]),
                                           "scale_window": s[2]}
            vo = VisualOdometry.from_model(args.model, camera=seq.camera, mode="hybrid", threads=1, tracker=replay,
                                           scale_source=source, **kwargs)
            rel, _ = run_vo(vo, seq)
            replay.rewind()
            err = step_errors(rel, seq.poses_gt)
            t_rel = kitti_relative_errors(seq.poses_gt, integrate(rel))["t_rel_pct"]
            rows.setdefault(label, []).append(f"{t_rel:.2f} ({100 * np.median(np.abs(err)):.1f} / "
                                              f"{100 * np.percentile(np.abs(err), 90):.1f})")
            means[label] = means.get(label, 0.0) + t_rel / len(seqs)
            steps.setdefault(label, {})[seq.name] = np.array([np.linalg.norm(T[:3, 3]) for T in rel])
        print(f"{seq.name}: done", flush=True)
    best = min((k for k in means if k != "network"), key=lambda k: means[k])
    lines = [f"# Ground-plane scale: settings on training sequences ({date.today().isoformat()})", "",
             f"- command: `.venv/bin/python experiments/vo_ground_scale.py {' '.join(sys.argv[1:])}`",
             f"- model: {args.model}; hybrid mode, dense-flow geometry (as shipped), ONNX Runtime 1 thread", "",
             "Each cell: t_rel % (median / 90th percentile of the per-frame step-length error, %).", "",
             "| setting | " + " | ".join(s.name for s in seqs) + " | mean t_rel % |",
             "|---|" + "---|" * (len(seqs) + 1)]
    for label in sorted(rows, key=lambda k: (k != "network", means[k])):
        name = f"**{label}**" if label == best else label
        lines.append(f"| {name} | " + " | ".join(rows[label]) + f" | {means[label]:.2f} |")
    lines += ["", f"Lowest mean t_rel: {best}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{date.today().isoformat()}-vo-ground-scale{'-' + args.tag if args.tag else ''}"
        (out / f"{stem}.md").write_text(text + f"\n![step lengths]({stem}.png)\n")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(len(seqs), 1, figsize=(10, 3 * len(seqs)), squeeze=False)
        for ax, seq in zip(axes[:, 0], seqs):
            gt = [np.linalg.norm((invert_transform(seq.poses_gt[k]) @ seq.poses_gt[k + 1])[:3, 3])
                  for k in range(len(seq.poses_gt) - 1)]
            ax.plot(gt, "k-", lw=2, label="ground truth")
            ax.plot(steps["network"][seq.name], label="network")
            ax.plot(steps[best][seq.name], label=f"ground plane ({best})")
            ax.set_title(seq.name)
            ax.set_ylabel("step length (m)")
            ax.legend(loc="lower right", fontsize=8)
        axes[-1, 0].set_xlabel("frame")
        fig.tight_layout()
        fig.savefig(out / f"{stem}.png", dpi=90)
        print(f"wrote {out / stem}.md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
