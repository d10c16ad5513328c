"""``deep-vision evaluate BAG``: run the pipeline on a bag with ground truth, record, measure, report."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from deep_vision.errors import DeepVisionError
from deep_vision.params import load_params
from deep_vision.pipeline.report import (
    compute_metrics,
    summary_rows,
    write_output_bag,
    write_report,
)
from deep_vision.pipeline.run import STAGES, Pipeline

logger = logging.getLogger(__name__)


def evaluate_bag(bag_path: str | Path, out_dir: str | Path, *, mode: str = "offline", params_file: str | Path,
                 stages: Iterable[str] = STAGES, backend: str | None = None, rate: float = 1.0,
                 limit: int | None = None, queue_depth: int | None = None, command: str = "",
                 progress_factory: Callable[[int], Callable[[int], None]] | None = None,
                 record: bool = True, overwrite: bool = False,
                 targets: Callable[[dict[str, Any]], list[tuple[str, bool, str]]] | None = None,
                 viewer: Any = None) -> tuple[dict[str, Any], Path]:
    """Run ``stages`` over the bag; write ``out_dir/{metrics.json, report.md, *.png, outputs/}``.

    The parameter file, then the bag, then ``out_dir`` are checked before any model is loaded: a bad one is one
    ConfigError/BagError line. ``out_dir`` must be empty or absent unless ``overwrite``; when the evaluation
    fails, what it wrote is removed again. ``targets(metrics)`` (e.g. :func:`demo_targets`) go into the report.
    ``viewer``: a :class:`~deep_vision.viz.recorder.RunRecorder` fed with the stages' outputs as they come, and
    with the bag's ground truth, drawn beside the VO frame by frame.
    Returns (metrics, report path).
    """
    from deep_vision.io.bag import BagSequence

    params = load_params(params_file)
    bag = BagSequence(bag_path)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DeepVisionError(f"--out {out_dir} is a file")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise DeepVisionError(f"--out {out_dir} is not empty (an earlier evaluation?): pass --overwrite to "
                                  "replace it, or choose another folder")
        shutil.rmtree(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        pipeline = Pipeline(params, stages, backend=backend, queue_depth=queue_depth,
                            observer=viewer.submit if viewer is not None else None)
        if viewer is not None and pipeline.vo is not None:
            viewer.ground_truth_from(bag, lambda: pipeline.vo.T_base_camera)
        total = len(bag) if limit is None else min(limit, len(bag))
        progress = progress_factory(total) if progress_factory else None
        out = pipeline.run(bag, mode, rate=rate, limit=limit, progress=progress)
        if out.frames == 0:
            raise DeepVisionError(f"{bag_path}: no frame could be read")
        metrics, plots = compute_metrics(out, bag, pipeline, mode=mode)
        if record:
            write_output_bag(out_dir / "outputs", out, bag)
            metrics["outputs_bag"] = str(out_dir / "outputs")
        md = write_report(out_dir, metrics, plots, command, targets(metrics) if targets else None)
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        else:  # it was empty
            for child in out_dir.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        raise
    return metrics, md


def format_table(metrics: dict[str, Any]) -> str:
    rows = summary_rows(metrics)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def demo_targets(metrics: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """The end-to-end targets on the demo route: (name, met, measured). A SLAM user's questions: do the loop
    closures make the trajectory better (lower ATE and final drift than the VO's own), is the corrected
    trajectory within 0.5 % of the distance travelled (KITTI's leaderboard counts monocular VO near 1-2 %
    as good, per segment), and is every loop closure the graph accepts a true one."""
    pg = metrics.get("pose_graph") or {}
    vo = metrics.get("vo") or {}
    out = []
    if pg.get("ate_m") is not None and vo.get("ate_m") is not None:
        drift_vo, drift_pg = vo.get("final_drift_m", float("nan")), pg.get("final_drift_m", float("nan"))
        better = pg["ate_m"] < vo["ate_m"] and drift_pg < drift_vo  # a missing drift (nan) is not lower
        out.append(("pose graph lowers the VO's ATE and final drift", bool(better),
                    f"ATE {vo['ate_m']:.2f} -> {pg['ate_m']:.2f} m, final drift {drift_vo:.2f} -> {drift_pg:.2f} m"))
        if vo.get("length_m"):
            share = 100 * pg["ate_m"] / vo["length_m"]
            out.append(("ATE after the pose graph within 0.5 % of the distance travelled", share <= 0.5,
                        f"{share:.2f} % ({pg['ate_m']:.2f} m over {vo['length_m']:.0f} m)"))
    if "loops_accepted" in pg:
        ok = pg["loops_accepted"] > 0 and pg.get("accepted_correct") == pg["loops_accepted"]
        out.append(("loop closures accepted by the graph are all correct", ok,
                    f"{pg.get('accepted_correct', 0)} of {pg['loops_accepted']} correct"))
    return out
