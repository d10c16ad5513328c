"""Benchmark: the shipped networks in PyTorch on a GPU. It measures FP16 latency at batch 1, throughput at
several batch sizes, and a short DDP training step.

Each network of models/ (homography, place, vo) is built from its model card (``model_class``, ``model_config``)
with the PyTorch definition in deep_vision.models, and loaded with the checkpoint the card names. Where that file
is absent the weights are random (seed 0) and the report says so: the timings do not depend on the weights.
Inputs are random tensors of the card's input shapes, already on the device, so no pre-processing is timed.

- Latency: batch 1, FP16 (FP32 beside it), ``torch.inference_mode``. After the warm-up calls, each timed call
  is followed by ``torch.cuda.synchronize()``; median, p95 and p99 over up to N calls (or ``max_seconds``). The
  FP16 outputs' largest absolute difference from FP32 on the same input is recorded too.
- Throughput: FP16 at several batch sizes; samples/s = batch / median time per batch.
- DDP: ``torchrun`` with 2 processes when there are 2 or more GPUs, else 1 (NCCL; gloo on the CPU). It runs a
  few AdamW steps of one network (``--ddp-network``, default homography) on a synthetic batch, with FP16
  autocast + GradScaler on the GPU. Steps/s comes from rank 0's step times; the steps synchronise through the
  gradient all-reduce.

On a machine without a GPU, ``--device cpu`` (or ``auto``) runs everything in FP32 on the CPU. ``--quick`` makes
it short. Both exist to check the script where no GPU is at hand; the numbers that matter come from a GPU.

Usage (repository root; 2-4 min on one H100, limited to ``--budget`` seconds, default 420; ``--quick`` on 2 CPU
cores takes under a minute):
    python bench/gpu.py [--out DIR | --results bench/results] [--device auto|cuda|cpu] [--quick]
        [--networks homography place vo] [--batches 1 8 32 128 512] [--ddp-network homography] [--no-ddp]
    torchrun --nproc_per_node=N bench/gpu.py --ddp-only --out DIR     (the DDP part alone: DIR/ddp.json)
Writes results.json and README.md to --out (default bench/results/gpu-DATE, or cpu-check-DATE without a GPU).
Both give the command, the GPU and the library versions. Without ``--ddp-only``, the script starts the DDP part
itself with ``python -m torch.distributed.run``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    import deep_vision  # noqa: F401
except ImportError:  # not installed (a bare GPU machine): the package's source in this checkout
    sys.path.insert(0, str(ROOT / "ros2_ws" / "src" / "deep_vision"))
from deep_vision.models import build_model  # noqa: E402
from deep_vision.inference.devices import cpu_model  # noqa: E402

#: network -> the batch axis of each input in the card's order (DeepVO's LSTM states are [L x B x U])
NETWORKS: dict[str, tuple[int, ...]] = {"homography": (0,), "place": (0,), "vo": (0, 1, 1), "patch": (0,)}


@dataclass(frozen=True)
class Settings:
    warmup: int  # untimed calls first (cuDNN autotuning, allocator, lazy initialisation), at least ...
    warmup_s: float  # ... this many seconds of them (clocks and thread pools ramp up)
    runs: int  # timed calls, at most ...
    max_seconds: float  # ... or until this much time has passed (at least min_runs)
    batches: tuple[int, ...]  # throughput batch sizes
    ddp_warmup: int  # untimed training steps
    ddp_steps: int  # timed training steps
    ddp_batch: int  # samples per process and step
    budget_s: float  # the whole run, DDP included; later cases are skipped past it
    ddp_reserve_s: float  # of the budget, kept for the DDP part
    min_runs: int = 10


FULL = Settings(warmup=50, warmup_s=1.0, runs=1000, max_seconds=5.0, batches=(1, 8, 32, 128, 512),
                ddp_warmup=5, ddp_steps=50, ddp_batch=64, budget_s=420.0, ddp_reserve_s=150.0)
QUICK = Settings(warmup=3, warmup_s=0.3, runs=20, max_seconds=1.0, batches=(1, 4), ddp_warmup=1, ddp_steps=3,
                 ddp_batch=4, budget_s=55.0, ddp_reserve_s=30.0, min_runs=5)
#: a full run on the CPU: the same cases, shorter (training steps at batch 64 take seconds each there)
FULL_CPU = replace(FULL, warmup=5, runs=200, max_seconds=3.0, batches=(1, 8, 32), ddp_warmup=2, ddp_steps=10,
                   ddp_batch=16)


# -- the networks ------------------------------------------------------------------------------
def load_card(name: str, models_dir: Path) -> dict:
    import yaml

    path = models_dir / f"{name}.yaml"
    if not path.is_file():
        raise SystemExit(f"model card not found: {path}")
    return yaml.safe_load(path.read_text())


def load_network(name: str, models_dir: Path) -> tuple[torch.nn.Module, dict]:
    """The module of ``models_dir/<name>.yaml`` with the card's checkpoint (or random weights), and what was
    loaded: ``{"class", "parameters", "weights", "inputs": [(name, shape), ...]}``."""
    card = load_card(name, models_dir)
    torch.manual_seed(0)
    module = build_model(card["model_class"], card.get("model_config") or {})
    checkpoint = models_dir / card["checkpoint"] if card.get("checkpoint") else None
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        # training/export save {"model": state_dict, "conf": ...}; a bare state dict works too
        if isinstance(state.get("model"), dict):
            state = state["model"]
        module.load_state_dict(state, strict=True)
        weights = str(checkpoint.relative_to(ROOT) if checkpoint.is_relative_to(ROOT) else checkpoint)
    else:
        missing = checkpoint.name if checkpoint is not None else "no checkpoint named in the card"
        weights = f"random (seed 0): {missing} absent"
    inputs = [(spec["name"], list(spec["shape"])) for spec in card["inputs"]]
    return module, {"class": card["model_class"], "parameters": sum(p.numel() for p in module.parameters()),
                    "weights": weights, "inputs": inputs}


def example_inputs(name: str, inputs: list[tuple[str, list[int]]], batch: int, device: torch.device,
                   dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    """Random tensors of the card's input shapes with the batch axis set to ``batch``."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for (_, shape), axis in zip(inputs, NETWORKS[name]):
        shape = list(shape)
        shape[axis] = batch
        out.append((0.5 * torch.randn(shape, generator=gen)).to(device=device, dtype=dtype))
    return out


def first_output(result) -> torch.Tensor:
    return result[0] if isinstance(result, (tuple, list)) else result


# -- timing ------------------------------------------------------------------------------------
def synchronizer(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def time_calls(fn, sync, settings: Settings) -> np.ndarray:
    """Seconds per call of ``fn`` (synchronised after each), after the untimed warm-up calls."""
    t_warm = time.perf_counter()
    calls = 0
    while calls < settings.warmup or time.perf_counter() - t_warm < settings.warmup_s:
        fn()
        sync()
        calls += 1
    times = []
    start = time.perf_counter()
    while len(times) < settings.runs:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        if len(times) >= settings.min_runs and time.perf_counter() - start > settings.max_seconds:
            break
    return np.asarray(times)


def stats_ms(times: np.ndarray) -> dict:
    ms = times * 1e3
    return {"runs": int(ms.size), "p50_ms": round(float(np.median(ms)), 4),
            "p95_ms": round(float(np.percentile(ms, 95)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "mean_ms": round(float(ms.mean()), 4)}


def measure_network(name: str, models_dir: Path, device: torch.device, settings: Settings, deadline: float,
                    report: dict, log=print) -> None:
    """Latency and throughput of one network; appends to ``report["latency"]``, ``["throughput"]``,
    ``["skipped"]`` and sets ``report["networks"][name]``."""
    module, info = load_network(name, models_dir)
    report["networks"][name] = {k: v for k, v in info.items() if k != "inputs"} | {
        "input_shapes": {n: s for n, s in info["inputs"]}}
    module = module.to(device).eval()
    sync = synchronizer(device)
    precisions = {"fp16": torch.float16, "fp32": torch.float32} if device.type == "cuda" else {"fp32": torch.float32}
    main_precision = next(iter(precisions))
    # a copy per precision: casting one module to fp16 and back would leave its fp32 weights rounded
    nets = {label: copy.deepcopy(module).to(dtype) for label, dtype in precisions.items()}
    del module
    outputs = {}
    with torch.inference_mode():
        for label, dtype in precisions.items():  # batch 1 latency, fp16 first
            if time.monotonic() > deadline:
                report["skipped"].append(f"{name} latency {label}: past the time budget")
                continue
            net = nets[label]
            x = example_inputs(name, info["inputs"], 1, device, dtype)
            outputs[label] = first_output(net(*x)).float()
            s = stats_ms(time_calls(lambda: net(*x), sync, settings))
            report["latency"].append({"network": name, "precision": label, "batch": 1, **s})
            log(f"[gpu] {name}: batch 1 {label} p50 {s['p50_ms']:.3f} ms, p95 {s['p95_ms']:.3f} ms ({s['runs']} runs)")
        if "fp16" in outputs and "fp32" in outputs:  # the same random input at both precisions
            diff = round(float((outputs["fp16"] - outputs["fp32"]).abs().max()), 6)
            next(r for r in report["latency"] if r["network"] == name and r["precision"] == "fp16")[
                "max_abs_diff_vs_fp32"] = diff
        net = nets[main_precision]
        for batch in settings.batches:
            if batch == 1:  # the batch-1 latency above, in samples/s
                row = next((r for r in report["latency"] if r["network"] == name and r["precision"] == main_precision),
                           None)
                if row:
                    report["throughput"].append({**row, "samples_per_s": round(1e3 / row["p50_ms"], 1)})
                continue
            if time.monotonic() > deadline:
                report["skipped"].append(f"{name} batch {batch}: past the time budget")
                continue
            try:
                x = example_inputs(name, info["inputs"], batch, device, precisions[main_precision])
                s = stats_ms(time_calls(lambda: net(*x), sync, settings))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                report["skipped"].append(f"{name} batch {batch}: out of GPU memory")
                continue
            tput = round(batch * 1e3 / s["p50_ms"], 1)
            report["throughput"].append({"network": name, "precision": main_precision, "batch": batch, **s,
                                         "samples_per_s": tput})
            log(f"[gpu] {name}: batch {batch} {main_precision} p50 {s['p50_ms']:.3f} ms, {tput:,.0f} samples/s")
    nets.clear()  # free the GPU memory before the next network
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- DDP ---------------------------------------------------------------------------------------
def ddp_worker(args: argparse.Namespace, settings: Settings) -> int:
    """One torchrun process: a few training steps of ``args.ddp_network`` under DistributedDataParallel."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    rank, local, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        torch.backends.cudnn.benchmark = True
    else:
        device = torch.device("cpu")
        if args.threads:
            torch.set_num_threads(args.threads)
    backend = args.ddp_backend or ("nccl" if cuda else "gloo")
    dist.init_process_group(backend)
    try:
        module, info = load_network(args.ddp_network, Path(args.models))
        model = DDP(module.to(device).train(), device_ids=[local] if cuda else None)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(device.type, enabled=cuda)
        x = example_inputs(args.ddp_network, info["inputs"], settings.ddp_batch, device, torch.float32, seed=rank)
        sync = synchronizer(device)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=cuda):
                out = model(*x)
                outs = out if isinstance(out, (tuple, list)) else (out,)
                # a synthetic target: the step's cost does not depend on what the loss is
                loss = sum(o.float().square().mean() for o in outs)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        for _ in range(settings.ddp_warmup):
            step()
        sync()
        dist.barrier()
        times = []
        t_all = time.perf_counter()
        for _ in range(settings.ddp_steps):
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
        total = time.perf_counter() - t_all
        if rank == 0:
            s = stats_ms(np.asarray(times))
            result = {"network": args.ddp_network, "processes": world, "backend": backend,
                      "device": torch.cuda.get_device_name(local) if cuda else "cpu",
                      "precision": "fp16 autocast + GradScaler" if cuda else "fp32",
                      "optimizer": "AdamW", "batch_per_process": settings.ddp_batch,
                      "global_batch": settings.ddp_batch * world, "warmup_steps": settings.ddp_warmup,
                      "steps": settings.ddp_steps, **s, "steps_per_s": round(settings.ddp_steps / total, 2),
                      "samples_per_s": round(settings.ddp_steps * settings.ddp_batch * world / total, 1),
                      "weights_at_start": info["weights"]}
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "ddp.json").write_text(json.dumps(result, indent=2) + "\n")
            print(f"[gpu] DDP {args.ddp_network}: {world} process(es), {backend}, batch {settings.ddp_batch} per "
                  f"process: step p50 {s['p50_ms']:.1f} ms, {result['steps_per_s']} steps/s", flush=True)
    finally:
        dist.destroy_process_group()
    return 0


def run_ddp(args: argparse.Namespace, out: Path, timeout_s: float, log=print) -> tuple[dict | None, list[str]]:
    """Start the DDP part under torchrun: its result (or None) and notes on what went wrong.

    On the GPU a failed NCCL run is tried once more with gloo, which also reduces CUDA tensors, while time is left.
    """
    nproc = min(torch.cuda.device_count(), 2) if args.device == "cuda" else 1
    env = dict(os.environ)
    if args.device == "cpu":  # torchrun would set 1 thread per process where OMP_NUM_THREADS is unset
        env.setdefault("OMP_NUM_THREADS", str(args.threads or os.cpu_count() or 1))
    deadline = time.monotonic() + timeout_s
    notes = []
    for backend in (["nccl", "gloo"] if args.device == "cuda" else ["gloo"]):
        left = deadline - time.monotonic()
        if left < 20:
            notes.append(f"DDP with {backend}: not tried, {left:.0f} s left")
            break
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(Path(__file__).resolve()), "--ddp-only", "--ddp-backend", backend, "--out", str(out),
               "--device", args.device, "--models", args.models, "--ddp-network", args.ddp_network] \
            + (["--quick"] if args.quick else []) + (["--threads", str(args.threads)] if args.threads else [])
        log(f"[gpu] DDP: {shlex.join(cmd[1:])} (timeout {left:.0f} s)")
        (out / "ddp.json").unlink(missing_ok=True)
        # its own process group, so that a timeout ends torchrun's workers too
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            notes.append(f"DDP with {backend}: no result within {left:.0f} s")
            break
        if rc == 0 and (out / "ddp.json").is_file():
            result = json.loads((out / "ddp.json").read_text())
            (out / "ddp.json").unlink()
            return result, notes
        notes.append(f"DDP with {backend}: torchrun exited with {rc} (its output is above)")
    return None, notes


# -- report ------------------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict:
    info = {"host": socket.gethostname(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(), "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {"gpu": torch.cuda.get_device_name(device), "gpu_count": torch.cuda.device_count(),
                 "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                 "compute_capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
                 "cudnn": torch.backends.cudnn.version(), "driver": nvidia_driver()}
    else:
        info["gpu"] = None
    return info


def nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def markdown(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    where = (f"{m['gpu']} ({m['gpu_memory_gib']} GiB, compute capability {m['compute_capability']}; "
             f"{m['gpu_count']} GPU(s)), CUDA {m['cuda']}, cuDNN {m['cudnn']}, driver {m['driver']}"
             if m["gpu"] else "no GPU: the CPU, FP32 only (a check of the script, not a GPU measurement)")
    title = "PyTorch on the GPU" if m["gpu"] else "PyTorch on the CPU (a check of bench/gpu.py; no GPU)"
    sync = "torch.cuda.synchronize() after each call, cudnn.benchmark on" if m["gpu"] else "torch.set_num_threads " \
        f"{s['threads'] or 'default'}"
    lines = [f"# {title}: latency, throughput, DDP training step ({report['date']})", "",
             f"- command: `{report['command']}`",
             f"- device: {where}",
             f"- host: {m['host']}, {m['cpu']}, {m['cores']} cores, load average {m['load_average_1m']} at the start; "
             f"torch {m['torch']}, Python {m['python']}",
             f"- timing: at least {s['warmup']} warm-up calls and {s['warmup_s']} s of them, then up to {s['runs']} "
             f"calls or {s['max_seconds']} s per case; {sync}; inputs are random tensors already on the device",
             f"- wall time {report['elapsed_s']:.0f} s (budget {s['budget_s']:.0f} s)", "",
             "## Networks", "", "| network | class | parameters | weights |", "|---|---|---:|---|"]
    for name, n in report["networks"].items():
        lines.append(f"| {name} | {n['class']} | {n['parameters']:,} | {n['weights']} |")
    lines += ["", "## Latency, batch 1", "",
              "| network | precision | p50 ms | p95 ms | p99 ms | runs | max abs diff vs FP32 |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for r in report["latency"]:
        diff = r.get("max_abs_diff_vs_fp32")
        lines.append(f"| {r['network']} | {r['precision']} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | "
                     f"{r['p99_ms']:.3f} | {r['runs']} | {'' if diff is None else f'{diff:.2g}'} |")
    lines += ["", "## Throughput", "", "| network | precision | batch | p50 ms per batch | p95 ms | samples/s |",
              "|---|---|---:|---:|---:|---:|"]
    for r in report["throughput"]:
        lines.append(f"| {r['network']} | {r['precision']} | {r['batch']} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | "
                     f"{r['samples_per_s']:,.0f} |")
    d = report.get("ddp")
    if d:
        lines += ["", "## DDP training step (torchrun)", "",
                  "| network | processes | backend | precision | batch per process | step p50 ms | p95 ms | steps/s "
                  "| samples/s |", "|---|---:|---|---|---:|---:|---:|---:|---:|",
                  f"| {d['network']} | {d['processes']} | {d['backend']} | {d['precision']} | {d['batch_per_process']} "
                  f"| {d['p50_ms']:.1f} | {d['p95_ms']:.1f} | {d['steps_per_s']} | {d['samples_per_s']:,.0f} |", "",
                  f"{d['optimizer']}; warm-up steps {d['warmup_steps']}, then {d['steps']} timed (rank 0's times); "
                  "loss = mean square of the outputs on a synthetic batch; weights at the start: "
                  f"{d['weights_at_start']}."]
    if report["skipped"]:
        lines += ["", "## Skipped or retried", ""] + [f"- {x}" for x in report["skipped"]]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "README.md").write_text(markdown(report))


# -- main --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="results folder (default RESULTS/gpu-DATE; RESULTS/cpu-check-DATE on the CPU)")
    parser.add_argument("--results", default=str(ROOT / "bench" / "results"), help="RESULTS (default bench/results)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="auto: the GPU when there is one, else the CPU")
    parser.add_argument("--quick", action="store_true", help="a short run, to check the script (CPU: under a minute)")
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--batches", nargs="+", type=int, help="throughput batch sizes (default 1 8 32 128 512)")
    parser.add_argument("--ddp-network", choices=list(NETWORKS), default="homography")
    parser.add_argument("--no-ddp", action="store_true", help="skip the DDP training step")
    parser.add_argument("--ddp-only", action="store_true", help="only the DDP part (run under torchrun)")
    parser.add_argument("--ddp-backend", choices=("nccl", "gloo"), help="default: nccl on the GPU, gloo on the CPU")
    parser.add_argument("--budget", type=float, help="seconds for the whole run (default 420; --quick 55)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own)")
    parser.add_argument("--models", default=str(ROOT / "models"), help="folder of the model cards and checkpoints")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here (torch "
                     f"{torch.__version__}); use --device cpu to check the script")
    return args


def settings_for(args: argparse.Namespace) -> Settings:
    settings = QUICK if args.quick else (FULL if args.device == "cuda" else FULL_CPU)
    if args.batches:
        settings = replace(settings, batches=tuple(args.batches))
    if args.budget:
        settings = replace(settings, budget_s=args.budget)
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_for(args)
    if args.ddp_only:
        if "LOCAL_RANK" not in os.environ:
            raise SystemExit("--ddp-only runs under torchrun: torchrun --nproc_per_node=N bench/gpu.py --ddp-only ...")
        if not args.out:
            raise SystemExit("--ddp-only needs --out DIR (rank 0 writes DIR/ddp.json)")
        return ddp_worker(args, settings)

    start = time.monotonic()
    today = datetime.date.today().isoformat()
    device = torch.device(args.device)
    out = Path(args.out) if args.out else Path(args.results) / (
        f"gpu-{today}" if device.type == "cuda" else f"cpu-check-{today}")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif args.threads:
        torch.set_num_threads(args.threads)
    script = Path(__file__).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    report = {"command": f"python {shown} {shlex.join(argv if argv is not None else sys.argv[1:])}".strip(),
              "date": today, "machine": machine_info(device),
              "settings": {**asdict(settings), "quick": args.quick, "device": args.device, "threads": args.threads},
              "networks": {},
              "latency": [], "throughput": [], "ddp": None, "skipped": [], "elapsed_s": 0.0}
    print(f"[gpu] {report['machine']['gpu'] or 'no GPU: on the CPU, FP32'}; torch {torch.__version__}; "
          f"results to {out}", flush=True)
    deadline = start + settings.budget_s - (0 if args.no_ddp else settings.ddp_reserve_s)
    for name in args.networks:
        measure_network(name, Path(args.models), device, settings, deadline, report,
                        log=lambda msg: print(msg, flush=True))
        report["elapsed_s"] = round(time.monotonic() - start, 1)
        write_report(report, out)  # what is done so far survives a timeout
    if not args.no_ddp:
        left = settings.budget_s - (time.monotonic() - start)
        report["ddp"], notes = run_ddp(args, out, max(left, settings.ddp_reserve_s),
                                       log=lambda msg: print(msg, flush=True))
        report["skipped"] += notes
    report["elapsed_s"] = round(time.monotonic() - start, 1)
    write_report(report, out)
    print(markdown(report))
    print(f"results: {out / 'results.json'}\n         {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
