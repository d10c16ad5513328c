"""Real-time headroom: the whole pipeline in realtime mode on one bag, released at several multiples of its rate.

A stage keeps up when it drops no frame. Each rate is one ``evaluate_bag(..., mode="realtime", rate=R)`` run
(what ``deep-vision evaluate BAG --mode realtime --rate R`` runs) with the given parameters; the table gives, per
stage, frames dropped (and, for the loop-closure stage, frames skipped on arrival as non-keyframes: absent before
the keyframe gate), the keyframes made, the loop-closure recall at 100 % precision, the keyframe latency, and the
VO's ATE raw and after the pose graph. Each run's metrics.json goes to ``OUT/<label>-x<rate>/``.

``--viewer``: each run twice, alternating, without and with the Rerun recording on (``deep-vision evaluate ...
--record OUT/<label>-x<rate>.rrd``), to measure what the viewer costs the pipeline: frames dropped, latencies,
and the viewer items the recorder dropped.

To compare two versions of the code, run the script twice, once with an older checkout's package first on
PYTHONPATH and another ``--label`` (the bench itself uses only the evaluate_bag API both have).

Usage (repository root):
    .venv/bin/python bench/realtime_rates.py BAG --rates 1,2,3 --label after --out DIR [--params P] [--repeats N] \
        [--viewer]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def summary(metrics: dict) -> dict:
    lc, vo, pg = metrics.get("loop_closure", {}), metrics.get("vo", {}), metrics.get("pose_graph", {})
    return {
        "frames": metrics["frames"],
        "homography_dropped": metrics.get("homography", {}).get("dropped"),
        "vo_dropped": vo.get("dropped"),
        "lc_dropped": lc.get("dropped"),
        "lc_skipped": lc.get("skipped", 0),
        "keyframes": lc.get("keyframes"),
        "lc_recall_at_100": lc.get("recall_at_100_precision"),
        "lc_latency_p50": (lc.get("latency_ms") or {}).get("p50"),
        "lc_latency_p95": (lc.get("latency_ms") or {}).get("p95"),
        "vo_latency_p50": (vo.get("latency_ms") or {}).get("p50"),
        "vo_latency_p95": (vo.get("latency_ms") or {}).get("p95"),
        "homography_latency_p50": (metrics.get("homography", {}).get("latency_ms") or {}).get("p50"),
        "vo_ate_m": vo.get("ate_m"),
        "pg_ate_m": pg.get("ate_m"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bag")
    parser.add_argument("--rates", default="1,2,3", help="multiples of the bag's rate, comma-separated")
    parser.add_argument("--params", default=str(ROOT / "config" / "perception.yaml"))
    parser.add_argument("--label", default="current")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--viewer", action="store_true", help="each run without and with the Rerun recording")
    args = parser.parse_args(argv)

    import deep_vision
    from deep_vision.pipeline.evaluate import evaluate_bag

    print(f"deep_vision from {Path(deep_vision.__file__).parent}", flush=True)
    rows = []
    for rate in (float(r) for r in args.rates.split(",")):
        for k in range(args.repeats):
            for viewing in ((False, True) if args.viewer else (False,)):
                label = args.label + (" + viewer" if viewing else "")
                name = f"{args.label}{'-viewer' if viewing else ''}-x{rate:g}" + (f"-{k}" if args.repeats > 1 else "")
                viewer = None
                if viewing:  # only then: an older checkout without the viewer still runs the rest
                    from deep_vision.viz.recorder import RunRecorder

                    viewer = RunRecorder(Path(args.out) / f"{name}.rrd")
                try:
                    metrics, _ = evaluate_bag(args.bag, Path(args.out) / name, mode="realtime", params_file=args.params,
                                              rate=rate, record=False, command=f"bench/realtime_rates.py rate {rate:g}",
                                              **({"viewer": viewer} if viewer is not None else {}))
                finally:
                    if viewer is not None:
                        viewer.close()
                row = {"label": label, "rate": rate, "run": k, **summary(metrics),
                       "viewer_dropped": viewer.dropped if viewer is not None else None}
                rows.append(row)
                print(json.dumps(row), flush=True)
    (Path(args.out) / f"{args.label}.json").write_text(json.dumps(rows, indent=1) + "\n")
    print()
    print("| code | rate | homography dropped | VO dropped | loop closure dropped / skipped | keyframes | "
          "recall @ 100 % precision | loop-closure ms p50 / p95 | VO ms p50 / p95 | homography ms p50 | "
          "VO ATE m raw / pose graph | viewer items dropped |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rec = r["lc_recall_at_100"]
        print(f"| {r['label']} | {r['rate']:g}x | {r['homography_dropped']} | {r['vo_dropped']} | "
              f"{r['lc_dropped']} / {r['lc_skipped']} | {r['keyframes']} | "
              f"{'-' if rec is None else f'{100 * rec:.1f}'} | {r['lc_latency_p50']:.0f} / {r['lc_latency_p95']:.0f} | "
              f"{r['vo_latency_p50']:.0f} / {r['vo_latency_p95']:.0f} | {r['homography_latency_p50']:.0f} | "
              f"{r['vo_ate_m']:.2f} / {r['pg_ate_m']:.2f} | {'-' if r['viewer_dropped'] is None else r['viewer_dropped']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
