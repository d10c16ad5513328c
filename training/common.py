"""Shared training plumbing: config + overrides, distributed set-up, checkpoints, logs.

Every trainer merges a YAML config with ``key.sub=value`` command-line
overrides, writes the final config beside its checkpoints (so each result can
be reproduced), checkpoints atomically every few minutes and resumes from the
latest checkpoint of its output folder. Under ``torchrun`` it trains with
DistributedDataParallel (NCCL on GPUs, Gloo on CPUs); rank 0 logs and saves.
"""

from __future__ import annotations

import argparse
import copy
import csv
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

logger = logging.getLogger("training")

ROOT = Path(__file__).resolve().parents[1]  # the repository


def resolve(path: str | Path) -> Path:
    """A config path: absolute as given, relative to the repository root otherwise."""
    p = Path(path)
    return p if p.is_absolute() else (ROOT / p)


# ---------------------------------------------------------------- config
def _set_dotted(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = cfg
    for k in keys[:-1]:
        if k not in node or not isinstance(node[k], dict):
            raise KeyError(f"override {dotted!r}: no section {k!r} in the config")
        node = node[k]
    if keys[-1] not in node:
        raise KeyError(f"override {dotted!r}: unknown key {keys[-1]!r}; known: {sorted(node)}")
    node[keys[-1]] = value


def _merge(base: dict[str, Any], top: dict[str, Any], where: str) -> dict[str, Any]:
    """``top`` over ``base``: mappings merge key by key, other values replace; a key ending in ``+`` appends its
    list to the base's list of that name."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if key.endswith("+"):
            name = key[:-1]
            if not isinstance(out.get(name), list) or not isinstance(value, list):
                raise ValueError(f"{where}: {key!r} appends a list to a list, but {name!r} is "
                                 f"{type(out.get(name)).__name__} in the base config")
            out[name] = out[name] + copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, f"{where}.{key}")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_config(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ValueError(f"config {path}: 'base' chain loops back to itself")
    with path.open() as f:
        cfg = yaml.safe_load(f) or {}
    if "base" not in cfg:
        return cfg
    base_path = Path(cfg.pop("base"))
    base = _read_config(base_path if base_path.is_absolute() else resolve(base_path), (*seen, path))
    return _merge(base, cfg, path.name)


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """YAML config (safe_load) with ``a.b=value`` overrides (values parsed as YAML); unknown keys are an error.
    A config may start from another: ``base: training/configs/x.yaml`` (relative to the repository root) with its
    own keys merged over the base's (mappings key by key, ``name+:`` appends to a list)."""
    cfg = _read_config(Path(path))
    cfg = copy.deepcopy(cfg)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override must look like key.sub=value, got {item!r}")
        key, raw = item.split("=", 1)
        _set_dotted(cfg, key.strip(), yaml.safe_load(raw))
    return cfg


# ---------------------------------------------------------------- distributed
@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> DistInfo:
    """Initialise DDP when launched by torchrun (WORLD_SIZE set); else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    return DistInfo(rank, world, local, dev)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def start_run(description: str, default_config: str, argv: list[str] | None) -> tuple[dict[str, Any], "DistInfo", Path]:
    """The start of every trainer: ``--config`` + ``key=value`` overrides, logging, distributed set-up,
    CPU threads (``train.threads``) and seed (``train.seed`` + rank). Returns (config, dist info, output folder)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=str(ROOT / default_config))
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = load_config(args.config, args.overrides)
    info = setup_distributed(cfg["train"]["device"])
    if cfg["train"]["threads"]:
        torch.set_num_threads(int(cfg["train"]["threads"]))
    torch.manual_seed(cfg["train"]["seed"] + info.rank)
    return cfg, info, resolve(cfg["out"])


# ---------------------------------------------------------------- optimisation
def learning_rate(step: int, total: int, conf: dict) -> float:
    """``cosine`` (linear warm-up over min(500, 5 %) steps) or ``step`` (×0.1 at each ``decay_at`` fraction)."""
    if conf["schedule"] == "cosine":
        warm = min(500, total // 20)
        if step < warm:
            return conf["lr"] * (step + 1) / warm
        return 0.5 * conf["lr"] * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    drops = sum(step >= f * total for f in conf["decay_at"])
    return conf["lr"] * (0.1**drops)


def make_optimizer(params, conf: dict) -> torch.optim.Optimizer:
    if conf["name"] == "sgd":
        return torch.optim.SGD(params, lr=conf["lr"], momentum=conf["momentum"], weight_decay=conf["weight_decay"])
    if conf["name"] == "adam":
        return torch.optim.AdamW(params, lr=conf["lr"], weight_decay=conf["weight_decay"])
    raise ValueError(f"optim.name must be sgd or adam, got {conf['name']!r}")


def freeze_modules(model: torch.nn.Module, names: list[str]) -> int:
    """Freeze the submodules ``names`` (as in ``model.named_modules()``) for fine-tuning; returns the frozen
    parameter count.

    Their parameters stop learning and their BatchNorm layers keep the running statistics they were trained
    with: ``model.train()`` leaves them in eval mode (so a frozen backbone computes what it computed before).
    """
    modules = dict(model.named_modules())
    unknown = [n for n in names if not n or n not in modules]
    if unknown:
        raise ValueError(f"train.freeze: no submodule {unknown} (top level: {[n for n, _ in model.named_children()]})")
    frozen = [modules[n] for n in names]
    count = 0
    for m in frozen:
        for p in m.parameters():
            count += p.numel() if p.requires_grad else 0
            p.requires_grad_(False)
    base_train = model.train

    def train(mode: bool = True) -> torch.nn.Module:
        base_train(mode)
        for m in frozen:
            m.eval()
        return model

    model.train = train  # type: ignore[method-assign]  # DDP's train() reaches it through children() too
    model.train(model.training)
    return count


def wrap_ddp(model: torch.nn.Module, info: "DistInfo") -> torch.nn.Module:
    """``model`` inside DistributedDataParallel when there are several ranks, else ``model`` itself."""
    if info.world_size == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)


# ---------------------------------------------------------------- checkpoints
class Checkpointer:
    """``out/checkpoints/step_XXXXXXX.pt`` + ``last.pt``, written atomically; loads with weights_only=True."""

    def __init__(self, out: str | Path, keep: int = 3) -> None:
        self.dir = Path(out) / "checkpoints"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep = keep

    def save(self, state: dict[str, Any], step: int) -> Path:
        path = self.dir / f"step_{step:07d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        last_tmp = self.dir / "last.tmp"
        torch.save(state, last_tmp)
        os.replace(last_tmp, self.dir / "last.pt")
        for old in sorted(self.dir.glob("step_*.pt"))[: -self.keep]:
            old.unlink()
        return path

    def latest(self) -> Path | None:
        last = self.dir / "last.pt"
        return last if last.is_file() else None

    @staticmethod
    def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        return torch.load(path, map_location=map_location, weights_only=True)

    def resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> int | None:
        """Load ``last.pt`` into ``model`` and ``optimizer``; its step, or None when there is nothing to resume."""
        last = self.latest()
        if last is None:
            return None
        state = self.load(last, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        logger.info("resumed from %s at step %d", last, int(state["step"]))
        return int(state["step"])


# ---------------------------------------------------------------- logging
class MetricLog:
    """Append-only CSV of metrics (+ TensorBoard when it is installed)."""

    def __init__(self, out: str | Path, fields: list[str]) -> None:
        self.path = Path(out) / "metrics.csv"
        self.fields = ["step", "time", *fields]
        self._writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(Path(out) / "tb"))
        except Exception:  # noqa: BLE001 - tensorboard is optional
            self._writer = None

    def log(self, step: int, **metrics: float) -> None:
        unknown = set(metrics) - set(self.fields)
        if unknown:
            raise KeyError(f"metrics {sorted(unknown)} not among the log's fields {self.fields}")
        row = {"step": step, "time": round(time.time(), 1), **{k: float(v) for k, v in metrics.items()}}
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            if new:
                w.writeheader()
            w.writerow(row)
        if self._writer is not None:
            for k, v in metrics.items():
                self._writer.add_scalar(k, float(v), step)


def save_config(cfg: dict[str, Any], out: str | Path, extra: dict[str, Any] | None = None) -> Path:
    path = Path(out) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        yaml.safe_dump({**cfg, **(extra or {})}, f, sort_keys=False)
    return path


# ---------------------------------------------------------------- export
def load_trained(run: str | Path, checkpoint: str | Path | None, model_cls: type) -> tuple[torch.nn.Module, dict, dict]:
    """A trained model in eval mode from a run folder: (model, checkpoint state, the run's config.yaml).

    ``checkpoint`` defaults to ``<run>/final.pt``, else ``<run>/checkpoints/last.pt``.
    """
    run = Path(run)
    ckpt = Path(checkpoint) if checkpoint else (run / "final.pt" if (run / "final.pt").is_file()
                                                else run / "checkpoints" / "last.pt")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    model = model_cls(state["conf"])
    model.load_state_dict(state["model"])
    model.eval()
    return model, state, cfg
