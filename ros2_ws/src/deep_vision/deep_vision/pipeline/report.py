"""Metrics, plots, report and output bag of a pipeline run (``deep-vision evaluate BAG``, ``deep-vision demo``).

Ground truth comes from the bag: camera poses from ``/ground_truth/odometry``
and the ``/tf_static`` extrinsic, ground-plane homographies from
``/ground_truth/homography`` (synthetic bags), GPS from ``/gps/fix``.

- **Homography**: mean distance (pixels, full resolution) between points of
  the ground region (lower 30 % of the image, central half) mapped by the
  estimate and by the ground-plane homography, where the bag has it, beside
  the same for "no motion". The frame-to-frame homography describes the
  dominant surface, which the ground is in most but not all frames, so this is
  a consistency measure, not the held-out protocol of ``evaluate homography``.
- **Loop closure**: per keyframe, the best verified candidate is a detection;
  it is correct when the two camera centres are within ``correct_radius_m``
  (heading within 45°). The right ones' relative poses are compared with the
  truth (translation, rotation, share metric). A keyframe is a true loop when an earlier keyframe
  outside the recency window lies within ``loop_radius_m``. Precision, recall,
  recall at 100 % precision and the PR curve over the descriptor similarity.
- **VO and pose graph**: ATE (RMSE after SE(3) Umeyama alignment, and with
  scale for reference), RPE and KITTI t_rel/r_rel of the raw VO and of the
  optimised trajectory. A loop closure the graph accepted is correct when its
  two cameras are within ``correct_radius_m`` (heading within 45°), or when
  the constraint it adds agrees with the ground truth (rotation within 5°,
  translation within 1 m).
- **Latency**: processing time per frame and stage, and in realtime mode the
  frames dropped because a stage was still busy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from deep_vision.eval.place_eval import precision_recall, recall_at_full_precision
from deep_vision.eval.trajectory_metrics import (
    ate_rpe,
    kitti_relative_errors,
    write_tum,
)
from deep_vision.geometry.homography import apply_homography
from deep_vision.geometry.transforms import invert_transform, rotation_angle
from deep_vision.io.bag import GPS_TOPIC
from deep_vision.pipeline.run import STAGES, PipelineOutputs

GT_HOMOGRAPHY_TOPIC = "/ground_truth/homography"


def _pct(values: list[float] | np.ndarray) -> dict[str, float]:
    v = np.asarray(values, float)
    if v.size == 0:
        return {"p50": math.nan, "p95": math.nan, "mean": math.nan, "n": 0}
    return {"p50": float(np.median(v)), "p95": float(np.percentile(v, 95)), "mean": float(v.mean()), "n": int(v.size)}


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    return obj


class GroundTruth:
    """Camera poses (KITTI convention) per stamp, from a bag."""

    def __init__(self, bag, camera_frame: str) -> None:
        self.stamps, self.poses = bag.camera_poses_kitti(camera_frame)

    def at(self, stamps_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask of stamps with a pose within 1 ms, poses of those stamps)."""
        stamps_ns = np.asarray(stamps_ns, np.int64)
        i = np.clip(np.searchsorted(self.stamps, stamps_ns), 0, len(self.stamps) - 1)
        j = np.clip(i - 1, 0, len(self.stamps) - 1)
        best = np.where(np.abs(self.stamps[i] - stamps_ns) <= np.abs(self.stamps[j] - stamps_ns), i, j)
        ok = np.abs(self.stamps[best] - stamps_ns) <= 1_000_000
        return ok, self.poses[best[ok]]

    def close(self, a_ns: int, b_ns: int, radius_m: float, max_heading_deg: float = 45.0) -> bool:
        ok, P = self.at(np.array([a_ns, b_ns]))
        if not ok.all():
            return False
        d = np.linalg.norm(P[0, :3, 3] - P[1, :3, 3])
        R = P[0, :3, :3].T @ P[1, :3, :3]
        angle = np.degrees(rotation_angle(R))
        return bool(d <= radius_m and angle <= max_heading_deg)


    def loop_correct(self, decision, radius_m: float, T_base_cam: np.ndarray, max_rotation_deg: float = 5.0,
                     max_translation_m: float = 1.0) -> bool:
        """A loop closure the graph accepted is correct when both cameras see the same place (centres within
        ``radius_m``, headings within 45 deg) or when the constraint it adds agrees with the truth: rotation
        within 5 deg and translation within 1 m of the true T_query_match between the base_link frames."""
        if self.close(decision.query_stamp_ns, decision.match_stamp_ns, radius_m):
            return True
        ok, P = self.at(np.array([decision.query_stamp_ns, decision.match_stamp_ns]))
        if not ok.all() or decision.measurement is None:
            return False
        E = invert_transform(self.base_relative(P, T_base_cam)) @ decision.measurement
        return bool(np.degrees(rotation_angle(E[:3, :3])) <= max_rotation_deg
                    and np.linalg.norm(E[:3, 3]) <= max_translation_m)

    @staticmethod
    def base_relative(P: np.ndarray, T_base_cam: np.ndarray) -> np.ndarray:
        """True T_query_match between base_link frames from the two camera poses ``P`` [2 x 4 x 4] (query, match)."""
        Xi = invert_transform(T_base_cam)
        return T_base_cam @ invert_transform(P[0]) @ P[1] @ Xi


# ============================================================================ metrics
def homography_metrics(out: PipelineOutputs, bag) -> dict[str, Any]:
    m: dict[str, Any] = {"pairs": len(out.homographies),
                         "valid_fraction": float(np.mean([h.valid for h in out.homographies])) if out.homographies
                         else math.nan}
    if GT_HOMOGRAPHY_TOPIC not in bag.topics or not out.homographies:
        m["ground_error_px"] = None
        return m
    gt = {}
    for _, _, msg in bag.messages([GT_HOMOGRAPHY_TOPIC]):
        s = int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)
        gt[s] = np.asarray(msg.matrix, float).reshape(3, 3)
    cam = bag.camera
    if cam is None:
        m["ground_error_px"] = None
        return m
    # The ground region: the lower 30 % of the image, the central half of its width.
    ys, xs = np.mgrid[0.72:0.98:6j, 0.25:0.75:9j]
    pts = np.stack([xs.ravel() * (cam.width - 1), ys.ravel() * (cam.height - 1)], axis=1)
    errors, identity = [], []
    for h in out.homographies:
        if h.stamp_ns in gt:
            ref = apply_homography(gt[h.stamp_ns], pts)
            errors.append(float(np.linalg.norm(apply_homography(h.matrix, pts) - ref, axis=1).mean()))
            identity.append(float(np.linalg.norm(pts - ref, axis=1).mean()))
    m["ground_error_px"] = _pct(errors)
    m["ground_error_identity_px"] = _pct(identity)
    m["under_2px"] = float(np.mean(np.asarray(errors) < 2.0)) if errors else math.nan
    return m


def loop_closure_metrics(out: PipelineOutputs, gt: GroundTruth | None, *, exclude_recent_s: float,
                         loop_radius_m: float, correct_radius_m: float) -> tuple[dict[str, Any], tuple]:
    m: dict[str, Any] = {"keyframes": len(out.keyframes)}
    if gt is None:
        m["note"] = "no ground truth in the bag"
        return m, (np.zeros(0), np.zeros(0))
    kf_stamps = [r.stamp_ns for r in out.keyframes]
    ok, P = gt.at(np.array(kf_stamps, np.int64)) if kf_stamps else (np.zeros(0, bool), np.zeros((0, 4, 4)))
    centres = np.full((len(kf_stamps), 3), np.nan)
    centres[ok] = P[:, :3, 3]
    loops = 0
    scores, correct, found = [], [], []
    for i, r in enumerate(out.keyframes):
        older = [j for j in range(i) if (kf_stamps[i] - kf_stamps[j]) / 1e9 > exclude_recent_s]
        is_loop = bool(older) and any(gt.close(kf_stamps[i], kf_stamps[j], loop_radius_m) for j in older)
        loops += is_loop
        v = r.verified
        if not v:
            continue
        best = v[0]
        c = gt.close(r.stamp_ns, best.match_stamp_ns, correct_radius_m)
        scores.append(best.similarity)
        correct.append(c)
        found.append(is_loop)
    p, rc, _ = precision_recall(np.array(scores), np.array(correct, bool), loops, np.array(found, bool))
    c = np.array(correct, bool)
    m.update({"loops": loops, "detections": len(scores),
              "precision": float(c.mean()) if len(c) else math.nan,
              "recall": float((c & np.array(found, bool)).sum() / max(loops, 1)) if loops else math.nan,
              "recall_at_100_precision": (recall_at_full_precision(p, rc) if len(p) else 0.0) if loops else math.nan,
              "loop_radius_m": loop_radius_m, "correct_radius_m": correct_radius_m})
    return m, (p, rc)


def relative_pose_metrics(out: PipelineOutputs, gt: GroundTruth, T_base_cam: np.ndarray,
                          correct_radius_m: float) -> dict[str, Any]:
    """Errors of the verified candidates' relative poses against the truth, over the candidates that are right
    (cameras within ``correct_radius_m``): the published T_query_match (base_link frames; metric or not) and,
    beside it, the essential matrix's rotation and translation direction (camera frames)."""
    t_err, t_pct, r_err, nees, dir_err, e_rot = [], [], [], [], [], []
    with_pose = metric = 0
    for r in out.keyframes:
        for c in r.candidates:
            v = c.verification
            if not c.verified or not c.has_relative_pose or v.constraint is None:
                continue
            if not gt.close(r.stamp_ns, c.match_stamp_ns, correct_radius_m):
                continue
            ok, P = gt.at(np.array([r.stamp_ns, c.match_stamp_ns]))
            if not ok.all():
                continue
            with_pose += 1
            T_true = GroundTruth.base_relative(P, T_base_cam)
            E = T_true @ invert_transform(v.constraint)  # left error, query base_link axes
            r_err.append(float(np.degrees(rotation_angle(E[:3, :3]))))
            T_mq = invert_transform(P[1]) @ P[0]  # camera level: query camera in the match camera
            e_rot.append(float(np.degrees(rotation_angle(T_mq[:3, :3].T @ v.rotation))))
            baseline = float(np.linalg.norm(T_mq[:3, 3]))
            if baseline > 0.5:  # a shorter baseline's direction is not observable
                d = float(v.translation @ T_mq[:3, 3]) / baseline / max(float(np.linalg.norm(v.translation)), 1e-12)
                dir_err.append(float(np.degrees(np.arccos(np.clip(d, -1.0, 1.0)))))
            if v.metric:
                metric += 1
                t_err.append(float(np.linalg.norm(E[:3, 3])))
                t_pct.append(100.0 * t_err[-1] / max(float(np.linalg.norm(T_true[:3, 3])), 1e-6))
                xi = np.r_[E[:3, 3], E[2, 1] - E[1, 2], E[0, 2] - E[2, 0], E[1, 0] - E[0, 1]] * np.r_[1, 1, 1, .5, .5, .5]
                try:
                    nees.append(float(xi @ np.linalg.solve(v.constraint_covariance, xi)))
                except np.linalg.LinAlgError:
                    pass
    return {"candidates": with_pose, "metric_share": metric / with_pose if with_pose else math.nan,
            "translation_error_m": _pct(t_err), "translation_error_pct_of_baseline": _pct(t_pct),
            "rotation_error_deg": _pct(r_err), "nees_6dof": _pct(nees),
            "essential_rotation_error_deg": _pct(e_rot), "essential_direction_error_deg": _pct(dir_err)}


def trajectory_metrics(out: PipelineOutputs, gt: GroundTruth | None, graph, T_base_cam: np.ndarray,
                       correct_radius_m: float,
                       plots: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """VO (camera poses T_c0_ci) and pose graph (base_link in map, moved to the camera by ``T_base_cam``) against
    the ground truth in the first camera's frame."""
    vo: dict[str, Any] = {"frames": len(out.odometry), "resets": sum(r.reset is not None for r in out.odometry)}
    pg: dict[str, Any] = {}
    traj: dict[str, np.ndarray] = {}
    traj_stamps: dict[str, np.ndarray] = {}
    plots["trajectory_stamps"] = traj_stamps
    if not out.odometry:
        return vo, pg, traj
    stamps = np.array([r.stamp_ns for r in out.odometry], np.int64)
    raw = np.array([r.pose for r in out.odometry])
    traj["vo"], traj_stamps["vo"] = raw, stamps
    if graph is not None:
        graph_stamps, opt = graph.optimized_trajectory()
        X = T_base_cam  # map = odom = base_link of the first frame; the camera's first pose is X
        traj["pose graph"], traj_stamps["pose graph"] = invert_transform(X) @ opt @ X, graph_stamps
        st = graph.stats
        pg.update({"keyframes": st.keyframes, "loops_received": st.loops_received, "loops_accepted": st.loops_accepted,
                   "loops_rejected": dict(st.loops_rejected)})
    if gt is None:
        return vo, pg, traj
    ok, P = gt.at(stamps)
    if ok.sum() < 3 or vo["resets"]:
        vo["note"] = "fewer than 3 frames with ground truth" if ok.sum() < 3 else \
            "the VO restarted mid-run: trajectory metrics of the first segment only are not computed"
        return vo, pg, traj
    P = invert_transform(P[0]) @ P  # ground truth in the first camera's frame, like the VO
    traj["ground truth"] = P
    traj_stamps["ground truth"] = stamps[ok]
    t_s = (stamps[ok] - stamps[ok][0]) / 1e9

    def scores(est: np.ndarray) -> dict[str, Any]:
        e = est[ok]
        s = {**ate_rpe(P, e, t_s), **{k: v for k, v in kitti_relative_errors(P, e).items() if k != "lengths_m"}}
        s["ate_sim3_m"] = ate_rpe(P, e, t_s, correct_scale=True)["ate_m"]
        s["final_drift_m"] = float(np.linalg.norm(e[-1, :3, 3] - P[-1, :3, 3]))
        return s

    vo.update(scores(raw))
    vo["length_m"] = float(np.linalg.norm(np.diff(P[:, :3, 3], axis=0), axis=1).sum())
    if graph is not None and len(traj_stamps["pose graph"]) != len(stamps):
        pg["note"] = "frames missing from the pose graph (stamps not increasing): its trajectory metrics are not computed"
    elif graph is not None:
        pg.update(scores(traj["pose graph"]))
        pg["ate_reduction_pct"] = 100.0 * (1.0 - pg["ate_m"] / vo["ate_m"]) if vo["ate_m"] > 0 else math.nan
        accepted = [d for d in out.loop_decisions if d.accepted]
        good = [gt.loop_correct(d, correct_radius_m, T_base_cam) for d in accepted]
        pg["accepted_correct"] = int(sum(good))
        pg["accepted_precision"] = float(np.mean(good)) if good else math.nan
    return vo, pg, traj


def geolocation_metrics(out: PipelineOutputs, fixes: list[Any]) -> dict[str, Any] | None:
    """Great-circle error of each keyframe's geolocation against the bag's fix nearest in time (GpsFix list)."""
    if not fixes:
        return None
    from deep_vision.estimators.geolocation import haversine_m

    stamps = np.array([f.stamp_ns for f in fixes], np.int64)
    errors = []
    for r in out.keyframes:
        if r.geolocation is None:
            continue
        i = int(np.argmin(np.abs(stamps - r.stamp_ns)))
        if abs(stamps[i] - r.stamp_ns) <= 500_000_000:
            errors.append(float(haversine_m(r.geolocation.latitude, r.geolocation.longitude, fixes[i].latitude,
                                            fixes[i].longitude)))
    return {"estimates": len(errors), "haversine_error_m": _pct(errors)}


def ground_truth_of(bag, camera_frame: str | None = None) -> GroundTruth | None:
    """The bag's ground truth for ``camera_frame`` (default: the bag's camera), or None when it has none usable."""
    if camera_frame is None:
        camera_frame = camera_frame_of(bag)
    try:
        if camera_frame is not None and len(bag.ground_truth[0]):
            return GroundTruth(bag, camera_frame)
    except Exception:  # noqa: BLE001 - no usable ground truth: metrics (and views) without it
        pass
    return None


def compute_metrics(out: PipelineOutputs, bag, pipeline, *, mode: str, camera_frame: str | None = None,
                    loop_radius_m: float = 5.0, correct_radius_m: float = 10.0) -> tuple[dict[str, Any], dict]:
    """(metrics.json content, plot data)."""
    gt = ground_truth_of(bag, camera_frame)
    metrics: dict[str, Any] = {"bag": str(bag.path), "mode": mode, "frames": out.frames, "bad_frames": out.bad_frames,
                               "damaged_messages": int(getattr(bag, "damaged_messages", 0)),
                               "wall_s": out.wall_s, "stages": list(pipeline.stages),
                               "ground_truth": gt is not None}
    plots: dict[str, Any] = {}
    for stage in STAGES:
        if stage not in pipeline.stages:
            continue
        s = out.stats[stage]
        metrics[stage] = {"frames_in": s.frames_in, "processed": s.processed, "dropped": s.dropped,
                          "skipped": s.skipped,
                          "errors": s.errors, "latency_ms": _pct(s.latency_ms), "age_ms": _pct(s.age_ms)}
        plots.setdefault("latency", {})[stage] = s.latency_ms
    if "homography" in pipeline.stages:
        metrics["homography"].update(homography_metrics(out, bag))
    if "loop_closure" in pipeline.stages:
        lc, pr = loop_closure_metrics(out, gt, exclude_recent_s=pipeline.place.detector.exclude_recent_ns / 1e9,
                                      loop_radius_m=loop_radius_m, correct_radius_m=correct_radius_m)
        metrics["loop_closure"].update(lc)
        verifier = pipeline.place.detector.verifier
        if gt is not None and verifier is not None and verifier.camera_pose is not None:
            metrics["loop_closure"]["relative_pose"] = relative_pose_metrics(out, gt, verifier.camera_pose,
                                                                             correct_radius_m)
        plots["pr"] = pr
        plots["pr_info"] = {"loops": lc.get("loops"), "ground_truth": gt is not None}
        geo = geolocation_metrics(out, out.gps_fixes)
        metrics["geolocation"] = geo if geo is not None else {"note": f"no GPS ({GPS_TOPIC}) in the bag"}
    if "vo" in pipeline.stages:
        graph = pipeline.pose_graph.graph if pipeline.pose_graph is not None else None
        vo, pg, traj = trajectory_metrics(out, gt, graph, pipeline.vo.T_base_camera, correct_radius_m, plots)
        metrics["vo"].update(vo)
        if "pose_graph" in pipeline.stages:
            metrics["pose_graph"].update(pg)
        plots["trajectories"] = traj
    plots["loops"] = [d for d in out.loop_decisions if d.accepted]
    plots["stamps"] = np.array([r.stamp_ns for r in out.odometry], np.int64)
    return _nan_to_none(metrics), plots


def camera_frame_of(bag) -> str | None:
    """frame_id of the bag's first camera frame (None: no frame)."""
    for f in bag.frames(stop=1):
        return f.frame_id
    return None


# ============================================================================ plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, ax, path: Path, title: str) -> Path:
    ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _plt().close(fig)
    return path


def trajectory_png(traj: dict[str, np.ndarray], loops, stamps: np.ndarray, path: Path, title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 6.5))
    styles = {"ground truth": ("k-", 2.5), "vo": ("C1-", 1.2), "pose graph": ("C0-", 1.4)}
    for name, poses in traj.items():
        style, lw = styles.get(name, ("-", 1.0))
        label = {"vo": "VO (raw)", "pose graph": "VO + pose graph"}.get(name, name)
        ax.plot(poses[:, 0, 3], poses[:, 2, 3], style, lw=lw, label=label)
    if "pose graph" in traj and loops:
        opt = traj["pose graph"]
        index = {int(s): i for i, s in enumerate(stamps)}
        for d in loops:
            a, b = index.get(d.query_stamp_ns), index.get(d.match_stamp_ns)
            if a is not None and b is not None:
                ax.plot([opt[a, 0, 3], opt[b, 0, 3]], [opt[a, 2, 3], opt[b, 2, 3]], "g-", lw=0.8, alpha=0.6)
        ax.plot([], [], "g-", lw=0.8, label=f"accepted loop closures ({len(loops)})")
    ax.set_xlabel("x (m, first camera's right)")
    ax.set_ylabel("z (m, first camera's forward)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=8)
    return _save(fig, ax, path, title)


def pr_png(pr: tuple[np.ndarray, np.ndarray], path: Path, title: str, info: dict[str, Any] | None = None) -> Path:
    """Precision against recall over the similarity of the best verified candidate, with the operating point:
    every verified candidate accepted, as the nodes do."""
    plt = _plt()
    p, r = pr
    info = info or {}
    fig, ax = plt.subplots(figsize=(5, 4))
    if len(p):
        ax.plot(r, p, "C0-", lw=1.5, label="over the similarity threshold")
        ax.plot([r[-1]], [p[-1]], "C3o", ms=7, label=f"operating point: all verified (P {p[-1]:.0%}, R {r[-1]:.0%})")
        ax.legend(fontsize=8, loc="lower left")
    if not info.get("ground_truth", True):
        ax.text(0.5, 0.5, "no ground truth in the bag", ha="center", va="center", transform=ax.transAxes)
    elif info.get("loops") == 0:
        ax.text(0.5, 0.5, "no revisits in this bag:\nprecision and recall are undefined", ha="center", va="center",
                transform=ax.transAxes)
    elif not len(p):
        ax.text(0.5, 0.5, "no verified detection", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    return _save(fig, ax, path, title)


def latency_png(latency: dict[str, list[float]], path: Path, title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    data = {k: np.asarray(v) for k, v in latency.items() if len(v)}
    if data:
        hi = max(float(np.percentile(v, 99.5)) for v in data.values())
        bins = np.linspace(0, max(hi, 1.0), 60)
        for name, v in data.items():
            ax.hist(np.clip(v, 0, bins[-1]), bins=bins, histtype="step", lw=1.5, label=f"{name} (p50 {np.median(v):.1f} ms)")
    ax.set_xlabel("processing time per frame (ms)")
    ax.set_ylabel("frames")
    ax.legend(fontsize=8)
    return _save(fig, ax, path, title)


# ============================================================================ report
def _f(v: Any, fmt: str = "{:.2f}") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def summary_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    """(quantity, value) lines for the console table and the report."""
    rows: list[tuple[str, str]] = [("frames", f"{m['frames']} ({m['mode']}, {m['wall_s']:.1f} s)")]
    if m.get("damaged_messages") or m.get("bad_frames"):
        rows.append(("damaged messages skipped / undecodable frames",
                     f"{m.get('damaged_messages', 0)} / {m.get('bad_frames', 0)}"))
    h = m.get("homography")
    if h:
        ce = h.get("ground_error_px") or {}
        ident = h.get("ground_error_identity_px") or {}
        rows.append(("homography error on the ground region (px)",
                     f"p50 {_f(ce.get('p50'))}, mean {_f(ce.get('mean'))} (no motion: {_f(ident.get('mean'))}), "
                     f"valid {_f(h.get('valid_fraction'), '{:.0%}')}"
                     if ce else f"no ground truth; valid {_f(h.get('valid_fraction'), '{:.0%}')}"))
    lc = m.get("loop_closure")
    if lc and "precision" in lc and not lc["loops"]:
        rows.append(("loop closure precision / recall (verified)",
                     f"no revisits in this bag ({lc['detections']} detections)"))
    elif lc and "precision" in lc:
        rows.append(("loop closure precision / recall (verified)",
                     f"{_f(lc['precision'], '{:.1%}')} / {_f(lc['recall'], '{:.1%}')} "
                     f"({lc['detections']} detections, {lc['loops']} true loops)"))
        rows.append(("loop closure recall at 100% precision", _f(lc["recall_at_100_precision"], "{:.1%}")))
    rp = (lc or {}).get("relative_pose")
    if rp and rp.get("candidates"):
        t, pct, r = rp["translation_error_m"], rp["translation_error_pct_of_baseline"], rp["rotation_error_deg"]
        d = rp["essential_direction_error_deg"]
        rows.append(("loop closure relative pose error p50 / p95 (metric share)",
                     f"{_f(t['p50'])} / {_f(t['p95'])} m ({_f(pct['p50'], '{:.0f}')}% of the baseline), "
                     f"{_f(r['p50'])} / {_f(r['p95'])} deg ({_f(rp['metric_share'], '{:.0%}')} metric; "
                     f"essential-matrix direction alone: {_f(d['p50'], '{:.0f}')} deg)"))
    vo, pg = m.get("vo") or {}, m.get("pose_graph") or {}
    if "ate_m" in vo:
        rows.append(("VO ATE / final drift (m), raw", f"{_f(vo['ate_m'])} / {_f(vo['final_drift_m'])} over "
                                                       f"{_f(vo['length_m'], '{:.0f}')} m"))
    if "ate_m" in pg:
        rows.append(("VO ATE / final drift (m), after pose graph",
                     f"{_f(pg['ate_m'])} / {_f(pg['final_drift_m'])} ({_f(pg['ate_reduction_pct'], '{:.0f}')}% lower ATE)"))
        rows.append(("loop closures accepted by the graph (correct)",
                     f"{pg['loops_accepted']} of {pg['loops_received']} ({pg['accepted_correct']} correct)"))
    for stage in STAGES:
        if stage in m:
            lat = m[stage]["latency_ms"]
            name = "loop_closure latency per keyframe" if stage == "loop_closure" else f"{stage} latency"
            rows.append((f"{name} p50 / p95 (ms), dropped",
                         f"{_f(lat['p50'], '{:.1f}')} / {_f(lat['p95'], '{:.1f}')}, {m[stage]['dropped']}"))
    return rows


#: What each summary row measures (report.md prints it under the table; README explains the demo's table).
ROW_MEANINGS = {
    "frames": "camera frames read from the bag, the mode and the wall time of the run.",
    "damaged messages skipped / undecodable frames": "messages lost to damage in the bag (a chunk whose CRC "
    "fails, bytes that do not deserialise) and frames no stage could decode.",
    "homography error on the ground region (px)": "mean distance between points of the ground region (lower "
    "30 % of the image, central half) mapped by the estimated frame-to-frame homography and by the true "
    "ground-plane homography (synthetic bags), beside the same for no motion. The frame-to-frame homography "
    "follows the dominant surface, which is not always the ground: a consistency check of the running system, "
    "not the held-out accuracy (`deep-vision evaluate homography`, corner error on held-out image pairs).",
    "loop closure precision / recall (verified)": "per keyframe, the best verified candidate is a detection, "
    "correct when the two camera centres are within 10 m (headings within 45 deg); recall over the keyframes "
    "that revisit a place (an earlier keyframe outside the recency window within 5 m).",
    "loop closure recall at 100% precision": "the highest recall over the similarity threshold with no wrong "
    "detection (the PR curve's left end; the operating point accepts every verified candidate).",
    "loop closure relative pose error p50 / p95 (metric share)": "over the verified candidates that are right "
    "(cameras within 10 m): error of the published T_query_match against the true pose between the two "
    "base_link frames (translation in metres and as a share of the true distance, for the metric ones; rotation "
    "for all), the share whose translation is metric, and the essential matrix's translation direction error "
    "beside it (what a monocular check alone gives).",
    "VO ATE / final drift (m), raw": "absolute trajectory error (RMSE of positions after an SE(3) alignment) of "
    "the visual odometry against the ground truth, and the position error at the last frame.",
    "VO ATE / final drift (m), after pose graph": "the same for the pose graph's optimised trajectory, and how "
    "much lower its ATE is than the raw VO's.",
    "loop closures accepted by the graph (correct)": "loop closures the pose graph took (of those it received) "
    "and how many of them are right: cameras within 10 m, or the constraint within 5 deg and 1 m of the truth.",
    "latency": "processing time per frame of each stage (loop closure: per keyframe, the frames between "
    "keyframes are not processed), and frames dropped because the stage was still busy (realtime mode).",
}


def _meaning(row: str) -> str:
    return ROW_MEANINGS.get(row) or (ROW_MEANINGS["latency"] if "latency" in row else "")


def write_report(out_dir: Path, metrics: dict[str, Any], plots: dict[str, Any], command: str = "",
                 targets: list[tuple[str, bool, str]] | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    title = Path(metrics["bag"]).name
    images = []
    if plots.get("trajectories"):
        images.append(("Trajectory", trajectory_png(plots["trajectories"], plots["loops"], plots["stamps"],
                                                     out_dir / "trajectory.png", f"{title}: trajectory (top view)")))
        for name, poses in plots["trajectories"].items():  # TUM files (absolute stamps, seconds) for evo
            stamps = plots["trajectory_stamps"][name]
            write_tum(out_dir / "trajectories" / f"{name.replace(' ', '_')}.tum", stamps / 1e9, poses)
    if "pr" in plots:
        images.append(("Loop closure precision-recall", pr_png(plots["pr"], out_dir / "loop_closure_pr.png",
                                                                f"{title}: loop closures (verified)",
                                                                plots.get("pr_info"))))
    if plots.get("latency"):
        images.append(("Latency", latency_png(plots["latency"], out_dir / "latency.png",
                                              f"{title}: processing time ({metrics['mode']})")))
    lines = [f"# deep_vision pipeline on {title}", "", f"- command: `{command}`" if command else "",
             f"- mode: {metrics['mode']}; stages: {', '.join(metrics['stages'])}", "",
             "| quantity | value |", "|---|---|"]
    rows = summary_rows(metrics)
    lines += [f"| {k} | {v} |" for k, v in rows]
    if targets:
        lines += ["", "## Targets", ""]
        lines += [f"- {'met' if met else '**missed**'}: {name}: {measured}" for name, met, measured in targets]
    lines += ["", "## What each line measures", ""]
    lines += [f"- **{k}**: {_meaning(k)}" for k, _ in rows if _meaning(k)]
    lines += ["", "KITTI t_rel/r_rel in `metrics.json` follow the devkit (100-800 m segments); a path shorter than "
              "100 m gets `t_rel_snippet_pct`/`r_rel_snippet_deg_per_100m` (segments of 10-80 % of it) instead. "
              "All numbers: `metrics.json`. Trajectories in TUM format for evo: `trajectories/`.", ""]
    for name, png in images:
        lines += [f"## {name}", "", f"![{name}]({png.name})", ""]
    md = out_dir / "report.md"
    md.write_text("\n".join(line for line in lines if line is not None) + "\n")
    return md


# ============================================================================ output bag
def write_output_bag(path: Path, out: PipelineOutputs, bag=None) -> Path:
    """The messages the stages published (as the nodes publish them: same functions) in a rosbag2 (mcap), at the
    stamps of the frames they came from, and the input bag's ``/tf_static``."""
    from deep_vision.io.bag import QOS_LATCHED, TF_STATIC_TOPIC, BagWriter

    with BagWriter(path) as writer:
        if bag is not None and TF_STATIC_TOPIC in bag.topics:
            for _, t, msg in bag.messages([TF_STATIC_TOPIC]):
                writer.write(TF_STATIC_TOPIC, "tf2_msgs/msg/TFMessage", t, msg, qos=QOS_LATCHED)
        for topic, msgtype, stamp, msg in out.messages:
            writer.write(topic, msgtype, stamp, msg)
    return path
