"""Several place models on the held-out VPR benchmarks in one run, beside the classical baselines.

``deep-vision evaluate place`` reports one model; this compares candidates (e.g. the shipped model against a new
one) on exactly the queries and references ``evaluate place`` uses (``place_eval.vpr_benchmarks``: Nordland
places 0-899, Corridor places 0-55), each model alone and with spatial re-ranking, and the three classical
baselines once. ``--whole-corridor`` adds the whole Corridor folder (111 places) as a further benchmark: held out
only for models that never trained on any Corridor place.

Usage (repository root; about 3 min per model on 2 cores, most of it Nordland):
    .venv/bin/python bench/place_vpr_models.py LABEL=MODEL.onnx [LABEL=MODEL.onnx ...] [--whole-corridor]
        [--out bench/results/<date>-place-vpr-models.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from deep_vision.estimators.place import PlaceRecognizer
from deep_vision.eval.place_eval import (
    NetworkMatcher,
    RerankedNetworkMatcher,
    classical_matchers,
    run_vpr,
    vpr_benchmarks,
)
from deep_vision.io.vpr import load_corridor

DATA = ROOT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="LABEL=path/to/model.onnx")
    ap.add_argument("--whole-corridor", action="store_true", help="also the whole Corridor folder (111 places)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / f"{date.today()}-place-vpr-models.md")
    args = ap.parse_args(argv)
    models = {}
    for item in args.models:
        label, sep, path = item.partition("=")
        if not sep:
            ap.error(f"model {item!r}: expected LABEL=path")
        models[label] = PlaceRecognizer.from_model(path, backend="onnxruntime:cpu", threads=args.threads)
    benches = vpr_benchmarks(DATA)
    if not benches:
        ap.error(f"no VPR benchmark folder under {DATA}")
    if args.whole_corridor:
        benches.append((load_corridor(DATA / "vpr_corridor", (0, 10**6)), True))
    results: dict[str, dict[str, dict]] = {}
    t0 = time.monotonic()
    for bench, rgb in benches:
        matchers = classical_matchers(bench)
        for label, rec in models.items():
            matchers.append(NetworkMatcher(rec, name=f"{label}"))
            reranked = RerankedNetworkMatcher(rec)
            reranked.name = f"{label}, re-ranked top {reranked.reranker.top_k}"
            matchers.append(reranked)
        scores = run_vpr(bench, matchers, rgb=rgb and all(r.wants_rgb for r in models.values()))
        results[f"{bench.name} ({len(bench.queries)} queries, {len(bench.references)} references)"] = {
            name: s.to_dict() for name, s in scores.items()}
        print(f"{bench.name}: done ({time.monotonic() - t0:.0f} s)", flush=True)
    lines = [f"# Place models on the held-out VPR benchmarks ({date.today()})", "",
             f"Command: `.venv/bin/python bench/place_vpr_models.py {' '.join(sys.argv[1:])}`", "",
             "Models: " + ", ".join(f"{label} = `{Path(p.partition('=')[2])}`" for label, p in
                                    zip(models, args.models)), ""]
    for bench_name, scores in results.items():
        lines += [f"## {bench_name}", "", "| method | R@1 % | R@5 % | R@10 % | query ms p50 |", "|---|---|---|---|---|"]
        for name, s in scores.items():
            r = s["recall"]
            lines.append(f"| {name} | {100 * r['1']:.1f} | {100 * r['5']:.1f} | {100 * r['10']:.1f} | "
                         f"{s['query_ms_p50']:.1f} |")
        lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
