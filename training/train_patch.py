"""Train the patch descriptor (L2-Net) and its denoising U-Net on patch correspondences.

Usage (repository root):
    .venv/bin/python training/make_patches.py --out training_data/patches
    .venv/bin/python training/train_patch.py --config training/configs/patch.yaml [key.sub=value ...]
    torchrun --nproc_per_node=4 training/train_patch.py --config ...      # multi-GPU (DDP)

Data: the ``.npz`` files of ``training/make_patches.py``: per correspondence a reference patch and its easy and
hard views in 5 targets (HPatches' layout). Each step draws ``batch_size`` correspondences; the two patches of
a pair are two different views of it (the reference or a target; a target's view from the hard set with
probability ``data.hard_prob``), both mirrored left-right with probability ``data.mirror_prob``, each with
extra Gaussian noise.

Descriptor loss (HardNet, Mishchuk et al. 2017): for the distance matrix D of anchors × positives (unit
descriptors), ``mean max(0, margin + D_ii − min(min_{j≠i} D_ij, min_{j≠i} D_ji))`` — the hardest negative in the
batch for each pair. Denoiser: the L1 distance of ``denoiser(patch + noise)`` to the patch (its own optimiser).
Validation (every ``val_every`` steps): on the held-back sequences (every ``val_every_nth_sequence``-th of each
file), FPR at 95 % recall of reference / hard-target pairs against shuffled pairs, and the share of reference
patches whose nearest hard-target patch (of 1000) is their own. Resumable; writes config.yaml, metrics.csv
and final.pt in ``out``.
"""

from __future__ import annotations

import glob
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deep_vision.errors import DatasetError  # noqa: E402
from deep_vision.models.patch_net import PatchNet  # noqa: E402

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

logger = logging.getLogger("train_patch")


def load_views(patterns: list[str], every_nth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(train views [M x V x S x S], train levels [V], validation views, file names): V = 1 + 5 easy + 5 hard
    views of each correspondence, level 0 reference / 1 easy / 2 hard; every ``every_nth`` sequence of each
    file goes to validation."""
    files = sorted({f for p in patterns for f in glob.glob(str(resolve(p)))})
    if not files:
        raise DatasetError(f"no patch files match {patterns} (run training/make_patches.py)")
    train, val = [], []
    levels = None
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            views = np.concatenate([z["ref"][:, None], z["targets_easy"].transpose(1, 0, 2, 3),
                                    z["targets_hard"].transpose(1, 0, 2, 3)], axis=1)
            held = (z["sequence"] % every_nth) == every_nth - 1
            T = z["targets_easy"].shape[0]
        levels = np.r_[0, np.full(T, 1), np.full(T, 2)]
        train.append(views[~held])
        val.append(views[held])
    return np.concatenate(train), levels, np.concatenate(val), [Path(f).name for f in files]


def sample_pairs(views: np.ndarray, levels: np.ndarray, batch: int, dcfg: dict, rng: np.random.Generator):
    """Two distinct views of ``batch`` random correspondences, [B x 1 x S x S] float32 each."""
    idx = rng.choice(len(views), batch, replace=False)
    easy, hard = np.flatnonzero(levels == 1), np.flatnonzero(levels == 2)

    def pick() -> np.ndarray:
        v = np.where(rng.random(batch) < dcfg["hard_prob"], rng.choice(hard, batch), rng.choice(easy, batch))
        return np.where(rng.random(batch) < 1.0 / (1 + len(easy)), 0, v)  # the reference as often as a target

    va = pick()
    vb = pick()
    same = va == vb
    vb[same] = np.where(va[same] == 0, rng.choice(easy, same.sum()), 0)
    a, b = views[idx, va], views[idx, vb]
    flip = rng.random(batch) < dcfg["mirror_prob"]
    a[flip], b[flip] = a[flip, :, ::-1], b[flip, :, ::-1]

    def tensor(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)[:, None]
        sigma = torch.from_numpy(rng.uniform(0, dcfg["noise"], batch).astype(np.float32))[:, None, None, None]
        return (t + sigma * torch.randn_like(t)).clamp_(0, 1)

    return tensor(a), tensor(b)


def hardest_negative_loss(a: torch.Tensor, p: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """HardNet's loss and the batch's mean positive distance."""
    d = torch.cdist(a, p) if a.device.type != "cpu" else torch.sqrt(torch.clamp(
        2.0 - 2.0 * a @ p.T, min=1e-8))
    pos = d.diagonal()
    masked = d + torch.eye(len(d), device=d.device) * 10.0
    neg = torch.minimum(masked.min(dim=1).values, masked.min(dim=0).values)
    return F.relu(margin + pos - neg).mean(), pos.mean()


@torch.no_grad()
def validate(model: PatchNet, val: np.ndarray, device: torch.device, n: int = 1000) -> dict[str, float]:
    model.eval()
    rng = np.random.default_rng(0)
    idx = rng.choice(len(val), min(n, len(val)), replace=False)

    def describe(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)[:, None].to(device)
        return torch.cat([model.descriptor(t[i:i + 500]) for i in range(0, len(t), 500)])

    ref = describe(val[idx, 0])
    hard = describe(val[idx, -1])  # the hardest target's hard view
    d = torch.cdist(ref, hard)
    pos = d.diagonal()
    neg = d[torch.arange(len(d)), torch.roll(torch.arange(len(d)), 1)]
    fpr95 = float((neg <= torch.quantile(pos, 0.95)).float().mean())
    nn_ok = float((d.argmin(dim=1) == torch.arange(len(d), device=d.device)).float().mean())
    # denoiser: L1 on noisy validation patches at the middle of the noise range
    clean = torch.from_numpy(val[idx[:500], 0]).float().div_(255.0)[:, None].to(device)
    g = torch.Generator().manual_seed(0)
    noisy = (clean + 0.05 * torch.randn(clean.shape, generator=g).to(device)).clamp(0, 1)
    l1 = float((model.denoiser(noisy) - clean).abs().mean()) if model.denoiser is not None else float("nan")
    l1_noisy = float((noisy - clean).abs().mean())
    model.train()
    return {"val_fpr95": fpr95, "val_nn_accuracy": nn_ok, "val_denoise_l1": l1, "val_noisy_l1": l1_noisy}


def main(argv: list[str] | None = None) -> int:
    cfg, dist_info, out = start_run(__doc__.split("\n\n")[0], "training/configs/patch.yaml", argv)
    tcfg, dcfg, ocfg = cfg["train"], cfg["data"], cfg["optim"]
    device = dist_info.device
    model = PatchNet(cfg["model"]).to(device)
    ddp_desc = wrap_ddp(model.descriptor, dist_info)
    optimizer = make_optimizer(model.descriptor.parameters(), ocfg)
    den_opt = torch.optim.Adam(model.denoiser.parameters(), lr=cfg["denoise"]["lr"]) if model.denoiser else None
    ckpt = Checkpointer(out)
    step = 0
    last = ckpt.latest()
    if last is not None:
        state = ckpt.load(last, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if den_opt is not None and "denoiser_optimizer" in state:
            den_opt.load_state_dict(state["denoiser_optimizer"])
        step = int(state["step"])
        logger.info("resumed from %s at step %d", last, step)
    train, levels, val, files = load_views(dcfg["train"], dcfg["val_every_nth_sequence"])
    if dist_info.is_main:
        save_config(cfg, out, {"resolved_model_conf": model.conf, "command": " ".join(sys.argv),
                               "train_files": files, "train_correspondences": int(len(train)),
                               "val_correspondences": int(len(val))})
        logger.info("%d training correspondences (%d views each), %d validation, %d + %d parameters, device %s",
                    len(train), train.shape[1], len(val), sum(p.numel() for p in model.descriptor.parameters()),
                    sum(p.numel() for p in model.denoiser.parameters()) if model.denoiser else 0, device)
    log = MetricLog(out, ["loss", "pos_dist", "denoise_l1", "lr", "val_fpr95", "val_nn_accuracy",
                          "val_denoise_l1", "val_noisy_l1"]) if dist_info.is_main else None
    rng = np.random.default_rng([tcfg["seed"], dist_info.rank, step])
    total = tcfg["steps"]
    last_save = time.monotonic()
    from tqdm import tqdm

    bar = tqdm(total=total, initial=step, unit="step", disable=not dist_info.is_main, mininterval=10, file=sys.stderr)
    running: list[tuple[float, float, float]] = []
    sig_lo, sig_hi = cfg["denoise"]["sigma"]
    model.train()
    while step < total:
        lr = learning_rate(step, total, ocfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        a, p = (t.to(device) for t in sample_pairs(train, levels, tcfg["batch_size"], dcfg, rng))
        loss, pos = hardest_negative_loss(ddp_desc(a), ddp_desc(p), cfg["loss"]["margin"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if ocfg.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(model.descriptor.parameters(), ocfg["grad_clip"])
        optimizer.step()
        dl = torch.zeros(())
        if den_opt is not None:
            sigma = torch.empty(len(a), 1, 1, 1, device=device).uniform_(sig_lo, sig_hi)
            dl = (model.denoiser((a + sigma * torch.randn_like(a)).clamp(0, 1)) - a).abs().mean()
            den_opt.zero_grad(set_to_none=True)
            dl.backward()
            den_opt.step()
        step += 1
        running.append((loss.item(), pos.item(), dl.item()))
        bar.update(1)
        if dist_info.is_main:
            if step % tcfg["log_every"] == 0:
                m = np.mean(running, axis=0)
                log.log(step, loss=m[0], pos_dist=m[1], denoise_l1=m[2], lr=lr)
                bar.set_postfix(loss=f"{m[0]:.3f}")
                running.clear()
            if step % tcfg["val_every"] == 0 or step == total:
                v = validate(model, val, device)
                log.log(step, **v)
                logger.info("step %d: validation %s", step, {k: round(x, 4) for k, x in v.items()})
            if time.monotonic() - last_save > tcfg["checkpoint_every_s"] or step == total:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                         "conf": model.conf}
                if den_opt is not None:
                    state["denoiser_optimizer"] = den_opt.state_dict()
                ckpt.save(state, step)
                last_save = time.monotonic()
    bar.close()
    if dist_info.is_main:
        v = validate(model, val, device)
        torch.save({"model": model.state_dict(), "conf": model.conf, "step": step, **v}, out / "final.pt")
        logger.info("saved %s (%s)", out / "final.pt", v)
    cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
