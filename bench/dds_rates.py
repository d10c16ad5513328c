"""Over DDS, as deployed: each node its own process, a bag played at 1x by a player process, and per output topic
the count, rate, latency (its arrival minus the arrival of the camera image it answers, matched by stamp) p50/p95
and the frames it lost.

The nodes start from their console scripts with the parameter file and the registry's remappings (what
``ros2 launch deep_vision perception.launch.py`` starts); the player is ``deep-vision play`` (``ros2 bag play``
where installed works the same). This process only listens. Lost: for the per-frame topics (homography: one per
frame after the first, odometry: one per frame) the frames without an output; for the others, none is expected
per frame and the count is given.

Usage (repository root; after ``make setup``):
    .venv/bin/python bench/dds_rates.py BAG [BAG ...] [--nodes homography,odometry,...] [--params P]
        [--out bench/results/dds-DATE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

#: output topic -> (message type, frames it answers: "each", "each_after_first" or None)
OUTPUTS = {"/homography": ("deep_vision_msgs/msg/Homography", "each_after_first"),
           "/odometry": ("nav_msgs/msg/Odometry", "each"),
           "/loop_closures": ("deep_vision_msgs/msg/LoopClosureArray", None),
           "/path": ("nav_msgs/msg/Path", None)}
IMAGE = "/camera/image_raw"


def start_nodes(keys: list[str], params: Path, logs: Path) -> list[subprocess.Popen]:
    from deep_vision.nodes.registry import NODES, remappings

    procs = []
    for key in keys:
        entry = NODES[key]
        args = [str(BIN / entry.executable), "--ros-args", "--params-file", str(params)]
        for topic, target in remappings(entry):
            args += ["-r", f"{topic}:={target}"]
        log = (logs / f"{entry.name}.log").open("w")
        procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
    return procs


class Listener:
    """Arrival times (monotonic) of the camera images and of each output, by header stamp."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data

        from deep_vision.nodes.bridge import rclpy_type

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("deep_vision_dds_bench", context=self.context)
        self.images: dict[int, float] = {}
        self.outputs: dict[str, list[tuple[int, float]]] = {t: [] for t in OUTPUTS}

        def stamp(msg) -> int:
            return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec

        self.node.create_subscription(rclpy_type("sensor_msgs/msg/Image"), IMAGE,
                                      lambda m: self.images.setdefault(stamp(m), time.monotonic()),
                                      qos_profile_sensor_data)
        for topic, (msgtype, _) in OUTPUTS.items():
            self.node.create_subscription(rclpy_type(msgtype), topic,
                                          lambda m, t=topic: self.outputs[t].append((stamp(m), time.monotonic())), 100)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def image_subscribers(self) -> int:
        return self.node.count_subscribers(IMAGE)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.node.destroy_node()
        self.executor.shutdown()
        import rclpy

        rclpy.shutdown(context=self.context)


def measure(bag: Path, keys: list[str], params: Path, logs: Path, drain_s: float = 5.0) -> dict:
    from deep_vision.nodes.registry import NODES

    listener = Listener()
    procs = start_nodes(keys, params, logs)
    try:
        want = sum(1 for k in keys if "image" in NODES[k].inputs) + 1  # the nodes and this listener
        deadline = time.monotonic() + 120.0
        while listener.image_subscribers() < want:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"the nodes did not start (see {logs})")
            time.sleep(0.2)
        time.sleep(2.0)  # discovery of the outputs
        played = subprocess.run([str(BIN / "deep-vision"), "play", str(bag), "--rate", "1"], cwd=ROOT,
                                capture_output=True, text=True, timeout=3600)
        (logs / "player.log").write_text(played.stdout + played.stderr)
        time.sleep(drain_s)
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(10.0)
            except subprocess.TimeoutExpired:
                p.kill()
        listener.close()
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        sent = sum(c.msgcount for c in reader.connections if c.topic == IMAGE)
    images = listener.images
    rows = {"images": {"sent": sent, "received": len(images)}}
    for topic, (_, per_frame) in OUTPUTS.items():
        got = listener.outputs[topic]
        lat = [1e3 * (t - images[s]) for s, t in got if s in images]
        span = (got[-1][1] - got[0][1]) if len(got) > 1 else 0.0
        expected = {"each": sent, "each_after_first": sent - 1, None: None}[per_frame]
        rows[topic] = {"count": len(got), "rate_hz": (len(got) - 1) / span if span > 0 else None,
                       "latency_ms_p50": float(np.percentile(lat, 50)) if lat else None,
                       "latency_ms_p95": float(np.percentile(lat, 95)) if lat else None,
                       "lost": None if expected is None else expected - len({s for s, _ in got}),
                       "latencies_ms": lat}
    return rows


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.5), squeeze=False)
    for ax, (name, rows) in zip(axes[0], results.items()):
        topics = [t for t in OUTPUTS if rows[t]["latencies_ms"]]
        ax.boxplot([rows[t]["latencies_ms"] for t in topics], whis=(5, 95), showfliers=False)
        ax.set_xticks(range(1, len(topics) + 1), topics, rotation=20)
        ax.set_ylabel("latency after the image (ms)")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    from deep_vision.nodes.registry import DEFAULT_NODES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bags", nargs="+", type=Path)
    parser.add_argument("--nodes", default=",".join(DEFAULT_NODES))
    parser.add_argument("--params", type=Path, default=ROOT / "config" / "perception.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" /
                        f"dds-{datetime.date.today().isoformat()}")
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.nodes.split(",") if k.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for bag in args.bags:
        logs = args.out / f"logs-{bag.name}"
        logs.mkdir(exist_ok=True)
        print(f"[dds] {bag.name}: nodes {', '.join(keys)}, played at 1x", flush=True)
        results[bag.name] = measure(bag, keys, args.params, logs)
    command = "python bench/dds_rates.py " + " ".join(str(b) for b in args.bags) + f" --nodes {args.nodes}"
    (args.out / "results.json").write_text(json.dumps(
        {"command": command, "cpu_count": os.cpu_count(),
         "results": {b: {t: {k: v for k, v in r.items() if k != "latencies_ms"} for t, r in rows.items()}
                     for b, rows in results.items()}}, indent=1))
    lines = [f"# Nodes over DDS, one process each, bag at 1x ({datetime.date.today().isoformat()})", "",
             f"Command: `{command}` ({os.cpu_count()} cores). Latency: the output's arrival here minus its "
             "image's arrival here (matched by stamp).", "",
             "| bag | topic | count | rate (Hz) | latency p50 (ms) | latency p95 (ms) | lost |", "|---|---|---|---|---|---|---|"]
    fmt = lambda v, f="{:.1f}": "–" if v is None else f.format(v)  # noqa: E731
    for bag, rows in results.items():
        im = rows["images"]
        lines.append(f"| {bag} | {IMAGE} | {im['received']} of {im['sent']} | | | | {im['sent'] - im['received']} |")
        for topic in OUTPUTS:
            r = rows[topic]
            lines.append(f"| {bag} | {topic} | {r['count']} | {fmt(r['rate_hz'])} | {fmt(r['latency_ms_p50'])} "
                         f"| {fmt(r['latency_ms_p95'])} | {fmt(r['lost'], '{}')} |")
    (args.out / "README.md").write_text("\n".join(lines) + "\n\n![latency](latency.png)\n")
    plot(results, args.out / "latency.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
