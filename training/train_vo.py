"""Train DeepVO on sequences of frames with poses (synthetic world, KITTI, RobotCar).

Usage (repository root):
    .venv/bin/python training/train_vo.py --config training/configs/vo.yaml [key.sub=value ...]
    torchrun --nproc_per_node=4 training/train_vo.py --config ...      # multi-GPU (DDP)

Data: folders of ``.npz`` sequences (``frames`` [N x H x W] uint8 at the network
size, ``poses`` [N x 4 x 4] camera poses, KITTI convention) made by
``training/make_vo_sequences.py``. Each sample is a run of 4-10 frame pairs at a
random stride; the label of each pair is the current camera's pose in the
previous camera's frame as (t, Euler ZYX). A flow-input model
(``model.preset=compact_flow``) gets the DIS flow of each augmented pair, made
by the run-time code (:mod:`deep_vision.models.vo_input`). Augmentation: photometric changes per
frame; with probability ``data.mirror`` a run is mirrored left-right about the
principal point (the world reflected in the camera's y-z plane: x translation,
yaw and roll change sign), so turns to either side are equally common (the
synthetic routes all turn left); with probability
``data.reverse`` a run is played backwards (each label becomes the inverse motion); with probability
``data.stop`` the camera stands still for 1-3 frames within a run (a frame repeated, each copy with its own
photometric noise: the label is no motion), the case two-view geometry cannot measure. ``data.degrade``
(probability per kind): a contiguous part of a run (2 frames or more) is made hard for two-view geometry the
way ``deep-vision evaluate vo-cases`` makes its stretches (on training frames only): ``no_ground``, everything
below a row at 45-62 % of the height a flat grey (a hood, snow, no visible floor); ``dark``, 4-12 % of the
light; ``blur``, a linear motion blur 3-9 pixels long.
``init``: weights to start from (a run's ``final.pt`` or a shipped ``models/vo.pt``; ignored when the run
resumes from its own checkpoint) for fine-tuning on new data.
Loss (DeepVO):
``mean ‖t̂ − t‖² + κ · mean ‖φ̂ − φ‖²``. Resumable; writes config.yaml,
metrics.csv and final.pt in ``out``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deep_vision.errors import DatasetError  # noqa: E402
from deep_vision.eval.homography_pairs import photometric  # noqa: E402
from deep_vision.eval.vo_cases import linear_blur  # noqa: E402
from deep_vision.geometry.transforms import euler_zyx_from_rotation, invert_transform  # noqa: E402
from deep_vision.models.deepvo import DeepVO  # noqa: E402
from deep_vision.models.vo_input import FlowFrontEnd, flow_front_end, normalise_frame, pair_input  # noqa: E402

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

logger = logging.getLogger("train_vo")


def load_sequences(folders: list[str]) -> list[dict[str, np.ndarray]]:
    """Every .npz under each folder (or matching each pattern such as ``training_data/vo/synthetic_*.npz``):
    frames, poses, name and the principal point's column ``cx`` in the stored frames (files written before
    make_vo_sequences.py stored it: the image centre)."""
    seqs = []
    for folder in folders:
        root = resolve(folder)
        files = sorted(root.glob("*.npz")) if root.is_dir() else sorted(root.parent.glob(root.name))
        if not files:
            raise DatasetError(f"Could not find any .npz sequence in root: {root}")
        for f in files:
            with np.load(f) as z:
                cx = float(z["cx"]) if "cx" in z.files else (z["frames"].shape[2] - 1) / 2.0
                seqs.append({"frames": z["frames"], "poses": z["poses"], "name": f.stem, "cx": cx})
    return seqs


MIRROR = np.diag([-1.0, 1.0, 1.0, 1.0])  # reflection x -> -x (camera frame, KITTI convention: x right)


def mirror_frames(frames: np.ndarray, cx: float) -> np.ndarray:
    """Frames [N x H x W] reflected about the column ``cx`` (u -> 2·cx − u), so the principal point stays put and
    the mirrored images are what the same camera sees in the reflected world; edge columns are replicated."""
    w, h = frames.shape[2], frames.shape[1]
    A = np.array([[-1.0, 0.0, 2.0 * cx], [0.0, 1.0, 0.0]])
    return np.stack([cv2.warpAffine(f, A, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                     for f in frames])


def mirror_poses(poses: np.ndarray) -> np.ndarray:
    """Camera poses [N x 4 x 4] of the reflected world (M T M with M = diag(-1, 1, 1, 1)): still rotations."""
    return MIRROR @ poses @ MIRROR


def motion_labels(poses: np.ndarray) -> np.ndarray:
    """[N-1 x 6] (t, Euler ZYX) of each camera in the previous camera's frame."""
    rel = invert_transform(poses[:-1]) @ poses[1:]
    return np.concatenate([rel[:, :3, 3], euler_zyx_from_rotation(rel[:, :3, :3])], axis=1)


def network_inputs(frames: np.ndarray, model_conf: dict, flow: FlowFrontEnd | None) -> np.ndarray:
    """What ``DeepVO.forward_sequence`` takes for one run of frames [T+1 x H x W] (uint8, network size):
    the frames normalised [T+1 x 1 x H x W], or for input flow the flows of consecutive pairs [T x 2 x H x W]."""
    if model_conf["input"] == "flow":
        return np.stack([pair_input(a, b, model_conf, flow) for a, b in zip(frames[:-1], frames[1:])])
    return np.stack([normalise_frame(f) for f in frames])


def with_stop(idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same run length with the camera standing still for 1-3 frames at a random place in it."""
    j = int(rng.integers(0, len(idx)))
    still = int(rng.integers(1, 4))
    return np.concatenate([idx[: j + 1], np.repeat(idx[j], still), idx[j + 1:]])[: len(idx)]


def degraded(frames: np.ndarray, kinds: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """``frames`` with a contiguous part of them degraded by each kind drawn (see ``data.degrade``)."""
    unknown = sorted(set(kinds) - {"no_ground", "dark", "blur"})
    if unknown:
        raise DatasetError(f"data.degrade: unknown kind {unknown[0]!r} (no_ground, dark, blur)")
    frames = frames.copy()
    for kind, p in kinds.items():
        if rng.random() >= p:
            continue
        a = int(rng.integers(0, len(frames) - 1))
        b = int(rng.integers(a + 2, len(frames) + 1))
        part = frames[a:b]
        if kind == "no_ground":
            part[:, int(rng.uniform(0.45, 0.62) * frames.shape[1]):] = int(rng.integers(60, 141))
        elif kind == "dark":
            frames[a:b] = (part.astype(np.float32) * rng.uniform(0.04, 0.12)).astype(np.uint8)
        elif kind == "blur":
            length, angle = int(rng.integers(3, 10)), float(rng.uniform(-20, 20))
            frames[a:b] = np.stack([linear_blur(f, length, angle) for f in part])
    return frames


class SequenceStream(IterableDataset):
    """Endless (inputs, labels [T x 6]) samples of a fixed length per batch; inputs as :func:`network_inputs`
    (frames [T+1 x 1 x H x W], or flows [T x 2 x H x W] for a flow-input model)."""

    def __init__(self, seqs, data_conf: dict, batch_size: int, seed: int, rank: int, model_conf: dict) -> None:
        self.seqs, self.conf, self.batch_size, self.seed, self.rank = seqs, data_conf, batch_size, seed, rank
        self.model_conf = model_conf

    def __iter__(self):
        info = get_worker_info()
        # the seed, rank and worker decide every draw: a run repeats, a resumed one (seed + step) draws anew
        rng = np.random.default_rng([self.seed, self.rank, info.id if info else 0])
        c = self.conf
        flow = flow_front_end(self.model_conf)
        extra = 0 if flow else 1  # frames per run beyond its labels
        while True:
            length = int(rng.integers(c["min_pairs"], c["max_pairs"] + 1))  # one length per batch
            xs, ys = [], []
            for _ in range(self.batch_size):
                seq = self.seqs[int(rng.integers(len(self.seqs)))]
                stride = int(rng.choice(c["strides"]))
                span = length * stride
                if len(seq["frames"]) <= span:
                    stride, span = 1, min(length, len(seq["frames"]) - 1)
                start = int(rng.integers(0, len(seq["frames"]) - span))
                idx = np.arange(start, start + span + 1, stride)
                if rng.random() < c.get("stop", 0.0):
                    idx = with_stop(idx, rng)
                if rng.random() < c.get("reverse", 0.0):
                    idx = idx[::-1]
                frames, poses = seq["frames"][idx], seq["poses"][idx]
                if rng.random() < c.get("mirror", 0.0):
                    frames, poses = mirror_frames(frames, seq["cx"]), mirror_poses(poses)
                if c.get("degrade"):
                    frames = degraded(frames, c["degrade"], rng)
                frames = np.stack([photometric(f, rng, **c["photometric"]) for f in frames])
                xs.append(network_inputs(frames, self.model_conf, flow))
                ys.append(motion_labels(poses).astype(np.float32))
            n = min(len(y) for y in ys)
            yield (torch.from_numpy(np.stack([x[: n + extra] for x in xs])),
                   torch.from_numpy(np.stack([y[:n] for y in ys])))


def vo_loss(pred: torch.Tensor, target: torch.Tensor, kappa: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lt = (pred[..., :3] - target[..., :3]).pow(2).sum(-1).mean()
    lr = (pred[..., 3:] - target[..., 3:]).pow(2).sum(-1).mean()
    return lt + kappa * lr, lt, lr


@torch.no_grad()
def validate(model: DeepVO, seqs, device: torch.device, window: int = 50) -> dict[str, float]:
    """Mean translation error (m/frame) and rotation error (deg/frame) over validation windows."""
    model.eval()
    et, er = [], []
    flow = flow_front_end(model.conf)
    for seq in seqs:
        for s in range(0, len(seq["frames"]) - window, window):
            x = network_inputs(seq["frames"][s : s + window + 1], model.conf, flow)
            pred, _ = model.forward_sequence(torch.from_numpy(x)[None].to(device))
            target = torch.from_numpy(motion_labels(seq["poses"][s : s + window + 1]))
            et.append((pred[0, :, :3].cpu() - target[:, :3]).norm(dim=-1).mean().item())
            er.append(np.rad2deg((pred[0, :, 3:].cpu() - target[:, 3:]).norm(dim=-1).mean().item()))
    model.train()
    return {"val_trans_m": float(np.mean(et)), "val_rot_deg": float(np.mean(er))}


def main(argv: list[str] | None = None) -> int:
    cfg, dist_info, out = start_run(__doc__.split("\n\n")[0], "training/configs/vo.yaml", argv)
    tcfg, dcfg, ocfg = cfg["train"], cfg["data"], cfg["optim"]
    device = dist_info.device
    model = DeepVO(cfg["model"]).to(device)
    ddp_model = wrap_ddp(model, dist_info)
    optimizer = make_optimizer(model.parameters(), {"momentum": 0.9, **ocfg})
    ckpt = Checkpointer(out)
    step = ckpt.resume(model, optimizer, device)
    if step is None and cfg.get("init"):
        state = torch.load(resolve(cfg["init"]), map_location=device, weights_only=True)
        model.load_state_dict(state.get("model", state))
        logger.info("initialised from %s", cfg["init"])
    step = step or 0
    train_seqs = load_sequences(dcfg["train"])
    val_seqs = load_sequences(dcfg["val"])
    if dist_info.is_main:
        save_config(cfg, out, {"resolved_model_conf": model.conf, "command": " ".join(sys.argv),
                               "train_sequences": [s["name"] for s in train_seqs],
                               "val_sequences": [s["name"] for s in val_seqs]})
        logger.info("%d training sequences, %d validation, %d parameters, device %s",
                    len(train_seqs), len(val_seqs), sum(p.numel() for p in model.parameters()), device)
    for s in train_seqs + val_seqs:
        if s["frames"].shape[1:] != (model.conf["height"], model.conf["width"]):
            raise DatasetError(f"sequence {s['name']}: frames are {s['frames'].shape[2]}x{s['frames'].shape[1]}, "
                               f"the model takes {model.conf['width']}x{model.conf['height']}")
    loader = DataLoader(SequenceStream(train_seqs, dcfg, tcfg["batch_size"], tcfg["seed"] + step, dist_info.rank,
                                       model.conf),
                        batch_size=None, num_workers=dcfg["workers"], persistent_workers=dcfg["workers"] > 0)
    log = MetricLog(out, ["loss", "trans_mse", "rot_mse", "lr", "val_trans_m", "val_rot_deg"]) if dist_info.is_main else None
    total = tcfg["steps"]
    last_save = time.monotonic()
    from tqdm import tqdm

    bar = tqdm(total=total, initial=step, unit="step", disable=not dist_info.is_main, mininterval=10, file=sys.stderr)
    running: list[tuple[float, float, float]] = []
    model.train()
    for x, y in loader:
        if step >= total:
            break
        lr = learning_rate(step, total, ocfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        x, y = x.to(device), y.to(device)
        pred, _ = ddp_model.forward_sequence(x) if dist_info.world_size == 1 else ddp_model.module.forward_sequence(x)
        loss, lt, lrot = vo_loss(pred, y, cfg["loss"]["kappa"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if ocfg.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), ocfg["grad_clip"])
        optimizer.step()
        step += 1
        running.append((loss.item(), lt.item(), lrot.item()))
        bar.update(1)
        if dist_info.is_main:
            if step % tcfg["log_every"] == 0:
                m = np.mean(running, axis=0)
                log.log(step, loss=m[0], trans_mse=m[1], rot_mse=m[2], lr=lr)
                bar.set_postfix(loss=f"{m[0]:.4f}")
                running.clear()
            if step % tcfg["val_every"] == 0 or step == total:
                v = validate(model, val_seqs, device)
                log.log(step, **v)
                logger.info("step %d: validation %s", step, v)
            if time.monotonic() - last_save > tcfg["checkpoint_every_s"] or step == total:
                ckpt.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                           "conf": model.conf}, step)
                last_save = time.monotonic()
    bar.close()
    if dist_info.is_main:
        v = validate(model, val_seqs, device)
        torch.save({"model": model.state_dict(), "conf": model.conf, "step": step, **v}, out / "final.pt")
        logger.info("saved %s (%s)", out / "final.pt", v)
    cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
