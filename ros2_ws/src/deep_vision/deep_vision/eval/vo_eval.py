"""``deep-vision evaluate vo``: the VO network against a classical monocular baseline, same frames, same run.

Methods, per sequence:

- ``network``: :class:`~deep_vision.estimators.odometry.VisualOdometry`, network mode, its own (learned) scale;
- ``network, GT scale``: the same motions with each step's length set to the ground truth's;
- ``hybrid``: two-view rotation/direction + the network's step length (the shipped hybrid mode);
- ``hybrid, ground scale``: the same geometry, the step length from the ground plane and the camera's height
  (``scale_source="ground"``; no ground truth and no network in the scale). From the command line this is
  ``shipped``: odometry_node as ``config/perception.yaml`` (or ``--params``) configures it, built by the code
  that builds the node;
- ``shipped, no network`` (or ``shipped, with network`` when the file says ``use_network: false``): the same
  with ``use_network`` the other way (frames without two-view geometry repeat the previous step instead of taking
  the network's; see ``deep-vision evaluate vo-cases`` for where that matters);
- ``hybrid, GT scale``: two-view rotation/direction + GT step length (the network's role is only the scale,
  so with GT scale this isolates the geometry; reported for completeness);
- ``classical, GT scale``: Shi–Tomasi + LK tracking + essential matrix RANSAC (no network), GT step length,
  the usual monocular evaluation; a frame whose geometry fails repeats the previous motion;
- ``classical + refinement, GT scale``: the same with RANSAC's rotation and direction refined on its inliers
  (``FeatureTracker(refine=True)``, as the hybrid mode does), so that the refinement's share of the hybrid's
  gain is visible.

Metrics: ATE (evo; SE(3) Umeyama alignment, the estimate's own metric scale, and Sim(3)), RPE per frame (evo),
KITTI t_rel/r_rel
(:mod:`deep_vision.eval.trajectory_metrics`, lengths scaled for short snippets), time per frame.
Trajectories are written in KITTI and TUM formats with a top-view plot per sequence.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np

from deep_vision.estimators.ground_scale import GroundPlaneScale
from deep_vision.estimators.two_view import FeatureTracker
from deep_vision.eval.trajectory_metrics import (
    ate_rpe,
    kitti_relative_errors,
    relative_error_keys,
    write_tum,
)
from deep_vision.geometry.camera import PinholeCamera
from deep_vision.geometry.kitti import write_kitti_poses
from deep_vision.geometry.transforms import invert_transform

logger = logging.getLogger(__name__)


@dataclass
class VOSequence:
    name: str
    frames: Callable[[], Iterable[np.ndarray]]  # fresh iterator of grey uint8 frames
    stamps_ns: np.ndarray
    poses_gt: np.ndarray  # [N x 4 x 4] KITTI convention
    camera: PinholeCamera
    camera_height_m: float = 1.65  # above the ground, for the ground-plane scale (KITTI's cameras: 1.65 m)

    def preloaded(self) -> "VOSequence":
        """The same sequence with its frames read (or rendered) once and kept in memory, for repeated runs."""
        frames = list(self.frames())
        return replace(self, frames=lambda: iter(frames))


def integrate(relatives: list[np.ndarray]) -> np.ndarray:
    poses = [np.eye(4)]
    for T in relatives:
        poses.append(poses[-1] @ T)
    return np.stack(poses)


def with_gt_scale(relatives: list[np.ndarray], poses_gt: np.ndarray) -> list[np.ndarray]:
    """Each step's translation rescaled to the ground-truth step length (direction kept)."""
    out = []
    for k, T in enumerate(relatives):
        gt_len = np.linalg.norm((invert_transform(poses_gt[k]) @ poses_gt[k + 1])[:3, 3])
        n = np.linalg.norm(T[:3, 3])
        S = T.copy()
        S[:3, 3] = T[:3, 3] / n * gt_len if n > 1e-9 else 0.0
        out.append(S)
    return out


def run_vo(vo, seq: VOSequence) -> tuple[list[np.ndarray], list[float]]:
    """(relatives T_prev_curr, time per frame ms, the first frame's included) — ``vo`` is a fresh
    VisualOdometry."""
    rel, times = [], []
    for k, frame in enumerate(seq.frames()):
        t0 = time.perf_counter()
        r = vo.process(frame, int(seq.stamps_ns[k]))
        times.append((time.perf_counter() - t0) * 1e3)
        if k > 0:
            rel.append(r.relative)
    return rel, times


def run_classical(seq: VOSequence, tracker: FeatureTracker | None = None) -> tuple[list[np.ndarray], list[float], int]:
    tracker = tracker or FeatureTracker()
    rel, times, failures = [], [], 0
    prev = None
    last = np.eye(4)
    for k, frame in enumerate(seq.frames()):
        t0 = time.perf_counter()
        if prev is not None:
            m = tracker.motion(prev, frame, seq.camera.K)
            if m is None:
                failures += 1
                T = last.copy()
            else:
                T = np.eye(4)
                T[:3, :3], T[:3, 3] = m.R, m.t_dir
            rel.append(T)
            last = T
        times.append((time.perf_counter() - t0) * 1e3)
        prev = frame
    return rel, times, failures


def noise_calibration(poses_gt: np.ndarray, poses_est: np.ndarray, span: int = 100) -> dict[str, float]:
    """Per-step noise of the VO's covariance model (``VisualOdometry`` / odometry_node ``*_noise_*``) that
    matches its measured errors: ``rot_noise_abs`` (rad, per axis) such that the rotation error over
    ``span`` frames has the variance of ``span`` independent steps (so systematic drift at that scale is
    covered), and ``trans_noise_rel`` from the per-step translation error relative to the step length."""
    from scipy.spatial.transform import Rotation

    n = len(poses_gt)
    span = max(1, min(span, n - 1))
    angles = []
    for s0 in range(0, n - span, 5):
        err = invert_transform(invert_transform(poses_est[s0]) @ poses_est[s0 + span]) @ \
            (invert_transform(poses_gt[s0]) @ poses_gt[s0 + span])
        angles.append(Rotation.from_matrix(err[:3, :3]).magnitude())
    rel_t = []
    for k in range(n - 1):
        gt = invert_transform(poses_gt[k]) @ poses_gt[k + 1]
        est = invert_transform(poses_est[k]) @ poses_est[k + 1]
        length = np.linalg.norm(gt[:3, 3])
        if length > 0.1:
            rel_t.append(np.linalg.norm(est[:3, 3] - gt[:3, 3]) / length)
    return {"suggested_rot_noise_abs": float(np.sqrt(np.mean(np.square(angles)) / (3 * span))) if angles else float("nan"),
            "suggested_trans_noise_rel": float(np.sqrt(np.mean(np.square(rel_t)) / 3)) if rel_t else float("nan"),
            "calibration_span_frames": span}


def trajectory_plot(seq: VOSequence, trajectories: dict[str, np.ndarray], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 6))
    ax.plot(seq.poses_gt[:, 0, 3], seq.poses_gt[:, 2, 3], "k-", lw=2.5, label="ground truth")
    for name, poses in trajectories.items():
        ax.plot(poses[:, 0, 3], poses[:, 2, 3], lw=1.3, label=name)
    ax.set_xlabel("x (m, camera 0 right)")
    ax.set_ylabel("z (m, camera 0 forward)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(seq.name)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def evaluate(vo_factory: Callable[..., object] | None, sequences: list[VOSequence], out: Path,
             command: str = "", model_label: str = "",
             shipped: Callable[[PinholeCamera, float], object] | None = None) -> Path:
    """Run every method on every sequence; write trajectories, plots and ``vo-<date>.md/json``; return the md.

    ``vo_factory(camera, mode, **kwargs)``: a fresh VisualOdometry (kwargs: VisualOdometry's keyword arguments).
    ``shipped(camera, camera_height_m)``: a fresh VisualOdometry as the node builds it; it replaces the
    ``hybrid, ground scale`` row by ``shipped`` and adds it with ``use_network`` the other way.
    """
    out.mkdir(parents=True, exist_ok=True)
    stem = f"vo-{date.today().isoformat()}"
    traj_dir = out / f"{stem}-trajectories"
    report: dict[str, dict] = {}
    lines = [f"# Visual odometry evaluation ({date.today().isoformat()})", "", f"- command: {command}",
             f"- model: {model_label or 'none (classical only)'}", ""]
    for seq in sequences:
        stamps_s = (seq.stamps_ns - seq.stamps_ns[0]) / 1e9
        methods: dict[str, tuple[np.ndarray, list[float]]] = {}
        if vo_factory is not None:
            rel, t = run_vo(vo_factory(seq.camera, "network"), seq)
            methods["network"] = (integrate(rel), t)
            methods["network, GT scale"] = (integrate(with_gt_scale(rel, seq.poses_gt)), t)
            rel_h, t_h = run_vo(vo_factory(seq.camera, "hybrid"), seq)
            methods["hybrid"] = (integrate(rel_h), t_h)
            methods["hybrid, GT scale"] = (integrate(with_gt_scale(rel_h, seq.poses_gt)), t_h)
            if shipped is None:
                rel_g, t_g = run_vo(vo_factory(seq.camera, "hybrid", scale_source="ground",
                                               ground=GroundPlaneScale(height_m=seq.camera_height_m)), seq)
                methods["hybrid, ground scale"] = (integrate(rel_g), t_g)
            else:
                rel_g, t_g = run_vo(shipped(seq.camera, seq.camera_height_m), seq)
                methods["shipped"] = (integrate(rel_g), t_g)
                flip = not getattr(shipped, "params", {}).get("use_network", True)
                rel_n, t_n = run_vo(shipped(seq.camera, seq.camera_height_m, use_network=flip), seq)
                methods["shipped, with network" if flip else "shipped, no network"] = (integrate(rel_n), t_n)
        failures: dict[str, int] = {}
        for name, tracker in (("classical, GT scale", FeatureTracker()),
                              ("classical + refinement, GT scale", FeatureTracker(refine=True))):
            rel_c, t_c, failures[name] = run_classical(seq, tracker)
            methods[name] = (integrate(with_gt_scale(rel_c, seq.poses_gt)), t_c)
        rows = {}
        for name, (poses, times) in methods.items():
            m = {**ate_rpe(seq.poses_gt, poses, stamps_s), **kitti_relative_errors(seq.poses_gt, poses),
                 "ate_sim3_m": ate_rpe(seq.poses_gt, poses, stamps_s, correct_scale=True)["ate_m"],
                 "time_ms_p50": float(np.median(times[1:])) if len(times) > 1 else float("nan")}
            if name in failures:
                m["geometry_failures"] = failures[name]
            m.update(noise_calibration(seq.poses_gt, poses))
            rows[name] = m
            slug = name.replace(", ", "_").replace(" ", "_")
            write_kitti_poses(traj_dir / f"{seq.name}_{slug}.txt", poses)
            write_tum(traj_dir / f"{seq.name}_{slug}.tum", stamps_s + seq.stamps_ns[0] / 1e9, poses)
        write_kitti_poses(traj_dir / f"{seq.name}_ground_truth.txt", seq.poses_gt)
        write_tum(traj_dir / f"{seq.name}_ground_truth.tum", stamps_s + seq.stamps_ns[0] / 1e9, seq.poses_gt)
        png = trajectory_plot(seq, {k: v[0] for k, v in methods.items()}, out / f"{stem}-{seq.name}.png")
        length = float(np.linalg.norm(np.diff(seq.poses_gt[:, :3, 3], axis=0), axis=1).sum())
        t_key, r_key, protocol = relative_error_keys(rows[next(iter(rows))])
        t_name = "t_rel" if t_key == "t_rel_pct" else "t_rel (snippet)"
        r_name = "r_rel" if t_key == "t_rel_pct" else "r_rel (snippet)"
        lines += [f"## {seq.name}: {len(seq.stamps_ns)} frames, {length:.0f} m, "
                  f"segment lengths {rows[next(iter(rows))]['lengths_m']} m ({protocol})", "",
                  f"| method | {t_name} % | {r_name} °/100 m | ATE SE(3) m | ATE Sim(3) m | RPE m/frame | RPE °/frame | "
                  "time/frame ms | noise fit: rot rad/step, trans rel |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, m in rows.items():
            lines.append(f"| {name} | {m[t_key]:.2f} | {m[r_key]:.2f} | {m['ate_m']:.2f} | {m['ate_sim3_m']:.2f} | "
                         f"{m['rpe_trans_m']:.3f} | {m['rpe_rot_deg']:.3f} | {m['time_ms_p50']:.1f} | "
                         f"{m['suggested_rot_noise_abs']:.4f}, {m['suggested_trans_noise_rel']:.3f} |")
        lines += ["", "Noise fit: the odometry_node parameters `rot_noise_abs` and `trans_noise_rel` with which the "
                  "VO covariance matches these errors (`noise_calibration`: rotation drift over 100 frames, "
                  "translation per step).", "", f"![{seq.name}]({png.name})", ""]
        report[seq.name] = {"frames": len(seq.stamps_ns), "length_m": length, "methods": rows}
    lines += [f"Trajectories (KITTI and TUM formats): `{traj_dir.name}/`.", ""]
    md = out / f"{stem}.md"
    md.write_text("\n".join(lines))
    (out / f"{stem}.json").write_text(json.dumps({"command": command, "model": model_label, "sequences": report},
                                                 indent=2) + "\n")
    return md


def kitti_sequence(seq_dir: Path, first: int, last: int) -> VOSequence:
    from deep_vision.io.kitti import KittiSequence

    k = KittiSequence(seq_dir)
    if k.poses is None:
        raise ValueError(f"{seq_dir}: no ground-truth poses")
    idx = list(range(first, min(last, len(k) - 1) + 1))
    poses = invert_transform(k.poses[idx[0]]) @ k.poses[idx]
    return VOSequence(f"kitti_{seq_dir.name}_{first}-{idx[-1]}", lambda: (k.image(i) for i in idx),
                      np.round(k.times[idx] * 1e9).astype(np.int64), poses, k.camera,
                      1.65)  # KITTI's cameras sit 1.65 m above the road (Geiger et al., IJRR 2013)


def synthetic_world(seed: int, frames: int, varied: bool = False, speed_change_mps: float = 0.0):
    """(name, SyntheticSequence) of world ``seed``'s route: the default one, or with ``varied`` a geometry of its
    own (``vary_route``); with ``speed_change_mps`` the speed swings by that much (``RouteConfig``)."""
    from deep_vision.synthetic import SyntheticSequence, SyntheticWorldConfig
    from deep_vision.synthetic.route import vary_route

    config = SyntheticWorldConfig(seed=seed, frames=frames)
    if varied:
        vary_route(config.route, np.random.default_rng([seed, 31]))
    config.route = replace(config.route, speed_change_mps=float(speed_change_mps))  # checked
    name = f"synthetic_seed{seed}{'_varied' if varied else ''}" + \
        (f"_speed+-{speed_change_mps:g}" if speed_change_mps else "")
    return name, SyntheticSequence(config)


def synthetic_sequence(seed: int, frames: int, varied: bool = False, speed_change_mps: float = 0.0) -> VOSequence:
    """World ``seed``'s route as a VOSequence (:func:`synthetic_world`)."""
    name, s = synthetic_world(seed, frames, varied, speed_change_mps)
    return VOSequence(name, s.images, s.stamps_ns, s.kitti_poses, s.camera, s.config.camera.height_m)


def kitti_ranges(spec: str) -> list[tuple[str, int, int]]:
    """``--kitti-frames``: comma-separated ``SEQ:FIRST:LAST`` (or ``FIRST:LAST``, sequence 00), inclusive."""
    from deep_vision.errors import ConfigError

    out = []
    for item in (i.strip() for i in spec.split(",") if i.strip()):
        parts = item.split(":")
        try:
            if len(parts) == 2:
                out.append(("00", int(parts[0]), int(parts[1])))
            elif len(parts) == 3:
                out.append((parts[0], int(parts[1]), int(parts[2])))
            else:
                raise ValueError(item)
        except ValueError as exc:
            raise ConfigError(f"--kitti-frames: {item!r} is not SEQ:FIRST:LAST or FIRST:LAST") from exc
        if out[-1][1] > out[-1][2]:
            raise ConfigError(f"--kitti-frames: {item!r} ends before it starts")
    return out


def evaluate_from_cli(args) -> int:
    """``deep-vision evaluate vo``: the model (``--model``, or ``none`` for the classical baseline only)."""
    from deep_vision.estimators.odometry import VisualOdometry
    from deep_vision.eval.progress import cli_command

    sequences: list[VOSequence] = []
    for name, first, last in kitti_ranges(args.kitti_frames):
        kitti = Path(args.data) / "kitti" / "sequences" / name
        if kitti.is_dir():
            sequences.append(kitti_sequence(kitti, first, last))
        else:
            logger.warning("no KITTI sequence %s under %s: left out", name, kitti.parent)
    for seed in (int(s) for s in args.synthetic_seeds.split(",") if s):
        sequences.append(synthetic_sequence(seed, args.synthetic_frames, speed_change_mps=args.speed_change))
    for seed in (int(s) for s in args.varied_seeds.split(",") if s):
        sequences.append(synthetic_sequence(seed, args.synthetic_frames, varied=True,
                                            speed_change_mps=args.speed_change))
    factory = shipped = None
    label = ""
    if args.model != "none":
        model = args.model
        if model is None:
            from deep_vision.resources import default_model_path

            model = str(default_model_path("vo"))
        label = model

        def factory(camera: PinholeCamera, mode: str, **kwargs):
            return VisualOdometry.from_model(model, backend=args.backend, camera=camera, mode=mode,
                                             threads=args.threads or None, **kwargs)

        shipped = shipped_factory(args.params, model, args.threads)

    md = evaluate(factory, sequences, Path(args.out), command=cli_command(),
                  model_label=label, shipped=shipped)
    print(md.read_text())
    print(f"report: {md}")
    if getattr(args, "update_card", False) and factory is not None:
        print(f"model card updated: {update_card(Path(label), md.with_suffix('.json'))}")
    return 0


def shipped_factory(params_file: str | None = None, model: str | None = None, threads: int = 0):
    """``(camera, camera_height_m, **parameters) -> VisualOdometry`` built from odometry_node's parameters in
    ``params_file``
    (default: the shipped config/perception.yaml) by the node's own builder; ``model``/``threads`` override
    model_path/threads."""
    from deep_vision.params import load_params
    from deep_vision.pipeline.build import build_odometry
    from deep_vision.resources import default_params_path

    params = load_params(params_file or default_params_path())["odometry_node"]
    if model:
        params = {**params, "model_path": str(model)}
    if threads:
        params = {**params, "threads": int(threads)}

    def make(camera: PinholeCamera, camera_height_m: float, **overrides):
        return build_odometry({**params, "camera_height_m": float(camera_height_m), **overrides}, camera)

    make.params = params  # type: ignore[attr-defined]
    return make


def update_card(model_path: Path, report_json: Path) -> Path:
    """Copy the held-out trajectory metrics of a report into the model card beside ``model_path``."""
    from deep_vision.inference.modelcard import ModelCard, card_path_for

    card_path = card_path_for(Path(model_path))
    card = ModelCard.load(card_path)
    report = json.loads(Path(report_json).read_text())
    keys = ("t_rel_pct", "r_rel_deg_per_100m", "t_rel_snippet_pct", "r_rel_snippet_deg_per_100m", "ate_m",
            "ate_sim3_m", "rpe_trans_m", "rpe_rot_deg", "time_ms_p50")
    metrics = dict(card.metrics or {})
    metrics["held_out"] = {
        name: {"frames": seq["frames"], "length_m": round(seq["length_m"], 1),
               "segment_lengths_m": next(iter(seq["methods"].values()))["lengths_m"],
               **{method: {k: round(float(m[k]), 4) for k in keys if k in m} for method, m in seq["methods"].items()}}
        for name, seq in report["sequences"].items()}
    metrics["report"] = Path(report_json).with_suffix(".md").name
    card.metrics = metrics
    card.save(card_path)
    return card_path
