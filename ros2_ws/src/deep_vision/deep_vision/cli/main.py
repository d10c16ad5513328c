"""``deep-vision``: command-line entry point.

Subcommands (more arrive with the networks): ``synth`` renders the synthetic
world to a rosbag2; ``demo`` runs the main job on the built-in synthetic stream.
Known errors (:class:`~deep_vision.errors.DeepVisionError`) become one line on
stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

from deep_vision import __version__
from deep_vision.errors import ConfigError, DeepVisionError

logger = logging.getLogger("deep_vision.cli")


def _synth_config(args: argparse.Namespace):
    from deep_vision.config import from_dict, load_yaml
    from deep_vision.synthetic.config import SyntheticWorldConfig

    data = load_yaml(args.config) if args.config else {}
    config = from_dict(SyntheticWorldConfig, data)
    if args.frames is not None:
        config.frames = args.frames
    if args.seed is not None:
        config.seed = args.seed
    if args.encoding is not None:
        config.camera.encoding = args.encoding
    if args.size is not None:
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--size must look like 1241x376, got {args.size!r}") from None
        config.camera.width, config.camera.height = w, h
    config.__post_init__()
    config.camera.__post_init__()
    return config


def _record(config, out: Path, storage: str, compress: bool, workers: int):
    from tqdm import tqdm

    from deep_vision.errors import BagError
    from deep_vision.synthetic.recording import record

    if out.exists():  # fail before any work (and before the progress bar starts)
        raise BagError(f"bag output already exists: {out} (remove it or choose another --out)")
    with tqdm(total=config.frames, unit="frame", desc="rendering", file=sys.stderr) as bar:
        def progress(n: int) -> None:
            bar.update(n - bar.n)

        return record(config, out, storage=storage, compress=compress, workers=workers, progress=progress)


def _print_recording(rec, seconds: float) -> None:
    print(f"bag:          {rec.bag}  ({rec.frames} frames, {seconds:.1f} s)")
    for topic, count in sorted(rec.message_counts.items()):
        print(f"  {topic:<28} {count} messages")
    print(f"ground truth: {rec.ground_truth}  ({rec.revisits} revisit pairs)")
    print(f"preview:      {rec.preview}")


def cmd_synth(args: argparse.Namespace) -> int:
    config = _synth_config(args)
    t0 = time.perf_counter()
    rec = _record(config, Path(args.out), args.storage, args.compress, args.workers)
    _print_recording(rec, time.perf_counter() - t0)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from deep_vision.synthetic.config import SyntheticWorldConfig

    out = Path(args.out)
    bag = out / "synthetic_bag"
    if bag.exists():
        if not (bag / "metadata.yaml").is_file():
            raise DeepVisionError(f"{bag} exists and is not a bag written by the demo; remove it or pass --out")
        shutil.rmtree(bag)
    config = SyntheticWorldConfig(frames=args.frames)
    print(f"deep_vision {__version__} demo: rendering the synthetic world ({config.frames} frames, "
          f"{config.camera.width}x{config.camera.height} {config.camera.encoding})")
    t0 = time.perf_counter()
    rec = _record(config, bag, "mcap", False, 0)
    _print_recording(rec, time.perf_counter() - t0)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deep-vision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"deep_vision {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="render the synthetic camera world to a rosbag2 folder")
    p.add_argument("--out", required=True, help="output rosbag2 folder (must not exist)")
    p.add_argument("--frames", type=int, help="number of frames (default 600)")
    p.add_argument("--seed", type=int, help="world and noise seed (default 0)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage plugin")
    p.add_argument("--encoding", choices=("mono8", "rgb8"), help="image encoding (default mono8)")
    p.add_argument("--size", help="image size WIDTHxHEIGHT (default 1241x376)")
    p.add_argument("--config", help="YAML file with SyntheticWorldConfig keys (see config/synthetic_world.yaml)")
    p.add_argument("--compress", action="store_true", help="zstd-compress the bag")
    p.add_argument("--workers", type=int, default=0, help="render processes (default: one per core)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("demo", help="the main job on the built-in synthetic camera stream")
    p.add_argument("--out", default="demo_output", help="output folder (default ./demo_output)")
    p.add_argument("--frames", type=int, default=600, help="frames to render (default 600)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except DeepVisionError as exc:
        print(f"deep-vision {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
