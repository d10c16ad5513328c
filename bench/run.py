"""The registered benchmarks: list them, run one by name, or run them all.

Usage (repository root):
    python bench/run.py --list
    python bench/run.py NAME [--bag BAG] [--results DIR] [--quick] [--dry-run] [ARGS ...]
    python bench/run.py all [--quick] [--bag BAG] [--results DIR] [--dry-run]

``NAME`` runs that benchmark's registered command with ``ARGS`` appended; for an option the last value wins, so
``python bench/run.py vo_latency --repeats 5`` overrides the registered ``--repeats``. ``--quick`` adds the
benchmark's short settings. ``all`` runs every registered benchmark in turn and goes on after a failure. With
``--quick`` it leaves out those without short settings; without ROS 2 it leaves out the ones that need it. A summary
comes at the end. The benchmarks that play a bag take ``--bag BAG``. Without it, run.py renders a synthetic bag
(``deep-vision synth``: 600 frames, or 300 with ``--quick``, which is one lap and the start of a revisit) into a
temporary folder and removes it afterwards. Each script writes its results under ``--results`` (default
bench/results) as it always has. The one-off probes that used to live here are in experiments/
(experiments/README.md).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAG = "{bag}"  # placeholder for the bag in a registered command
RESULTS = "{results}"  # placeholder for the results folder
DATE = "{date}"


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str  # one line: what it measures
    command: tuple[str, ...]  # after the Python interpreter; placeholders {bag}, {results}, {date}
    quick: tuple[str, ...] | None  # extra arguments for --quick; None: no short version (``all --quick`` skips it)
    duration: str  # wall time on 2 cores (full / --quick)
    needs: tuple[str, ...] = ()  # "bag": plays a rosbag2; "ros": rclpy and deep_vision_msgs


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("networks", "each network's latency per backend (ONNX Runtime, PyTorch; TensorRT and CUDA where "
              "present), each class's default config (not the shipped one), random weights, 1 and 2 threads",
              ("-m", "deep_vision.cli.main", "bench", "--models", "homography_net", "place_net", "deepvo",
               "--batches", "1", "--threads", "1", "2", "--no-baselines", "--out", f"{RESULTS}/networks"),
              ("--quick",), "~2 min / 20 s"),
    Benchmark("homography_latency", "homography per full-resolution KITTI frame pair: network (+ refinement) vs "
              "SIFT/ORB + RANSAC", ("bench/homography_latency.py", "--repeats", "3", "--out", RESULTS),
              ("--repeats", "1"), "~45 s / 25 s"),
    Benchmark("vo_latency", "visual odometry per KITTI frame: network, hybrid variants and the classical baseline",
              ("bench/vo_latency.py", "--repeats", "3", "--out", RESULTS), ("--repeats", "1"), "~30 s / 10 s"),
    Benchmark("loop_closure_cost", "a loop-closure keyframe's time (describe, features, query + verification) "
              "with the shipped settings", ("bench/loop_closure_cost.py", BAG, "--out", RESULTS), (),
              "~40 s / 25 s (synthetic bag)", needs=("bag",)),
    Benchmark("realtime_rates", "real-time headroom: the whole pipeline in realtime mode at 1x/2x/3x the bag's rate "
              "(frames dropped, loop-closure latency, ATE)",
              ("bench/realtime_rates.py", BAG, "--rates", "1,2,3", "--label", "current",
               "--out", f"{RESULTS}/realtime-{DATE}"), ("--rates", "2"), "~2.5 min / 30 s", needs=("bag",)),
    Benchmark("dds_rates", "the nodes over DDS, one process each, bag played at 1x: rate, latency and lost frames "
              "per output topic", ("bench/dds_rates.py", BAG, "--out", f"{RESULTS}/dds-{DATE}"), (),
              "~1.5 min / 1 min (synthetic bag)", needs=("bag", "ros")),
    Benchmark("synth_render", "synthetic world: build, per-frame rendering, recording a bag",
              ("bench/synth_render.py", "--out", RESULTS), ("--frames", "100"), "~30 s / 20 s"),
    Benchmark("place_vpr_models", "place recognition accuracy (Recall@N) of the shipped model on the held-out VPR "
              "benchmarks, with re-ranking, beside the classical baselines",
              ("bench/place_vpr_models.py", "shipped=models/place.onnx", "--out",
               f"{RESULTS}/{DATE}-place-vpr-models.md"), None, "~3 min per model"),
    Benchmark("fuzz", "malformed messages (every encoding, size, step, NaN, time jump, truncated data, bad camera "
              "info, GPS, odometry, loop closures) through each real node's callbacks: crashes and counts",
              ("bench/fuzz.py", "--out", f"{RESULTS}/fuzz-{DATE}"), ("--messages", "1000"),
              "~2.5 min / 20 s", needs=("ros",)),
    Benchmark("gpu", "PyTorch on the GPU: FP16 latency at batch 1, throughput per batch size, a DDP training step "
              "(on the CPU, FP32, without a GPU)", ("bench/gpu.py", "--results", RESULTS),
              ("--quick",), "not yet run on a GPU (its --budget stops it at 7 min) / 10-20 s on 2 CPU cores"),
]}


def ros_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("rclpy", "deep_vision_msgs"))


def expand(bench: Benchmark, bag: str | None, results: str, quick: bool, extra: list[str]) -> list[str]:
    date = datetime.date.today().isoformat()
    args = []
    for a in bench.command:
        if a == BAG:
            args.append(bag or "<bag>")
        else:
            args.append(a.replace(RESULTS, results).replace(DATE, date))
    return [sys.executable, *args, *((bench.quick or ()) if quick else ()), *extra]


def shown(cmd: list[str]) -> str:
    return shlex.join(["python", *cmd[1:]])


def render_bag(frames: int, folder: Path) -> Path:
    bag = folder / f"synth{frames}"
    cmd = [sys.executable, "-m", "deep_vision.cli.main", "synth", "--out", str(bag), "--frames", str(frames)]
    print(f"[run] rendering a synthetic bag for the benchmarks that play one: {shown(cmd)}", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return bag


def list_benchmarks() -> None:
    for b in BENCHMARKS.values():
        needs = f"  needs: {', '.join(b.needs)}" if b.needs else ""
        quick = "" if b.quick is None else f"  --quick adds: {' '.join(b.quick) or '(nothing: a shorter bag)'}"
        print(f"{b.name}\n  {b.description}\n  time: {b.duration}{needs}\n"
              f"  runs: {shown(expand(b, None, 'bench/results', False, []))}\n{quick}".rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Registered: " + ", ".join(BENCHMARKS) + ". Unknown arguments go to "
                                     "the benchmark's script.")
    parser.add_argument("name", nargs="?", help="a registered benchmark, or all")
    parser.add_argument("--list", action="store_true", help="list the registered benchmarks and their commands")
    parser.add_argument("--quick", action="store_true", help="short settings (all: only benchmarks that have them)")
    parser.add_argument("--bag", help="rosbag2 for the benchmarks that play one (default: a synthetic one, rendered)")
    parser.add_argument("--results", default="bench/results", help="results folder (default bench/results)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args, extra = parser.parse_known_args(argv)
    if args.list or not args.name:
        list_benchmarks()
        return 0
    if args.name == "all":
        if extra:
            parser.error(f"all takes no arguments for the scripts: {' '.join(extra)}")
        selected = [b for b in BENCHMARKS.values() if not (args.quick and b.quick is None)]
    elif args.name in BENCHMARKS:
        selected = [BENCHMARKS[args.name]]
    else:
        parser.error(f"unknown benchmark {args.name!r}; registered: {', '.join(BENCHMARKS)} (or all)")
    skipped = []
    if not ros_available():
        skipped = [(b.name, "needs ROS 2 (rclpy and deep_vision_msgs do not import)") for b in selected
                   if "ros" in b.needs]
        selected = [b for b in selected if "ros" not in b.needs]
    if args.name == "all" and args.quick:
        skipped += [(b.name, "no --quick version") for b in BENCHMARKS.values() if b.quick is None]

    tmp = None
    bag = args.bag
    try:
        if bag is None and any("bag" in b.needs for b in selected):
            if args.dry_run:
                bag = "<synthetic bag>"
            else:
                tmp = Path(tempfile.mkdtemp(prefix="deep_vision_bench_"))
                bag = str(render_bag(300 if args.quick else 600, tmp))
        summary = []
        for k, b in enumerate(selected, 1):
            cmd = expand(b, bag, args.results, args.quick, extra)
            print(f"[run {k}/{len(selected)}] {b.name}: {shown(cmd)}", flush=True)
            if args.dry_run:
                continue
            t0 = time.monotonic()
            rc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
            took = time.monotonic() - t0
            state = "ok" if rc == 0 else f"FAILED (exit {rc})"
            print(f"[run {k}/{len(selected)}] {b.name}: {state} in {took:.0f} s", flush=True)
            summary.append((b.name, state, took))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    for name, why in skipped:
        print(f"[run] {name}: skipped, {why}")
    if len(summary) > 1 or skipped:
        print("\n| benchmark | result | seconds |\n|---|---|---:|")
        for name, state, took in summary:
            print(f"| {name} | {state} | {took:.0f} |")
        for name, why in skipped:
            print(f"| {name} | skipped: {why} | |")
        print(f"\nResults under {args.results}/ (each script prints where it wrote).")
    if len(selected) == 0 and skipped:
        return 2
    return 0 if all(state == "ok" for _, state, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
