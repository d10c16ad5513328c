"""``deep-vision``: command-line entry point.

Subcommands (more arrive with the networks): ``synth`` renders the synthetic
world to a rosbag2; ``demo`` runs the main job on the built-in synthetic stream;
``export`` turns a PyTorch checkpoint into a checked ONNX file + model card;
``build-engine`` builds and caches a TensorRT engine; ``bench`` times models and baselines.
Known errors (:class:`~deep_vision.errors.DeepVisionError`) become one line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
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
    with tqdm(total=config.frames, unit="frame", desc="rendering", file=sys.stderr,
              mininterval=0.1 if sys.stderr.isatty() else 5.0) as bar:
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
    """Render the synthetic route (two loops), run every estimator + the pose graph offline, print the table."""
    from tqdm import tqdm

    from deep_vision.params import load_params
    from deep_vision.pipeline.evaluate import demo_targets, evaluate_bag, format_table
    from deep_vision.resources import default_params_path
    from deep_vision.synthetic.config import SyntheticWorldConfig

    t_start = time.perf_counter()
    params = Path(args.params) if args.params else default_params_path()
    load_params(params)  # a bad parameter file fails before the rendering
    out = Path(args.out)
    bag = out / "synthetic_bag"
    if bag.exists():
        if not (bag / "metadata.yaml").is_file():
            raise DeepVisionError(f"{bag} exists and is not a bag written by the demo; remove it or pass --out")
        shutil.rmtree(bag)
    config = SyntheticWorldConfig(frames=args.frames)
    print(f"deep_vision {__version__} demo: rendering the synthetic world ({config.frames} frames, "
          f"{config.camera.width}x{config.camera.height} {config.camera.encoding}, "
          f"{config.frames / config.camera.fps * config.route.speed_mps:.0f} m)")
    t0 = time.perf_counter()
    rec = _record(config, bag, "mcap", False, 0)
    _print_recording(rec, time.perf_counter() - t0)
    print(f"running homography, loop closure, visual odometry and the pose graph ({params}) ...")
    bars: list = []

    def progress_factory(total: int):
        bar = tqdm(total=total, desc="pipeline", unit="frame", file=sys.stderr,
                   mininterval=0.5 if sys.stderr.isatty() else 10)
        bars.append(bar)
        return lambda n: bar.update(n - bar.n)

    metrics, md = evaluate_bag(bag, out / "evaluation", mode="offline", params_file=params, overwrite=True,
                               command="deep-vision demo", progress_factory=progress_factory, targets=demo_targets)
    for bar in bars:
        bar.close()
    print()
    print(format_table(metrics))
    checks = demo_targets(metrics)
    print()
    for name, ok, detail in checks:
        print(f"  {'met   ' if ok else 'MISSED'}  {name}: {detail}")
    print()
    print(f"report:  {md}  (plots beside it)")
    print(f"metrics: {md.parent / 'metrics.json'}")
    print(f"outputs: {metrics.get('outputs_bag')}")
    print(f"demo finished in {time.perf_counter() - t_start:.0f} s")
    failed = [s for s in ("homography", "loop_closure", "vo", "pose_graph")
              if metrics[s]["errors"] or not metrics[s]["processed"]]
    if failed:
        print(f"deep-vision demo: stage(s) failed on some frames: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from deep_vision.config import load_yaml
    from deep_vision.errors import ModelError
    from deep_vision.inference.export import example_inputs_for, export_onnx
    from deep_vision.inference.torch_backend import load_state_dict
    from deep_vision.models import build_model

    conf = load_yaml(args.config) if args.config else {}
    model = build_model(args.model_class, conf)
    if args.checkpoint:
        try:
            model.load_state_dict(load_state_dict(args.checkpoint), strict=True)
        except RuntimeError as exc:
            raise ModelError(f"checkpoint {args.checkpoint} does not fit {args.model_class}: {exc}") from exc
    else:
        logger.warning("no --checkpoint: exporting %s with random weights", args.model_class)
    model.eval()
    spec = model.input_spec()
    out = Path(args.out)
    real_inputs = _real_inputs(model, args.bag, args.real_samples) if args.bag else None
    metrics = load_yaml(args.metrics) if args.metrics else {}
    card = export_onnx(
        model, example_inputs_for(model), out, output_names=[o["name"] for o in spec["outputs"]],
        dynamic_axes=getattr(model, "dynamic_axes", None), opset=args.opset, real_inputs=real_inputs,
        atol=args.atol, rtol=args.rtol,
        card_fields={
            "name": out.stem, "model_class": args.model_class, "model_config": getattr(model, "conf", conf),
            "checkpoint": os.path.relpath(args.checkpoint, out.parent) if args.checkpoint else None,
            "inputs": spec["inputs"], "outputs": spec["outputs"], "metrics": metrics,
            "training": {"command": args.training_command, "data": args.training_data, "steps": args.training_steps},
        },
    )
    parity = card.export["parity"]
    print(f"onnx:  {out}  (opset {card.opset}, sha256 {card.sha256[:16]}…)")
    print(f"card:  {out.with_suffix('.yaml')}")
    print(f"check: onnx.checker ok, TensorRT 10 operators ok, ONNX Runtime vs PyTorch max |diff| "
          f"{parity['max_abs_diff']:.3g} on {parity['random_inputs']} random + {parity['real_inputs']} real inputs")
    return 0


def _real_inputs(model, bag: str, samples: int) -> list:
    """Feeds from ``samples`` frames of ``bag`` through the model's ``inputs_from_frames``."""
    from deep_vision.io.bag import BagSequence

    make = getattr(model, "inputs_from_frames", None)
    if make is None:
        raise ConfigError(f"--bag: {type(model).__name__} has no inputs_from_frames(); cannot use real frames")
    window = int(getattr(model, "frames_per_sample", 1))
    seq = BagSequence(bag)
    stride = max(1, len(seq) // max(samples, 1))
    feeds, history = [], []
    for frame in seq.frames():
        history = (history + [frame.image])[-window:]
        if len(history) == window and frame.index % stride == 0:
            result = make(list(history))
            feeds += [result] if isinstance(result, dict) else list(result)
            if len(feeds) >= samples:
                break
    if not feeds:
        raise ConfigError(f"--bag {bag}: {type(model).__name__}.inputs_from_frames gave no inputs from windows of "
                          f"{window} frame(s) (a network on frame pairs sets frames_per_sample = 2)")
    return feeds[:samples]


def cmd_build_engine(args: argparse.Namespace) -> int:
    from deep_vision.errors import BackendUnavailableError
    from deep_vision.inference.engine_cache import EngineCache
    from deep_vision.inference.selection import (
        resolve_model,
        static_input_shapes,
        why_unavailable,
    )

    files = resolve_model(args.model)
    missing = why_unavailable("tensorrt")
    if missing:
        raise BackendUnavailableError(f"build-engine: TensorRT cannot run here: {missing}")
    if files.onnx is None:
        raise ConfigError(f"build-engine needs an ONNX model or its card, got {args.model}")
    from deep_vision.inference.tensorrt_backend import TensorRTBackend

    cache = EngineCache(args.cache)
    calibrator = None
    if args.precision == "int8":
        calibrator = _calibrator(files, args, cache)
    backend = TensorRTBackend.from_onnx(files.onnx, precision=args.precision, input_shapes=static_input_shapes(files),
                                        cache=cache, calibrator=calibrator,
                                        onnx_sha256=files.card.sha256 if files.card else None)
    print(f"engine: {backend.details['engine']}  ({backend.precision}, TensorRT {backend.details['tensorrt']})")
    return 0


def _calibrator(files, args: argparse.Namespace, cache):
    from deep_vision.inference.calibration import (
        BagCalibrationData,
        make_int8_calibrator,
    )
    from deep_vision.models import build_model

    if not args.calibration_bag:
        raise ConfigError("--precision int8 needs --calibration-bag BAG (camera frames to calibrate on)")
    if files.card is None or not files.card.model_class:
        raise ConfigError(f"int8 calibration needs the model card of {files.path} with model_class "
                          "(its inputs_from_frames preprocesses the frames)")
    model = build_model(files.card.model_class, files.card.model_config)
    data = BagCalibrationData(args.calibration_bag, model.inputs_from_frames, files.card.input_specs,
                              window=int(getattr(model, "frames_per_sample", 1)))
    cache_file = Path(args.calibration_cache or cache.folder / f"{files.onnx.stem}.int8.calib")
    return make_int8_calibrator(data, cache_file)


def cmd_bench(args: argparse.Namespace) -> int:
    from deep_vision.inference import bench
    from deep_vision.inference.selection import why_unavailable
    from deep_vision.models import TEST_NETWORKS

    settings = bench.QUICK if args.quick else bench.FULL
    if args.batches:
        settings = dataclasses.replace(settings, batches=tuple(args.batches))
    backends = args.backends or [b for b in ("tensorrt", "onnxruntime:cuda", "torch:cuda", "onnxruntime:cpu",
                                             "torch:cpu") if not why_unavailable(b)]
    command = "deep-vision bench" + "".join([
        " --quick" if args.quick else "",
        f" --models {' '.join(args.models)}" if args.models else "",
        f" --backends {' '.join(args.backends)}" if args.backends else "",
        f" --batches {' '.join(map(str, args.batches))}" if args.batches else "",
        f" --threads {' '.join(map(str, args.threads))}" if args.threads else "",
        " --no-baselines" if args.no_baselines else "",
        f" --out {args.out}" if args.out != "bench/results" else "",
    ])
    report = bench.run_bench(args.models or list(TEST_NETWORKS), backends, settings, args.out,
                             baselines=[] if args.no_baselines else None, threads=args.threads, command=command)
    print(report.md_path.read_text())
    print(f"results: {report.json_path}\n         {report.md_path}")
    return 0


def cmd_evaluate_bag(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from deep_vision.eval.progress import cli_command
    from deep_vision.pipeline.evaluate import evaluate_bag, format_table

    params = args.params
    if params is None:
        from deep_vision.resources import default_params_path

        params = default_params_path()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    out = Path(args.out) if args.out else Path("evaluation") / f"{Path(args.target).name}-{args.mode}"
    bars: list = []

    def progress_factory(total: int):
        bar = tqdm(total=total, desc=f"{args.mode} pipeline", unit="frame", file=sys.stderr,
                   mininterval=0.5 if sys.stderr.isatty() else 10)
        bars.append(bar)
        return lambda n: bar.update(n - bar.n)

    command = cli_command() if len(sys.argv) > 2 else ""
    viewer = _viewer(args.record, args.view)
    try:
        metrics, md = evaluate_bag(args.target, out, mode=args.mode, params_file=params, stages=stages,
                                   backend=None if args.backend == "auto" else args.backend, rate=args.rate,
                                   limit=args.limit, queue_depth=args.queue_depth, command=command,
                                   progress_factory=progress_factory, overwrite=args.overwrite, viewer=viewer)
    finally:
        if viewer is not None:
            viewer.close()
    for bar in bars:
        bar.close()
    print(format_table(metrics))
    print(f"report:  {md}")
    print(f"metrics: {md.parent / 'metrics.json'}")
    if args.record:
        _print_rrd(args.record, viewer)
    return 0


def _viewer(record: str | None, view: bool):
    """The Rerun recorder for ``--record FILE.rrd`` / ``--view`` (evaluate and run), or None."""
    if not (view or record):
        return None
    from deep_vision.viz.recorder import RunRecorder

    return RunRecorder(record, spawn=view)


def _print_rrd(path: str, viewer) -> None:
    print(f"recording: {path} (open with: .venv/bin/rerun {path}; {viewer.dropped} viewer items dropped)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.target not in ("homography", "place", "vo", "vo-cases", "patches", "verification"):
        return cmd_evaluate_bag(args)  # a bag: it is checked there, after the parameter file
    if args.target == "patches":  # before the default --out: it writes its own folder (report.md, metrics.json)
        from deep_vision.eval.patch_eval import evaluate_from_cli as evaluate_patches

        return evaluate_patches(args)
    if args.target == "verification":  # the same: its own folder
        from deep_vision.eval.verification_eval import evaluate_from_cli as evaluate_verification

        return evaluate_verification(args)
    if args.target == "vo-cases":  # its own folder (report.md, metrics.json, vo-cases.png)
        from deep_vision.eval.vo_cases import evaluate_from_cli as evaluate_vo_cases

        if args.out is None:
            from datetime import date

            args.out = f"bench/results/vo-cases-{date.today().isoformat()}"
        return evaluate_vo_cases(args)
    if args.out is None:
        args.out = "bench/results"
    if args.target == "place":
        from deep_vision.eval.place_eval import evaluate_from_cli

        return evaluate_from_cli(args)
    if args.target == "vo":
        from deep_vision.eval.vo_eval import evaluate_from_cli as evaluate_vo

        return evaluate_vo(args)
    from tqdm import tqdm

    from deep_vision.estimators.homography import HomographyEstimator
    from deep_vision.eval.homography_eval import evaluate, update_card
    from deep_vision.eval.progress import cli_command

    model = args.model
    if model is None:
        from deep_vision.resources import default_model_path

        model = default_model_path("homography")
    estimator = HomographyEstimator.from_model(model, backend=args.backend, refine=True,
                                               threads=args.threads or None)
    bars: list = []

    def progress_factory(total: int, desc: str):
        bar = tqdm(total=total, desc=desc, unit="pair", file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 10)
        bars.append(bar)
        return lambda n: bar.update(n - bar.n)

    command = cli_command()
    md = evaluate(estimator, Path(args.data), Path(args.out), pairs=args.pairs, seed=args.seed, command=command,
                  progress_factory=progress_factory)
    for bar in bars:
        bar.close()
    print(md.read_text())
    print(f"report: {md}")
    if args.update_card:
        card = update_card(Path(model), md.with_suffix(".json"))
        print(f"model card updated: {card}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    if args.dataset not in ("kitti", "kitti-raw", "robotcar"):
        raise ConfigError(f"convert: unknown dataset {args.dataset!r}; available: kitti, kitti-raw, robotcar")
    from tqdm import tqdm

    from deep_vision.io.convert import kitti_raw_to_bag, kitti_to_bag, robotcar_to_bag

    out = Path(args.out)
    if out.exists():
        raise DeepVisionError(f"bag output already exists: {out} (remove it or choose another --out)")
    bar = tqdm(unit="frame", desc="converting", file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 10)

    def progress(n: int, total: int) -> None:
        bar.total = total
        bar.update(n - bar.n)

    if args.dataset == "kitti":
        counts = kitti_to_bag(args.source, out, poses=args.poses, camera_index=int(args.camera or 0),
                              start=args.start, end=args.end, stride=args.stride, storage=args.storage,
                              progress=progress)
    elif args.dataset == "kitti-raw":
        counts = kitti_raw_to_bag(args.source, out, camera_index=int(args.camera or 0), calib_dir=args.calib,
                                  start=args.start, end=args.end, stride=args.stride, storage=args.storage,
                                  progress=progress)
    else:
        counts = robotcar_to_bag(args.source, out, camera=args.camera or "stereo/centre", models_dir=args.models,
                                 extrinsics_dir=args.extrinsics, ground_truth=args.ground_truth,
                                 debayer=args.debayer, start=args.start, end=args.end, stride=args.stride,
                                 storage=args.storage, progress=progress)
    bar.close()
    print(f"bag: {out}")
    for topic, n in sorted(counts.items()):
        print(f"  {topic:<28} {n} messages")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from deep_vision.nodes.runner import run

    from deep_vision.resources import default_params_path

    args.params = args.params or default_params_path()
    keys = [k.strip() for k in args.nodes.split(",") if k.strip()]
    print(f"starting {', '.join(keys)} with {args.params}" + (f", playing {args.bag}" if args.bag else ""))
    rrd = args.record if args.record and str(args.record).endswith(".rrd") else None
    viewer = _viewer(rrd, args.view)
    try:
        summary = run(args.params, keys, bag=args.bag, rate=args.rate, use_sim_time=args.use_sim_time,
                      backend=args.backend, image_topic=args.image, camera_info_topic=args.camera_info,
                      duration_s=args.duration, record=None if rrd else args.record, viewer=viewer)
    finally:
        if viewer is not None:
            viewer.close()
    if rrd:
        _print_rrd(rrd, viewer)
    for kind in ("played", "published"):
        for topic, n in sorted(summary[kind].items()):
            print(f"{kind:>9} {topic:<28} {n}")
    if "recorded" in summary:
        print(f"recorded: {summary['recorded']}")
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    from deep_vision.nodes.runner import play

    sent = play(args.bag, rate=args.rate, clock=args.clock, loop=args.loop, topics=args.topics)
    for topic, n in sorted(sent.items()):
        print(f"played {topic:<28} {n}")
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
    p.add_argument("--frames", type=int, default=600, help="frames to render (default 600: 2.4 laps)")
    p.add_argument("--params", help="ROS 2 parameter file (default: the shipped config/perception.yaml)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="PyTorch checkpoint -> checked ONNX file + model card")
    p.add_argument("--model-class", required=True,
                   help="registered model name (deep_vision.models.MODEL_REGISTRY) or module:Class")
    p.add_argument("--checkpoint", help="state dict (.pt) to load; without it the weights are random")
    p.add_argument("--config", help="YAML file with the model's conf keys")
    p.add_argument("--out", required=True, help="output ONNX path, e.g. models/<name>.onnx (card: <name>.yaml)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--bag", help="rosbag2 whose frames give real inputs for the parity check")
    p.add_argument("--real-samples", type=int, default=4, help="real inputs taken from --bag (default 4)")
    p.add_argument("--atol", type=float, default=1e-4, help="parity tolerance, absolute (default 1e-4)")
    p.add_argument("--rtol", type=float, default=1e-3, help="parity tolerance, relative (default 1e-3)")
    p.add_argument("--training-command", default="", help="command that trained the checkpoint (for the card)")
    p.add_argument("--training-data", default="", help="training data (for the card)")
    p.add_argument("--training-steps", type=int, help="optimizer steps (for the card)")
    p.add_argument("--metrics", help="YAML/JSON mapping of held-out metrics (for the card)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("build-engine", help="build (or find in the cache) the TensorRT engine of a model")
    p.add_argument("model", help="ONNX model or its .yaml model card")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16", help="default fp16")
    p.add_argument("--cache", help="engine cache folder (default $DEEP_VISION_ENGINE_CACHE or "
                                   "~/.cache/deep_vision/engines)")
    p.add_argument("--calibration-bag", help="rosbag2 with camera frames for INT8 calibration")
    p.add_argument("--calibration-cache", help="INT8 calibration cache file (default: in the engine cache)")
    p.set_defaults(func=cmd_build_engine)

    p = sub.add_parser("bench", help="latency/throughput of models per backend and of the classical baselines")
    p.add_argument("--quick", action="store_true", help="short runs, batch 1 only (under a minute on 2 cores)")
    p.add_argument("--models", nargs="+", help="registered model names (default: the test networks)")
    p.add_argument("--backends", nargs="+", help="e.g. onnxruntime:cpu torch:cpu (default: all usable here)")
    p.add_argument("--batches", nargs="+", type=int, help="batch sizes (default 1, and 8 without --quick)")
    p.add_argument("--threads", type=int, nargs="+",
                   help="CPU threads for ONNX Runtime, torch and OpenCV; several counts run each "
                        "(default: one per core)")
    p.add_argument("--no-baselines", action="store_true", help="skip the classical baselines")
    p.add_argument("--out", default="bench/results", help="results folder (default bench/results)")
    p.set_defaults(func=cmd_bench)
    from deep_vision.nodes.registry import DEFAULT_NODES, NODES

    p = sub.add_parser("run", help="start the nodes in one process (no ros2 launch), optionally playing a bag")
    p.add_argument("--params", help="ROS 2 parameter file (default: the shipped config/perception.yaml)")
    p.add_argument("--nodes", default=",".join(DEFAULT_NODES), help=f"comma-separated, of: {', '.join(NODES)}")
    p.add_argument("--bag", help="rosbag2 folder to play into the nodes")
    p.add_argument("--rate", type=float, default=1.0, help="playback rate (default 1)")
    p.add_argument("--use-sim-time", action="store_true", help="publish /clock from the bag and use it")
    p.add_argument("--backend", help="inference backend for every node (overrides the parameter file)")
    p.add_argument("--image", default="/camera/image_raw", help="image topic (default /camera/image_raw)")
    p.add_argument("--camera-info", default="/camera/camera_info", help="camera info topic")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--record", help="write what the nodes publish (and the played /tf_static) to this rosbag2 folder; "
                                    "a name ending in .rrd: a Rerun recording of what the nodes see (as --view)")
    p.add_argument("--view", action="store_true", help="watch the nodes live in the Rerun viewer (spawned): frames, "
                                                      "VO inliers, homography grid, loop closures, trajectories")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("convert", help="dataset -> rosbag2 (deep_vision's topic layout)")
    p.add_argument("dataset", help="kitti | kitti-raw | robotcar")
    p.add_argument("source", help="kitti: the .../sequences/XX folder (PNG or JPEG frames); kitti-raw: the drive "
                                  "folder (.../2011_09_26/2011_09_26_drive_0001_sync); robotcar: the run folder")
    p.add_argument("--out", required=True, help="output rosbag2 folder (must not exist)")
    p.add_argument("--poses", help="kitti: ground-truth poses file (default .../poses/XX.txt when it exists)")
    p.add_argument("--calib", help="kitti-raw: folder of calib_cam_to_cam.txt, calib_imu_to_velo.txt and "
                                   "calib_velo_to_cam.txt (default: the drive's date folder)")
    p.add_argument("--camera", help="kitti, kitti-raw: camera index 0-3 (default 0, left grey); robotcar: "
                                    "stereo/centre (default), stereo/left, stereo/right, mono_left, mono_right, "
                                    "mono_rear")
    p.add_argument("--models", help="robotcar: SDK camera models folder (default <run>/models or <run>/../models)")
    p.add_argument("--extrinsics", help="robotcar: SDK extrinsics folder (default <run>/extrinsics or <run>/../extrinsics)")
    p.add_argument("--ground-truth", default="auto", choices=("auto", "ins", "vo", "none"),
                   help="robotcar: ground truth from gps/ins.csv or vo/vo.csv (default: the first present)")
    p.add_argument("--debayer", action="store_true", help="robotcar: store rgb8 instead of the Bayer images")
    p.add_argument("--start", type=int, default=0, help="first frame")
    p.add_argument("--end", type=int, help="stop before this frame")
    p.add_argument("--stride", type=int, default=1, help="keep every n-th frame")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage plugin")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("play", help="play a rosbag2 with rclpy (where ros2 bag is not installed)")
    p.add_argument("bag", help="rosbag2 folder")
    p.add_argument("--rate", type=float, default=1.0, help="playback rate (default 1)")
    p.add_argument("--clock", action="store_true", help="publish /clock from the bag's time")
    p.add_argument("--loop", action="store_true", help="play again from the start when it ends")
    p.add_argument("--topics", nargs="+", help="only these topics")
    p.set_defaults(func=cmd_play)

    p = sub.add_parser("evaluate", help="measure an estimator on held-out data against classical baselines, "
                                        "or the whole pipeline on a bag with ground truth")
    p.add_argument("target", help="homography | place | vo | patches (one estimator on held-out data), vo-cases "
                                  "(the VO in hard cases, with and without its network), "
                                  "verification (the loop-closure verifier's features: orb, sift, learned), or a "
                                  "rosbag2 folder (the whole pipeline: metrics.json, report, output bag)")
    p.add_argument("--model", help="model (.onnx + card, or .pt); default: the shipped one")
    p.add_argument("--compare", action="append", metavar="NAME=PATH",
                   help="patches: another patch descriptor model to measure beside --model, e.g. "
                        "learned+denoiser=models/patch-denoiser.onnx (repeatable)")
    p.add_argument("--keypoints", type=int, help="patches: patches per reference image at most (default 1000; "
                                                 "--quick 300)")
    p.add_argument("--backend", default="auto", help="inference backend (default auto)")
    p.add_argument("--threads", type=int, default=0, help="inference CPU threads (0: library default)")
    p.add_argument("--pairs", type=int, default=1000, help="protocol (a): number of patch pairs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="homography protocol (a): pair seed; patches: the seed of "
                                                       "every random draw (default 0)")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[5] / ".." / "shared" / "data"),
                   help="real data folder (default ../shared/data beside the repository)")
    p.add_argument("--out", help="report folder (default bench/results; patches, verification: "
                                 "bench/results/<target>-<date>; for a bag evaluation/<bag>-<mode>)")
    p.add_argument("--mode", choices=("offline", "realtime"), default="offline",
                   help="bag: offline (every frame, deterministic) or realtime (frames at the bag's rate; frames a "
                        "stage cannot keep up with are dropped and counted)")
    p.add_argument("--params", help="bag, vo-cases: ROS 2 parameter file (default: the shipped "
                                    "config/perception.yaml)")
    p.add_argument("--stages", default="homography,loop_closure,vo,pose_graph",
                   help="bag: comma-separated stages (default all: homography,loop_closure,vo,pose_graph)")
    p.add_argument("--rate", type=float, default=1.0, help="bag, realtime: playback rate (default 1)")
    p.add_argument("--limit", type=int, help="bag: only the first N frames")
    p.add_argument("--queue-depth", type=int, help="bag, realtime: frames waiting per stage (default: each "
                                                   "node's queue_depth parameter)")
    p.add_argument("--overwrite", action="store_true", help="bag: replace what an earlier evaluation left in --out")
    p.add_argument("--view", action="store_true", help="bag: watch the run live in the Rerun viewer (spawned)")
    p.add_argument("--record", metavar="FILE.rrd", help="bag: save what the viewer shows to a Rerun recording "
                                                       "(open it later with: rerun FILE.rrd)")
    p.add_argument("--update-card", action="store_true", help="write the held-out metrics into the model card")
    p.add_argument("--quick", action="store_true", help="place: one short route, database sizes up to 100k "
                                                        "(about two minutes on two cores); patches: one synthetic "
                                                        "sequence per seed and kind, 300 patches each")
    p.add_argument("--kitti-frames", default="00:100:159,03:550:800",
                   help="vo: held-out KITTI frames, SEQ:FIRST:LAST,... (default 00:100:159,03:550:800)")
    p.add_argument("--synthetic-seeds", default="9001,9002", help="vo: held-out synthetic routes; patches: held-out "
                                                                  "synthetic worlds (default 9001,9002)")
    p.add_argument("--synthetic-frames", type=int, default=300, help="vo: frames per synthetic route (default 300)")
    p.add_argument("--repeats", type=int, default=3, help="vo-cases: runs per case, the stretch starting at a "
                                                          "different frame each time (default 3)")
    p.add_argument("--varied-seeds", default="", help="vo: held-out synthetic worlds driven on a route of their "
                   "own (vary_route: turn rates spread), e.g. 9101,9102 (default none)")
    p.add_argument("--speed-change", type=float, default=0.0, help="vo, vo-cases: the synthetic routes' speed swings "
                   "by this many m/s either side of 10 m/s over 15 s (traffic; default 0: steady)")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Our own lines at INFO (DEBUG with --verbose); other libraries' only from WARNING unless --verbose. Log lines
    # go through tqdm, so that they never break a progress bar.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("deep_vision").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():
            return args.func(args)
    except DeepVisionError as exc:  # a bad input, parameter or file: one line, exit 2 (as argparse's usage errors)
        print(f"deep-vision {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
