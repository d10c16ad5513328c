"""``deep-vision evaluate vo-cases``: where two-view geometry fails, with and without the VO network.

The shipped odometry (``config/perception.yaml``: hybrid mode, ground-plane scale) runs on held-out sequences
into which a stretch of ``STRETCH`` frames of one hard case is put:

- ``standing_still``: the camera stops (the last frame before the stretch again, each copy with fresh sensor
  noise; the ground truth stands);
- ``pure_rotation``: the camera pans on the spot, ±6° of yaw about its own centre (real frames: the image
  warped by K Rᵀ K⁻¹, exact for a rotating camera; synthetic: rendered at the rotated pose);
- ``low_texture``: contrast cut to 12 % and the detail blurred away (fog; synthetic: the renderer's haze at 6 m);
- ``motion_blur``: a 25-pixel linear blur (synthetic: the mean of 8 renders over the 100 ms frame interval, a
  shutter open for the whole frame, plus the same linear blur for the camera's shake);
- ``dark``: 6 % of the light, sensor noise, 8-bit quantisation (night);
- ``no_ground``: everything below the horizon covered by a flat grey (a hood, snow, a view of no floor);
- ``dark_stop``: standing still in the dark (waiting at a light at night): the stop of ``standing_still`` with
  the frames of ``dark``. A single condition at a steady speed leaves a classical VO its constant-velocity
  guess; a stop it cannot see breaks that guess.

Each case is run ``repeats`` times, the stretch starting at a different frame each time, by two configurations
that differ only in the network: **with** (``use_network: true``; frames without two-view geometry take the
network's step, frames without a ground plane its step length, both in the network's metres calibrated by the
ground) and **without** (``use_network: false``: the previous step, the last measured length — what a classical
monocular VO does); frames without translation parallax have no translation in both. Figures: the error of the
relative pose across the stretch (from the frame before it to the frame after it: translation in metres, rotation
in degrees) and the sequence's ATE (Sim(3)); mean and spread (standard deviation) over the repeats. The network
*earns its place* in a case where the without-network error exceeds the with-network error by more than both
spreads.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deep_vision.eval.trajectory_metrics import ate_rpe
from deep_vision.eval.vo_eval import VOSequence, integrate
from deep_vision.geometry.camera import PinholeCamera
from deep_vision.geometry.transforms import invert_transform, rotation_angle

logger = logging.getLogger(__name__)

CASES = ("standing_still", "pure_rotation", "low_texture", "motion_blur", "dark", "no_ground", "dark_stop")
STRETCH = 15  # frames of the hard case (1.5 s at 10 Hz)
PAN_DEG = 6.0


@dataclass
class CaseRun:
    frames: list[np.ndarray]
    stamps_ns: np.ndarray
    poses_gt: np.ndarray  # KITTI convention
    before: int  # index of the last frame before the stretch
    after: int  # index of the first frame after it


def _noise(img: np.ndarray, rng: np.random.Generator, sigma: float = 1.5) -> np.ndarray:
    return np.clip(img.astype(np.float32) + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def linear_blur(img: np.ndarray, length: int = 25, angle_deg: float = 10.0) -> np.ndarray:
    """Motion blur along a line ``length`` pixels long at ``angle_deg`` (the cases' blur; training's too)."""
    k = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1.0
    M = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), angle_deg, 1.0)
    k = cv2.warpAffine(k, M, (length, length))
    return cv2.filter2D(img, -1, k / k.sum(), borderType=cv2.BORDER_REFLECT)


def _yaw(deg: float) -> np.ndarray:
    """Rotation of a camera panning by ``deg`` about its own y axis (optical frame: y down)."""
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def _pan_angles() -> np.ndarray:
    return PAN_DEG * np.sin(2 * np.pi * np.arange(1, STRETCH + 1) / STRETCH)


class CaseSource:
    """A held-out sequence in which the cases are made: real frames (post-processed) or a synthetic world
    (rendered under the world's own controls where it has them)."""

    def __init__(self, seq: VOSequence, synthetic: Any = None, first: int = 0) -> None:
        self.seq = seq
        self.frames = list(seq.frames())
        self.synthetic = synthetic  # SyntheticSequence of the same frames (rendering controls) or None
        self.first = first  # the synthetic sequence's index of frame 0

    @property
    def name(self) -> str:
        return self.seq.name

    @property
    def camera(self) -> PinholeCamera:
        return self.seq.camera

    def _render(self, T_world_cam: np.ndarray, rng: np.random.Generator, haze_m: float | None = None) -> np.ndarray:
        from deep_vision.synthetic.renderer import Renderer

        s = self.synthetic
        renderer = s.renderer if haze_m is None else Renderer(s.world, s.camera, s.config.scene.sensor_noise, haze_m)
        img = renderer.render(T_world_cam, rng)
        return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)

    def make(self, case: str, start: int, seed: int) -> CaseRun:
        """The sequence with ``case`` over frames [start, start + STRETCH) (inserted for standing still and
        pure rotation, replacing the frames otherwise)."""
        rng = np.random.default_rng([seed, CASES.index(case)])
        frames, poses = list(self.frames), list(self.seq.poses_gt)
        dt = int(np.median(np.diff(self.seq.stamps_ns)))
        n = STRETCH
        if case in ("standing_still", "pure_rotation", "dark_stop"):
            base, pose = frames[start - 1], poses[start - 1]
            if case == "standing_still":
                new = [_noise(base, rng) for _ in range(n)]
                new_poses = [pose] * n
            elif case == "dark_stop":
                new = [self._degrade("dark", start - 1, base, rng) for _ in range(n)]
                new_poses = [pose] * n
            else:
                new, new_poses = [], []
                K = self.camera.K
                for deg in _pan_angles():
                    R = _yaw(deg)
                    T = pose.copy()
                    T[:3, :3] = pose[:3, :3] @ R
                    if self.synthetic is not None:
                        new.append(self._render(self.synthetic.T_world_cam[self.first + start - 1] @
                                                _rot4(R), rng))
                    else:
                        H = K @ R.T @ np.linalg.inv(K)
                        new.append(_noise(cv2.warpPerspective(base, H, base.shape[::-1],
                                                              borderMode=cv2.BORDER_REPLICATE), rng))
                    new_poses.append(T)
            frames = frames[:start] + new + frames[start:]
            poses = poses[:start] + new_poses + poses[start:]
            stamps = self.seq.stamps_ns[0] + dt * np.arange(len(frames), dtype=np.int64)
            return CaseRun(frames, stamps, np.stack(poses), start - 1, start + n)
        for i in range(start, start + n):
            frames[i] = self._degrade(case, i, frames[i], rng)
        return CaseRun(frames, self.seq.stamps_ns.copy(), np.stack(poses), start - 1, start + n)

    def _degrade(self, case: str, i: int, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        syn = self.synthetic
        if case == "low_texture":
            if syn is not None:
                return self._render(syn.T_world_cam[self.first + i], rng, haze_m=6.0)
            f = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 2.0)
            return _noise(np.clip(f.mean() + 0.12 * (f - f.mean()), 0, 255), rng)
        if case == "motion_blur":
            if syn is not None:
                T0, T1 = syn.T_world_cam[self.first + i - 1], syn.T_world_cam[self.first + i]
                acc = np.zeros(img.shape, np.float32)
                for a in np.linspace(0.0, 1.0, 8):
                    T = T1.copy()
                    T[:3, 3] = (1 - a) * T0[:3, 3] + a * T1[:3, 3]
                    acc += self._render(T, rng)
                return linear_blur(np.clip(acc / 8, 0, 255).astype(np.uint8))
            return _noise(linear_blur(img), rng)
        if case == "dark":
            return _noise(img.astype(np.float32) * 0.06, rng, sigma=1.0)
        if case == "no_ground":
            out = img.copy()
            horizon = int(self.camera.cy) + 15
            out[horizon:] = 90
            return _noise(out, rng)
        raise ValueError(case)


def _rot4(R: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    return T


def run_case(vo, run: CaseRun) -> tuple[np.ndarray, dict[str, int]]:
    """(poses [N x 4 x 4], how the stretch's frames were measured: OdometryResult.mode / .scale counts)."""
    rel, how = [], {}
    for k, frame in enumerate(run.frames):
        r = vo.process(frame, int(run.stamps_ns[k]))
        if k > 0:
            rel.append(r.relative)
        if run.before < k <= run.after:
            for key in (f"mode {r.mode}", f"scale {r.scale}"):
                how[key] = how.get(key, 0) + 1
    return integrate(rel), how


def stretch_error(run: CaseRun, poses: np.ndarray) -> tuple[float, float]:
    """(translation m, rotation deg) error of the relative pose from the frame before the stretch to the one
    after it."""
    gt = invert_transform(run.poses_gt[run.before]) @ run.poses_gt[run.after]
    est = invert_transform(poses[run.before]) @ poses[run.after]
    err = invert_transform(gt) @ est
    return float(np.linalg.norm(err[:3, 3])), float(np.degrees(rotation_angle(err[:3, :3])))


def evaluate(make_vo, sources: list[CaseSource], out: Path, repeats: int = 3, command: str = "",
             progress=None) -> Path:
    """Every case on every source, ``repeats`` times, with and without the network; writes ``report.md``,
    ``metrics.json`` and ``vo-cases.png`` in ``out``. ``make_vo(camera, height_m, network)``: a fresh VO."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    total = len(sources) * len(CASES) * repeats * 2
    done = 0
    update = progress(total, "vo cases") if progress else None
    for src in sources:
        n = len(src.frames)
        starts = [int(s) for s in np.linspace(20, n - STRETCH - 20, repeats)]
        for case in CASES:
            row: dict[str, Any] = {}
            for network in (True, False):
                t_err, r_err, ate, how = [], [], [], {}
                for rep, start in enumerate(starts):
                    run = src.make(case, start, seed=rep)
                    vo = make_vo(src.camera, src.seq.camera_height_m, network)
                    t0 = time.perf_counter()
                    poses, h = run_case(vo, run)
                    logger.debug("%s %s start %d: %.1f s", src.name, case, start, time.perf_counter() - t0)
                    te, re = stretch_error(run, poses)
                    t_err.append(te)
                    r_err.append(re)
                    stamps = (run.stamps_ns - run.stamps_ns[0]) / 1e9
                    ate.append(ate_rpe(run.poses_gt, poses, stamps, correct_scale=True)["ate_m"])
                    for k, v in h.items():
                        how[k] = how.get(k, 0) + v
                    done += 1
                    if update:
                        update(done)
                row["with" if network else "without"] = {
                    "stretch_trans_m": t_err, "stretch_rot_deg": r_err, "ate_sim3_m": ate, "frames_by": how,
                    "starts": starts}
            w, wo = row["with"], row["without"]
            margin = np.mean(wo["stretch_trans_m"]) - np.mean(w["stretch_trans_m"])
            spread = max(np.std(wo["stretch_trans_m"]), np.std(w["stretch_trans_m"]))
            row["network_helps"] = bool(margin > spread)
            row["margin_m"], row["spread_m"] = float(margin), float(spread)
            results.setdefault(src.name, {})[case] = row
    png = _plot(results, out / "vo-cases.png")
    md = _report(results, out / "report.md", png, command, repeats)
    (out / "metrics.json").write_text(json.dumps({"command": command, "stretch_frames": STRETCH,
                                                  "repeats": repeats, "sequences": results}, indent=2) + "\n")
    return md


def _ms(v: list[float]) -> str:
    return f"{np.mean(v):.2f} ± {np.std(v):.2f}"


def _report(results, path: Path, png: Path, command: str, repeats: int) -> Path:
    lines = [f"# VO in hard cases, with and without the network ({date.today().isoformat()})", "",
             f"- command: `{command}`",
             f"- {STRETCH}-frame stretch per case, {repeats} repeats at different frames (mean ± standard deviation); "
             "configuration: the parameter file's odometry_node (default config/perception.yaml: hybrid, ground "
             "scale); *with*: `use_network: true`, *without*: `use_network: false`.",
             "- stretch error: the relative pose from the frame before the stretch to the frame after it against "
             "the ground truth; ATE: Sim(3)-aligned, whole sequence.", ""]
    for name, cases in results.items():
        lines += [f"## {name}", "",
                  "| case | stretch error m, with | without | stretch error °, with | without | ATE Sim(3) m, with | "
                  "without | network helps (margin > spread) | stretch frames measured by (with) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for case, row in cases.items():
            w, wo = row["with"], row["without"]
            by = ", ".join(f"{k} {v}" for k, v in sorted(w["frames_by"].items()))
            lines.append(f"| {case} | {_ms(w['stretch_trans_m'])} | {_ms(wo['stretch_trans_m'])} | "
                         f"{_ms(w['stretch_rot_deg'])} | {_ms(wo['stretch_rot_deg'])} | {_ms(w['ate_sim3_m'])} | "
                         f"{_ms(wo['ate_sim3_m'])} | {'yes' if row['network_helps'] else 'no'} "
                         f"({row['margin_m']:+.2f} m, spread {row['spread_m']:.2f}) | {by} |")
        lines.append("")
    lines += [f"![stretch errors]({png.name})", ""]
    path.write_text("\n".join(lines))
    return path


def _plot(results, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    x = np.arange(len(CASES))
    for ax, name in zip(axes[0], names):
        for off, key, label in ((-0.2, "with", "with network"), (0.2, "without", "without network")):
            vals = [results[name][c][key]["stretch_trans_m"] for c in CASES]
            ax.bar(x + off, [np.mean(v) for v in vals], 0.4, yerr=[np.std(v) for v in vals], label=label, capsize=3)
        ax.set_xticks(x, [c.replace("_", "\n") for c in CASES], fontsize=8)
        ax.set_ylabel("stretch translation error (m)")
        ax.set_title(name, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def sources_from_cli(args) -> list[CaseSource]:
    from deep_vision.eval.vo_eval import kitti_ranges, kitti_sequence, synthetic_world

    sources = []
    for name, first, last in kitti_ranges(args.kitti_frames):
        folder = Path(args.data) / "kitti" / "sequences" / name
        if folder.is_dir():
            sources.append(CaseSource(kitti_sequence(folder, first, last)))
        else:
            logger.warning("no KITTI sequence %s under %s: left out", name, folder.parent)
    for seed in (int(s) for s in args.synthetic_seeds.split(",") if s):
        name, syn = synthetic_world(seed, args.synthetic_frames, speed_change_mps=args.speed_change)
        seq = VOSequence(name, syn.images, syn.stamps_ns, syn.kitti_poses, syn.camera, syn.config.camera.height_m)
        sources.append(CaseSource(seq, synthetic=syn))
    return sources


def evaluate_from_cli(args) -> int:
    from deep_vision.eval.progress import cli_command, progress_bars
    from deep_vision.eval.vo_eval import shipped_factory

    shipped = shipped_factory(args.params, args.model, args.threads)

    def make_vo(camera: PinholeCamera, height_m: float, network: bool):
        return shipped(camera, height_m, use_network=network)

    sources = sources_from_cli(args)
    with progress_bars() as progress:
        md = evaluate(make_vo, sources, Path(args.out), repeats=args.repeats, command=cli_command(),
                      progress=progress)
    print(md.read_text())
    print(f"report: {md}")
    return 0
