"""Probe: the learned loop-closure verifier's patch support (``patch_span``) on a training world.

Runs :func:`deep_vision.eval.verification_eval.run` on the revisits of a synthetic world the patch network was
trained on (seed 0 by default; never a held-out seed) with ``features: learned`` at each span, ORB beside them,
and prints recall at 100 % precision, precision / recall of ``verified`` and the rotation error p50.

    .venv/bin/python experiments/patch_span_tuning.py --model models/patch.onnx --spans 1 1.5 2
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from deep_vision.eval.verification_eval import QUICK, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/patch.onnx")
    ap.add_argument("--spans", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    ap.add_argument("--seed", type=int, default=0, help="a training world (below 9001)")
    args = ap.parse_args()
    if args.seed >= 9001:
        raise SystemExit("tune on a training world: seeds 9001 and above are held out")
    logging.basicConfig(level=logging.WARNING)
    variants = {"orb": {"features": "orb"}}
    for s in args.spans:
        variants[f"learned span {s:g}"] = {"features": "learned", "patch_model_path": args.model, "patch_span": s}
    result = run(variants, Path("/nonexistent"), synthetic_seeds=(args.seed,), settings=QUICK)
    for name, m in result["datasets"]["synthetic"]["variants"].items():
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in m.items() if k != "rows"))


if __name__ == "__main__":
    main()
