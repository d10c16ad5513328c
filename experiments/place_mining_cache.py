"""Benchmark / diagnosis: how many images of each training source the place-training mining cache holds, and
how many of those can be queries (their positive and a negative cached too), per refresh.

Usage: .venv/bin/python experiments/place_mining_cache.py [--config C ...] [--draws 5]
Draws the cache as train_place's Miner does (its draw_cache, no descriptors) ``--draws`` times per config and
writes bench/results/<date>-place-mining-cache.md.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import train_place  # noqa: E402

CONFIGS = ["training/configs/place_cpu.yaml", "training/configs/place_indoor.yaml",
           "training/configs/place_street_indoor.yaml"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", help=f"training config(s) (default: {', '.join(CONFIGS)})")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    command = ".venv/bin/python experiments/place_mining_cache.py " + " ".join(sys.argv[1:])
    lines = ["# Place training: what the mining cache holds per refresh", "", f"- command: `{command}`",
             f"- {args.draws} draws per config (seeds 0-{args.draws - 1}); cached / eligible as min-max over them; "
             "eligible = its positive and a negative are cached too (only those can be queries)", ""]
    for config in args.config or CONFIGS:
        cfg = yaml.safe_load((ROOT / config).read_text())
        places = train_place.build_set(cfg["data"]["train"], cfg["data"], True, "data.train")
        miner = train_place.Miner(places, cfg["mining"])
        cached, eligible = [], []
        for seed in range(args.draws):
            miner.draw_cache(np.random.default_rng(seed))
            n = len(places.source_names)
            cached.append(np.bincount(places.source[miner.cache_idx], minlength=n))
            eligible.append(np.bincount(places.source[miner.cache_idx[miner.eligible]], minlength=n))
        cached, eligible = np.array(cached), np.array(eligible)
        sizes = np.bincount(places.source, minlength=len(places.source_names))
        m = cfg["mining"]
        lines += [f"## `{config}`", "",
                  f"{len(places)} training images; cache_size {m['cache_size']}, "
                  f"cache_whole_below {m.get('cache_whole_below', 0)}", "",
                  "| source | images | cached | eligible |", "|---|---|---|---|"]
        for k, name in enumerate(places.source_names):
            lines.append(f"| {name} | {sizes[k]} | {cached[:, k].min()}-{cached[:, k].max()} | "
                         f"{eligible[:, k].min()}-{eligible[:, k].max()} |")
        lines.append("")
    out = Path(args.out) / f"{date.today().isoformat()}-place-mining-cache.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
