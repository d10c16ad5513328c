"""Train HomographyNet on synthetic warps of any folder of images (DeTone et al. 2016).

Usage (repository root):
    .venv/bin/python training/train_homography.py --config training/configs/homography.yaml [key.sub=value ...]
    torchrun --nproc_per_node=4 training/train_homography.py --config ...      # multi-GPU (DDP)

Pairs are generated on the fly (deep_vision.eval.homography_pairs): random
patch, corners moved by ±ρ, warp, same crop, independent photometric changes.
Loss: mean squared error of the 8 corner offsets divided by ρ. Resumes from
``<out>/checkpoints/last.pt``; writes ``<out>/config.yaml``, ``metrics.csv``
and ``final.pt`` (the model's state dict + conf).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deep_vision.eval.homography_pairs import (  # noqa: E402
    list_images,
    load_grey,
    photometric,
    sample_pair,
)
from deep_vision.models.homography_net import HomographyNet, normalize  # noqa: E402

from training.common import (  # noqa: E402
    Checkpointer,
    MetricLog,
    cleanup_distributed,
    learning_rate,
    make_optimizer,
    resolve,
    save_config,
    start_run,
    wrap_ddp,
)

logger = logging.getLogger("train_homography")


def collect_files(entries: list[dict]) -> list[Path]:
    """Image files of the data entries; an entry's ``repeat: N`` lists it N times (sampling weight)."""
    files: list[Path] = []
    for e in entries:
        listed = list_images(resolve(e["path"]), e.get("pattern", "**/*"), e.get("first"), e.get("last"))
        files += listed * int(e.get("repeat", 1))
    return files


class PairStream(IterableDataset):
    """Endless stream of (patches [2 x S x S] float32, offsets [4 x 2] float32) training pairs."""

    def __init__(self, files: list[Path], data_conf: dict, patch_size: int, seed: int, rank: int) -> None:
        self.files = files
        self.conf = data_conf
        self.patch_size = patch_size
        self.seed = seed
        self.rank = rank

    def __iter__(self):
        info = get_worker_info()
        wid = info.id if info is not None else 0
        # the seed, rank and worker decide every draw: a run repeats, a resumed one (seed + step) draws anew
        rng = np.random.default_rng([self.seed, self.rank, wid])
        cache: dict[int, np.ndarray] = {}
        c = self.conf
        while True:
            k = int(rng.integers(len(self.files)))
            if k not in cache:
                cache[k] = load_grey(self.files[k])
            pair = sample_pair(cache[k], rng, self.patch_size, c["rho"], tuple(c["crop"]), c["max_zoom"])
            prev = photometric(pair.prev, rng, **c["photometric"])
            curr = photometric(pair.curr, rng, **c["photometric"])
            yield np.stack([normalize(prev), normalize(curr)]), pair.offsets.astype(np.float32)


def validation_set(files: list[Path], data_conf: dict, patch_size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(12345)
    images = [load_grey(f) for f in files]
    xs, ys = [], []
    for _ in range(n):
        pair = sample_pair(images[int(rng.integers(len(images)))], rng, patch_size, data_conf["rho"],
                           tuple(data_conf["crop"]), data_conf["max_zoom"])
        xs.append(np.stack([normalize(pair.prev), normalize(pair.curr)]))
        ys.append(pair.offsets.astype(np.float32))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


@torch.no_grad()
def evaluate_mace(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    """Mean average corner error (pixels) on the validation pairs: with the 4-point
    parameterisation the corner error is the distance between predicted and true offsets."""
    model.eval()
    errs = []
    for i in range(0, len(x), 128):
        pred = model(x[i : i + 128].to(device)).cpu()
        errs.append((pred - y[i : i + 128]).norm(dim=-1).mean(dim=-1))
    model.train()
    return float(torch.cat(errs).mean())


def main(argv: list[str] | None = None) -> int:
    cfg, dist_info, out = start_run(__doc__.split("\n\n")[0], "training/configs/homography.yaml", argv)
    tcfg, dcfg, ocfg = cfg["train"], cfg["data"], cfg["optim"]
    device = dist_info.device

    model = HomographyNet(cfg["model"]).to(device)
    patch = model.conf["patch_size"]
    rho = float(model.conf["rho"])
    ddp_model = wrap_ddp(model, dist_info)
    optimizer = make_optimizer(model.parameters(), ocfg)
    ckpt = Checkpointer(out)
    step = ckpt.resume(model, optimizer, device) or 0

    train_files = collect_files(dcfg["train"])
    val_files = collect_files(dcfg["val"])
    if dist_info.is_main:
        save_config(cfg, out, {"resolved_model_conf": model.conf, "train_images": len(train_files),
                               "val_images": len(val_files), "command": " ".join(sys.argv)})
        logger.info("%d training images, %d validation images, %d parameters, device %s, world size %d",
                    len(train_files), len(val_files), sum(p.numel() for p in model.parameters()), device,
                    dist_info.world_size)
    val_x, val_y = validation_set(val_files, dcfg, patch, dcfg["val_pairs"])
    loader = DataLoader(PairStream(train_files, dcfg, patch, tcfg["seed"] + step, dist_info.rank),
                        batch_size=tcfg["batch_size"], num_workers=dcfg["workers"],
                        persistent_workers=dcfg["workers"] > 0)
    log = MetricLog(out, ["loss", "train_mace", "lr", "val_mace"]) if dist_info.is_main else None
    total = tcfg["steps"]
    last_save = time.monotonic()
    running = []
    from tqdm import tqdm

    bar = tqdm(total=total, initial=step, unit="step", disable=not dist_info.is_main, mininterval=10,
               file=sys.stderr)
    model.train()
    for x, y in loader:
        if step >= total:
            break
        lr = learning_rate(step, total, ocfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        pred = ddp_model(x)
        loss = ((pred - y) / rho).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if ocfg.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), ocfg["grad_clip"])
        optimizer.step()
        step += 1
        running.append(loss.item())
        bar.update(1)
        if dist_info.is_main:
            if step % tcfg["log_every"] == 0:
                train_mace = float((pred.detach() - y).norm(dim=-1).mean())
                log.log(step, loss=np.mean(running), train_mace=train_mace, lr=lr)
                bar.set_postfix(loss=f"{np.mean(running):.4f}", mace=f"{train_mace:.2f}")
                running.clear()
            if step % tcfg["val_every"] == 0 or step == total:
                val_mace = evaluate_mace(model, val_x, val_y, device)
                log.log(step, val_mace=val_mace)
                logger.info("step %d: validation MACE %.2f px", step, val_mace)
            if time.monotonic() - last_save > tcfg["checkpoint_every_s"] or step == total:
                ckpt.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                           "conf": model.conf}, step)
                last_save = time.monotonic()
    bar.close()
    if dist_info.is_main:
        final = out / "final.pt"
        torch.save({"model": model.state_dict(), "conf": model.conf, "step": step,
                    "val_mace": evaluate_mace(model, val_x, val_y, device)}, final)
        logger.info("saved %s", final)
    cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
