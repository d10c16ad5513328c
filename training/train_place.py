"""Train PlaceNet (NetVLAD / GeM global descriptor) with a triplet loss and hard-negative mining.

Usage (repository root):
    .venv/bin/python training/train_place.py --config training/configs/place.yaml [key.sub=value ...]
    torchrun --nproc_per_node=4 training/train_place.py --config ...      # multi-GPU / multi-process (DDP)

Supervision comes from metric positions (Arandjelović et al.'s weak
supervision from GPS): every training image has a position in a *group* (one
synthetic world, one KITTI sequence, one RobotCar route, one VPR folder);
two images are *positives* when they are in the same group within
``pos_radius_m`` (headings within 30° where known) and taken at different
times (another traversal, or at least ``min_gap_s`` apart), *negatives* when
they are in different groups or farther apart than ``neg_radius_m``.
Sources (``data.train`` / ``data.val`` entries, by ``type``):

- ``synthetic``: the built-in world, rendered once into ``cache`` (seeds below
  9001 only: from 9001 on the worlds are the loop-closure evaluation's;
  ``world`` may set further SyntheticWorldConfig keys, e.g. ``scene.kind:
  indoor`` for corridors); positions and headings from the ground truth, laps
  as traversals;
- ``kitti``: an odometry sequence with its poses file (frames ``first``–``last``);
- ``robotcar``: RobotCar runs (camera folder of ``<timestamp>.png`` Bayer
  frames + ``gps.csv``/``ins.csv``), latitude/longitude → local metres; the
  runs of one entry share a group and are each other's traversals;
- ``nordland``: the VPR folder's summer/winter pairs (the same place index is
  the same place), places ``first``–``last``, which must lie in the training
  part (≥ 900; places below 900 are the evaluation part);
- ``vpr_csv``: a query/ref folder with a ``DERIVED_ground_truth.csv`` like
  Corridor's, places ``first``–``last`` (the place index is the position:
  set ``pos_radius_m`` / ``neg_radius_m`` in places); on Corridor itself they
  must lie in the training part (≥ 61; places below 56 are the evaluation
  part, 56–60 a gap).

Any entry may set ``weight`` (default 1): its images are drawn as queries with
that relative weight (e.g. to give a small real source as many queries as the
synthetic worlds); it may also override ``pos_radius_m`` / ``neg_radius_m`` /
``min_gap_s`` of ``data`` and, with its own ``augment`` mapping, any key of
``data.augment`` (e.g. no fisheye look on Nordland's 64x32 thumbnails).

Each step takes ``batch_size`` queries; the positive is the most similar of
the query's positives and the negatives are drawn from the ``hard_pool`` most
similar negatives, both by a descriptor cache of ``cache_size`` training images
recomputed every ``refresh_every`` steps. Sources of at most
``cache_whole_below`` images are always cached whole (a small real source
drawn at random into a cache shared with large synthetic ones would keep only
a few pairs, and few hard negatives, per refresh). Loss (``loss.name``): ``triplet``,
``max(0, λ + ‖F(q) − F(p)‖ − ‖F(q) − F(n)‖)`` averaged over the negatives, or
``margin`` (Wu et al. 2017: ``max(0, α + y(‖F(q) − F(x)‖ − β))``) or ``infonce`` (the positive
against every negative of the batch, softmax with temperature τ; robust where the triplet loss with hard
negatives collapses to one descriptor for every image).
Augmentation imitates illumination and season change (gain, contrast, gamma,
colour cast, saturation, haze, blur, noise), small viewpoint changes (random crops) and,
with ``fisheye_prob``, a fisheye lens (equidistant radii, black outside the
image circle).
At a fresh start the NetVLAD centres come from k-means on backbone features and
the projection from PCA-whitening of VLAD vectors (the paper's recipe), unless
``init.checkpoint`` names one of our earlier models to fine-tune (a global-GeM
model can seed a ``gem_grid`` model: ``PlaceNet.load_pretrained``, its PCA on
``init.images`` training images).
Validation: Recall@1/5 per ``data.val`` source. Resumes from
``<out>/checkpoints/last.pt``; writes ``<out>/config.yaml``, ``metrics.csv``
and ``final.pt`` (state dict + conf + validation recall).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deep_vision.estimators.geolocation import LocalTangentPlane  # noqa: E402
from deep_vision.eval.place_eval import SYNTHETIC_EVAL_FIRST_SEED  # noqa: E402
from deep_vision.geometry.kitti import read_kitti_poses  # noqa: E402
from deep_vision.io import vpr  # noqa: E402
from deep_vision.models.place_net import LUMA, PlaceNet, parameter_count, preprocess  # noqa: E402

from training.common import (  # noqa: E402
    Checkpointer,
    MetricLog,
    cleanup_distributed,
    freeze_modules,
    resolve,
    save_config,
    start_run,
    wrap_ddp,
)

logger = logging.getLogger("train_place")
HEADING_LIMIT_DEG = 30.0
#: Augmentation keys that data.augment may leave out (off by default); a source's own augment may set them too.
AUGMENT_OPTIONAL = {"fisheye_prob": 0.0, "saturation": 0.0}


# ============================================================================ data
@dataclass
class PlaceSet:
    """Images with metric positions; the unit of positive/negative mining."""

    files: list[str] = field(default_factory=list)
    loaders: list[str] = field(default_factory=list)  # "file" or "robotcar:<pattern>"
    group: list[int] = field(default_factory=list)
    source: list[int] = field(default_factory=list)  # index of the config entry
    pos: list[np.ndarray] = field(default_factory=list)  # [3] metres
    heading: list[float] = field(default_factory=list)  # radians, NaN when unknown
    traversal: list[int] = field(default_factory=list)
    time_s: list[float] = field(default_factory=list)
    pos_r: list[float] = field(default_factory=list)
    neg_r: list[float] = field(default_factory=list)
    gap_s: list[float] = field(default_factory=list)
    weight: list[float] = field(default_factory=list)  # query-sampling weight
    source_names: list[str] = field(default_factory=list)
    source_augment: list[dict] = field(default_factory=list)  # per source: its overrides of data.augment
    groups: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.files)

    def add(self, file: str, *, group: str, pos, heading: float = math.nan, traversal: int = 0, time_s: float = 0.0,
            pos_r: float, neg_r: float, gap_s: float, weight: float = 1.0, loader: str = "file") -> None:
        self.files.append(str(file))
        self.loaders.append(loader)
        self.group.append(self.groups.setdefault(group, len(self.groups)))
        self.source.append(len(self.source_names) - 1)
        self.pos.append(np.asarray(pos, np.float64).reshape(3))
        self.heading.append(float(heading))
        self.traversal.append(int(traversal))
        self.time_s.append(float(time_s))
        self.pos_r.append(float(pos_r))
        self.neg_r.append(float(neg_r))
        self.gap_s.append(float(gap_s))
        self.weight.append(float(weight))

    def freeze(self) -> None:
        """Lists → numpy arrays (after all sources are added)."""
        for name in ("group", "source", "traversal"):
            setattr(self, name, np.asarray(getattr(self, name), np.int64))
        for name in ("heading", "time_s", "pos_r", "neg_r", "gap_s", "weight"):
            setattr(self, name, np.asarray(getattr(self, name), np.float64))
        self.pos = np.stack(self.pos) if self.pos else np.zeros((0, 3))

    def relations(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positive, negative) boolean matrices [len(a) x len(b)] (see the module docstring)."""
        same = self.group[a][:, None] == self.group[b][None]
        d = np.linalg.norm(self.pos[a][:, None, :] - self.pos[b][None, :, :], axis=2)
        dh = np.abs(np.angle(np.exp(1j * (self.heading[a][:, None] - self.heading[b][None]))))
        heading_ok = np.isnan(dh) | (np.degrees(np.nan_to_num(dh)) <= HEADING_LIMIT_DEG)
        time_ok = (self.traversal[a][:, None] != self.traversal[b][None]) | \
                  (np.abs(self.time_s[a][:, None] - self.time_s[b][None]) >= self.gap_s[a][:, None])
        positive = same & (d <= self.pos_r[a][:, None]) & heading_ok & time_ok & (a[:, None] != b[None])
        negative = ~same | (d >= self.neg_r[a][:, None])
        return positive, negative


def _entry_rules(entry: dict, dcfg: dict) -> dict[str, float]:
    """Positive/negative radii, time gap and query weight of one data entry (the entry's own or data.*)."""
    return {"pos_r": float(entry.get("pos_radius_m", dcfg["pos_radius_m"])),
            "neg_r": float(entry.get("neg_radius_m", dcfg["neg_radius_m"])),
            "gap_s": float(entry.get("min_gap_s", dcfg["min_gap_s"])),
            "weight": float(entry.get("weight", 1.0))}


def _seeds(spec: Any) -> list[int]:
    if isinstance(spec, int):
        return [spec]
    if isinstance(spec, str) and ":" in spec:
        a, b = (int(v) for v in spec.split(":"))
        return list(range(a, b))
    return [int(s) for s in spec]


def render_synthetic(seed: int, frames: int, size: list[int], encoding: str, cache: Path,
                     world: dict | None = None) -> Path:
    """Render world ``seed`` once into ``cache/seed_XXXX_...`` (PNG frames + poses.csv); returns the folder.

    ``world``: further SyntheticWorldConfig keys (``route``, ``scene``, ...), part of the cache key.
    """
    import hashlib
    import json

    from deep_vision.config import from_dict
    from deep_vision.synthetic import SyntheticSequence
    from deep_vision.synthetic.config import SyntheticWorldConfig

    key = hashlib.sha256(json.dumps(world or {}, sort_keys=True).encode()).hexdigest()[:8] if world else "default"
    folder = cache / f"seed_{seed:04d}_{frames}_{size[0]}x{size[1]}_{encoding}_{key}"
    if (folder / "poses.csv").is_file():
        return folder
    config = from_dict(SyntheticWorldConfig, {**(world or {}), "seed": seed, "frames": frames})
    config.camera.width, config.camera.height, config.camera.encoding = int(size[0]), int(size[1]), encoding
    seq = SyntheticSequence(config)
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    axis = seq.T_world_cam[:, :3, 2]
    rows = []
    for i in range(len(seq)):
        image = seq.image(i)
        cv2.imwrite(str(tmp / f"{i:06d}.png"), image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        x, y, z = seq.T_world_cam[i, :3, 3]
        rows.append(f"{i:06d}.png,{x:.4f},{y:.4f},{z:.4f},{math.atan2(axis[i, 1], axis[i, 0]):.6f},"
                    f"{int(seq.trajectory.lap[i])},{seq.trajectory.times[i]:.4f}")
    (tmp / "poses.csv").write_text("file,x,y,z,heading,lap,time_s\n" + "\n".join(rows) + "\n")
    if folder.exists():  # another rank finished first
        import shutil

        shutil.rmtree(tmp)
    else:
        tmp.rename(folder)
    return folder


def build_set(entries: list[dict], dcfg: dict, is_main: bool, role: str) -> PlaceSet:
    """A :class:`PlaceSet` from config entries (rank 0 renders synthetic caches; others wait)."""
    s = PlaceSet()
    for k, e in enumerate(entries):
        kind = e["type"]
        r = _entry_rules(e, dcfg)
        s.source_names.append(e.get("name") or f"{kind}{k}")
        unknown = set(e.get("augment") or {}) - set(dcfg.get("augment") or {}) - set(AUGMENT_OPTIONAL)
        if unknown:
            raise ValueError(f"{role} source {k}: augment keys {sorted(unknown)} are not keys of data.augment")
        s.source_augment.append(dict(e.get("augment") or {}))
        if kind == "synthetic":
            cache = resolve(e.get("cache", "training_data/place_synthetic"))
            for seed in _seeds(e["seeds"]):
                if seed >= SYNTHETIC_EVAL_FIRST_SEED:
                    raise ValueError(f"{role} source {k}: synthetic seed {seed} is reserved for evaluation "
                                     f"(seeds from {SYNTHETIC_EVAL_FIRST_SEED} on)")
                args = (seed, int(e["frames"]), e["size"], e.get("encoding", "mono8"), cache, e.get("world"))
                if is_main:
                    render_synthetic(*args)
                if dist.is_initialized():
                    dist.barrier()
                folder = render_synthetic(*args)
                lines = (folder / "poses.csv").read_text().split("\n")[1:]
                for line in filter(None, lines):
                    f, x, y, z, h, lap, t = line.split(",")
                    s.add(folder / f, group=f"synthetic:{seed}", pos=[float(x), float(y), float(z)], heading=float(h),
                          traversal=int(lap), time_s=float(t), **r)
        elif kind == "kitti":
            files = sorted(resolve(e["images"]).glob("*.png"))
            poses = read_kitti_poses(resolve(e["poses"]))
            first, last = int(e.get("first", 0)), int(e.get("last", len(files) - 1))
            for i in range(first, min(last, len(files) - 1, len(poses) - 1) + 1):
                T = poses[i]
                # KITTI camera: x right, y down, z forward; the ground plane is x-z.
                heading = math.atan2(T[0, 2], T[2, 2])
                s.add(files[i], group=f"kitti:{e['images']}", pos=[T[0, 3], T[2, 3], 0.0], heading=heading,
                      time_s=i / 10.0, **r)
        elif kind == "robotcar":
            plane = None
            for t_idx, run in enumerate(e["runs"]):
                files, stamps = vpr.robotcar_images(resolve(run["images"]))
                track = vpr.read_robotcar_gps(resolve(run["gps"]))
                lat, lon, alt = track.interpolate(stamps)
                if plane is None:
                    plane = LocalTangentPlane(float(lat[0]), float(lon[0]), float(alt[0]))
                enu = plane.to_enu(lat, lon, alt)
                heading = np.arctan2(np.gradient(enu[:, 1]), np.gradient(enu[:, 0])) if len(enu) > 1 else [math.nan]
                for i, f in enumerate(files):
                    s.add(f, group=f"robotcar:{e.get('name', k)}", pos=[enu[i, 0], enu[i, 1], 0.0],
                          heading=float(heading[i]), traversal=t_idx, time_s=(stamps[i] - stamps[0]) / 1e9,
                          loader=f"robotcar:{run.get('pattern', 'gbrg')}", **r)
        elif kind == "nordland":
            first, last = int(e["first"]), int(e["last"])
            if first < vpr.NORDLAND_TRAIN_PLACES[0] and not e.get("allow_eval_places", False):
                raise ValueError(f"{role} source {k}: Nordland places below {vpr.NORDLAND_TRAIN_PLACES[0]} are the "
                                 "evaluation part; train on places from 900 on")
            bench = vpr.load_nordland(resolve(e["root"]), (first, last + 1))
            spacing = float(e.get("place_spacing_m", 50.0))
            for f, place in zip(bench.references, bench.reference_places):
                s.add(f, group="nordland", pos=[place * spacing, 0.0, 0.0], traversal=0, **r)
            for f, place in zip(bench.queries, bench.query_places):
                s.add(f, group="nordland", pos=[place * spacing, 0.0, 0.0], traversal=1, **r)
        elif kind == "vpr_csv":
            root = resolve(e["root"])
            first, last = int(e.get("first", 0)), int(e.get("last", 10**6 - 1))
            if (root.resolve().name == "vpr_corridor" and first < vpr.CORRIDOR_TRAIN_PLACES[0]
                    and not e.get("allow_eval_places", False)):
                raise ValueError(f"{role} source {k}: Corridor places below {vpr.CORRIDOR_TRAIN_PLACES[0]} are the "
                                 "evaluation part (and the gap before it); train on places from "
                                 f"{vpr.CORRIDOR_TRAIN_PLACES[0]} on")
            bench = vpr.load_corridor(root, (first, last + 1))
            for f, place in zip(bench.references, bench.reference_places):
                s.add(f, group=f"vpr:{root}", pos=[float(place), 0.0, 0.0], traversal=0, **r)
            for f, place in zip(bench.queries, bench.query_places):
                s.add(f, group=f"vpr:{root}", pos=[float(place), 0.0, 0.0], traversal=1, **r)
        else:
            raise ValueError(f"{role} source {k}: unknown type {kind!r} "
                             "(synthetic, kitti, robotcar, nordland, vpr_csv)")
    s.freeze()
    if not len(s):
        raise ValueError(f"{role}: no images in the configured sources")
    return s


class ImageStore:
    """Images of a :class:`PlaceSet`, loaded on first use and kept resized to ``size`` (W, H)."""

    def __init__(self, places: PlaceSet, size: list[int], rgb: bool) -> None:
        self.places, self.size, self.rgb = places, (int(size[0]), int(size[1])), rgb
        self._cache: dict[int, np.ndarray] = {}

    def __getitem__(self, i: int) -> np.ndarray:
        image = self._cache.get(i)
        if image is None:
            loader = self.places.loaders[i]
            if loader.startswith("robotcar:"):
                image = vpr.read_robotcar_image(self.places.files[i], loader.split(":", 1)[1], rgb=self.rgb)
            else:
                image = vpr.read_image(self.places.files[i], rgb=self.rgb)
            shrink = image.shape[1] > self.size[0]
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            self._cache[i] = image
        return image


def augment(image: np.ndarray, rng: np.random.Generator, a: dict) -> np.ndarray:
    """Illumination / season / viewpoint changes of a uint8 grey or RGB image (same size out)."""
    a = {**AUGMENT_OPTIONAL, **a}
    h, w = image.shape[:2]
    # Viewpoint: a random crop of at least crop_min of each side, resized back.
    s = rng.uniform(a["crop_min"], 1.0)
    cw, ch = max(8, int(w * s * rng.uniform(0.95, 1.05))), max(8, int(h * s))
    cw = min(cw, w)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = cv2.resize(image[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    x = image.astype(np.float32) / 255.0
    x = np.clip(x, 0, 1) ** np.float32(math.exp(rng.uniform(-a["gamma"], a["gamma"])))
    x = (x - 0.5) * np.float32(1 + rng.uniform(-a["contrast"], a["contrast"])) + 0.5 + \
        np.float32(rng.uniform(-a["brightness"], a["brightness"]))
    if x.ndim == 3 and a["colour"] > 0:  # colour cast (white balance, season)
        x = x * rng.uniform(1 - a["colour"], 1 + a["colour"], 3).astype(np.float32)
    if x.ndim == 3 and a["saturation"] > 0:  # camera colour processing: saturation scaled about the grey
        grey = (x @ LUMA.numpy())[..., None]
        x = grey + (x - grey) * np.float32(rng.uniform(1 - a["saturation"], 1 + a["saturation"]))
    if rng.random() < a["haze_prob"]:  # fog / snow glare: blend towards a bright flat level
        k = np.float32(rng.uniform(0.1, 0.5))
        x = (1 - k) * x + k * np.float32(rng.uniform(0.6, 1.0))
    if rng.random() < a["blur_prob"]:
        x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.5, 1.5)))
    if rng.random() < a["fisheye_prob"]:
        x = fisheye(x, rng)
    x = x * 255.0 + rng.normal(0.0, rng.uniform(0, a["noise"]), x.shape).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def fisheye(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fisheye look on a (pinhole) frame: radii compressed as an equidistant lens would (the frame's edge seen
    at 45-75 degrees off-axis), outside an elliptic image circle black. The circle's axes are drawn relative to
    the frame (0.65-1.0 of the width, 0.9-1.1 of the height), as a fisheye frame stored at another aspect ratio
    shows it."""
    h, w = x.shape[:2]
    theta = np.radians(rng.uniform(45.0, 75.0))
    ax, ay = rng.uniform(0.65, 1.0), rng.uniform(0.9, 1.1)
    cx, cy = (w - 1) / 2 + rng.uniform(-0.03, 0.03) * w, (h - 1) / 2 + rng.uniform(-0.03, 0.03) * h
    u = (np.arange(w, dtype=np.float32)[None, :] - cx) / (ax * w / 2)  # image-circle coordinates: 1 on its rim
    v = (np.arange(h, dtype=np.float32)[:, None] - cy) / (ay * h / 2)
    r = np.sqrt(u * u + v * v)
    # Equidistant: angle proportional to r; the pinhole frame's radius is tan(angle) (1 at the rim's angle).
    gain = np.where(r > 1e-6, np.tan(np.minimum(r, 1.0) * theta) / (np.tan(theta) * np.maximum(r, 1e-6)), 1.0)
    map_x = (cx + u * gain * (w / 2)).astype(np.float32)
    map_y = (cy + v * gain * (h / 2)).astype(np.float32)
    out = cv2.remap(x, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    rim = np.clip((1.0 - r) / 0.04, 0.0, 1.0)  # a soft dark rim, black outside
    return out * (rim[..., None] if out.ndim == 3 else rim)


# ============================================================================ model helpers
def batch_tensor(images: list[np.ndarray], model: PlaceNet, device: torch.device) -> torch.Tensor:
    x = np.concatenate([preprocess(im, model.conf["image_size"], model.conf["in_channels"]) for im in images])
    return torch.from_numpy(x).to(device, non_blocking=True)


@torch.no_grad()
def describe(model: PlaceNet, store: ImageStore, indices: np.ndarray, device: torch.device,
             batch: int = 64) -> np.ndarray:
    """[len(indices) x D] descriptors (eval mode, no augmentation)."""
    was_training = model.training
    model.eval()
    out = []
    for k in range(0, len(indices), batch):
        out.append(model(batch_tensor([store[int(i)] for i in indices[k : k + batch]], model, device)).cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, model.out_dim), np.float32)


def describe_distributed(model: PlaceNet, store: ImageStore, indices: np.ndarray, device: torch.device,
                         info) -> np.ndarray:
    """Like :func:`describe`, each rank describing a share and all ranks receiving all rows."""
    if info.world_size == 1:
        return describe(model, store, indices, device)
    share = -(-len(indices) // info.world_size)
    mine = indices[info.rank * share : (info.rank + 1) * share]
    local = torch.zeros(share, model.out_dim, device=device)
    if len(mine):
        local[: len(mine)] = torch.from_numpy(describe(model, store, mine, device)).to(device)
    gathered = [torch.zeros_like(local) for _ in range(info.world_size)]
    dist.all_gather(gathered, local)
    return torch.cat(gathered).cpu().numpy()[: len(indices)]


@torch.no_grad()
def initialise(model: PlaceNet, store: ImageStore, places: PlaceSet, icfg: dict, device: torch.device,
               rng: np.random.Generator) -> None:
    """NetVLAD centres by k-means on backbone features, projection by PCA-whitening (the paper's recipe)."""
    model.eval()
    n_img = min(len(places), int(icfg["images"]))
    idx = rng.choice(len(places), n_img, replace=False)
    if model.conf["head"] == "netvlad":
        feats = []
        for k in range(0, n_img, 32):
            f = model.features(batch_tensor([store[int(i)] for i in idx[k : k + 32]], model, device))
            f = f.flatten(2).transpose(1, 2).reshape(-1, f.shape[1]).cpu().numpy()
            pick = rng.choice(len(f), min(len(f), int(icfg["features_per_image"]) * min(32, n_img - k)), replace=False)
            feats.append(f[pick])
        alpha = model.init_netvlad(np.concatenate(feats), seed=int(rng.integers(1 << 30)))
        logger.info("NetVLAD: %d centres by k-means on %d features of %d images (alpha %.1f)",
                    model.conf["clusters"], sum(len(f) for f in feats), n_img, alpha)
    if model.projection is not None:
        pooled = [model.aggregate(model.features(batch_tensor([store[int(i)] for i in idx[k : k + 32]], model,
                                                               device))).cpu() for k in range(0, n_img, 32)]
        pooled_t = torch.cat(pooled)
        model.init_projection_pca(pooled_t, whiten=bool(icfg.get("whiten", True)))
        logger.info("projection: PCA%s of %d pooled vectors to %d-d", "-whitening" if icfg.get("whiten", True) else "",
                    len(pooled_t), model.conf["dim"])
    model.train()


def pretrained_init_images(model: PlaceNet, state: dict, store: ImageStore, places: PlaceSet, icfg: dict, seed: int,
                           device: torch.device) -> torch.Tensor | None:
    """The training frames ``PlaceNet.load_pretrained`` builds a GeM-grid model's projection from when ``state``
    (the checkpoint's) is a global-GeM model's: ``init.images`` of them, drawn with the run's seed; None when the
    checkpoint's projection already fits (nothing to build) and for other heads."""
    key = "projection.weight"
    if model.conf["head"] != "gem" or model.conf["gem_grid"] == [1] or \
            (key in state and state[key].shape == model.state_dict()[key].shape):
        return None
    pick = np.random.default_rng(seed).choice(len(places), min(len(places), int(icfg["images"])), replace=False)
    return batch_tensor([store[int(i)] for i in pick], model, device)


# ============================================================================ mining, loss, validation
class Miner:
    """Hard positives and negatives from a periodically refreshed descriptor cache."""

    def __init__(self, places: PlaceSet, mcfg: dict) -> None:
        self.places, self.cfg = places, mcfg
        self.cache_idx = np.zeros(0, np.int64)
        self.desc = np.zeros((0, 1), np.float32)
        self.positive = self.negative = np.zeros((0, 0), bool)
        self.eligible = np.zeros(0, np.int64)

    def draw_cache(self, rng: np.random.Generator) -> None:
        """Choose the cached images (small sources whole, the rest at random) and which of them can be queries
        (a positive and a negative in the cache)."""
        sizes = np.bincount(self.places.source, minlength=len(self.places.source_names))
        whole = np.isin(self.places.source, np.flatnonzero(sizes <= int(self.cfg.get("cache_whole_below", 0))))
        fixed, rest = np.flatnonzero(whole), np.flatnonzero(~whole)
        drawn = rng.choice(rest, min(len(rest), max(0, int(self.cfg["cache_size"]) - len(fixed))), replace=False)
        self.cache_idx = np.sort(np.concatenate([fixed, drawn]).astype(np.int64))
        self.positive, self.negative = self.places.relations(self.cache_idx, self.cache_idx)
        self.eligible = np.flatnonzero(self.positive.any(axis=1) & self.negative.any(axis=1))

    def refresh(self, model, store, device, info, rng: np.random.Generator) -> None:
        self.draw_cache(rng)
        self.desc = describe_distributed(model, store, self.cache_idx, device, info)
        if not len(self.eligible):
            raise ValueError(f"no training image among the {len(self.cache_idx)} cached has both a positive and a "
                             "negative: check data.pos_radius_m / neg_radius_m / min_gap_s and mining.cache_size")

    def triplets(self, batch: int, rng: np.random.Generator) -> list[tuple[int, int, list[int]]]:
        out = []
        n_neg, pool = int(self.cfg["negatives"]), int(self.cfg["hard_pool"])
        w = self.places.weight[self.cache_idx[self.eligible]]
        for q in rng.choice(self.eligible, batch, replace=len(self.eligible) < batch, p=w / w.sum()):
            sims = self.desc @ self.desc[q]
            pos = np.flatnonzero(self.positive[q])
            p = pos[np.argmax(sims[pos])]  # best positive (weak supervision)
            neg = np.flatnonzero(self.negative[q])
            hard = neg[np.argsort(-sims[neg])[:pool]]
            chosen = rng.choice(hard, n_neg, replace=len(hard) < n_neg)
            out.append((int(self.cache_idx[q]), int(self.cache_idx[p]), [int(self.cache_idx[c]) for c in chosen]))
        return out


def batch_negatives(places: PlaceSet, tuples: list[tuple[int, int, list[int]]]) -> np.ndarray:
    """[B x B·(2+n)] bool: which images of the batch (ordered as :func:`place_loss` expects) are negatives of
    each query — its own mined negatives and every other tuple's image that :meth:`PlaceSet.relations` calls one."""
    flat = np.asarray([i for q, p, negs in tuples for i in (q, p, *negs)], np.int64)
    queries = np.asarray([q for q, _, _ in tuples], np.int64)
    return places.relations(queries, flat)[1]


def place_loss(desc: torch.Tensor, n_neg: int, lcfg: dict,
               negatives: np.ndarray | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """desc: [B·(2+n) x D] ordered (q, p, n₁…nₙ) per triplet → loss and statistics.

    ``negatives`` ([B x B·(2+n)], :func:`batch_negatives`) is needed by ``infonce``: the query's positive
    against every negative in the batch, ``−log(e^{s(q,p)/τ} / (e^{s(q,p)/τ} + Σ_n e^{s(q,n)/τ}))`` with
    s the cosine similarity (the NT-Xent / InfoNCE loss of contrastive learning, Oord et al. 2018). Unlike
    the triplet loss with hard negatives it has no collapsed minimum (all descriptors equal costs log(1+N)).
    """
    d = desc.view(-1, 2 + n_neg, desc.shape[-1])
    q, p, n = d[:, 0], d[:, 1], d[:, 2:]
    dp = (q - p).norm(dim=-1)  # [B]
    dn = (q[:, None] - n).norm(dim=-1)  # [B x n]
    if lcfg["name"] == "infonce":
        if negatives is None:
            raise ValueError("loss infonce needs the batch's negative mask (batch_negatives)")
        tau = float(lcfg["temperature"])
        sims = q @ desc.T / tau  # [B x B·(2+n)]
        mask = torch.from_numpy(negatives).to(desc.device)
        neg_logits = sims.masked_fill(~mask, float("-inf"))
        pos_logit = (q * p).sum(dim=-1, keepdim=True) / tau
        logits = torch.cat([pos_logit, neg_logits], dim=1)
        loss = (torch.logsumexp(logits, dim=1) - pos_logit[:, 0]).mean()
        # "active": queries whose positive is not yet the most similar of the batch
        active = float((neg_logits.detach().max(dim=1).values >= pos_logit.detach()[:, 0]).float().mean())
    elif lcfg["name"] == "triplet":
        per = torch.relu(lcfg["margin"] + dp[:, None] - dn)
        loss = per.mean()
        active = float((per.detach() > 0).float().mean())
    elif lcfg["name"] == "margin":
        beta, alpha = lcfg["boundary"], lcfg["margin"]
        lp = torch.relu(alpha + dp - beta)
        ln = torch.relu(alpha - (dn - beta))
        loss = 0.5 * (lp.mean() + ln.mean())
        active = float(((lp.detach() > 0).float().mean() + (ln.detach() > 0).float().mean()) / 2)
    else:
        raise ValueError(f"loss.name must be triplet, margin or infonce, got {lcfg['name']!r}")
    return loss, {"active": active, "pos_dist": float(dp.detach().mean()), "neg_dist": float(dn.detach().mean())}


@torch.no_grad()
def validation_search(places: PlaceSet, idx: np.ndarray, desc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, positives) [len(idx) x len(idx)] of images ``idx`` searching each other by ``desc``;
    pairs a query may not return are at -inf."""
    pos, neg = places.relations(idx, idx)
    sims = desc @ desc.T
    sims[~(pos | neg)] = -np.inf  # itself and near, same-traversal images: neither right nor wrong
    # As at run time (and in VPR benchmarks), a query searches only what could be a loop: another
    # traversal, or its own long enough ago. (Searching its own traversal too made Nordland's summer
    # queries find other summer places first: recall 0 whatever the descriptor.)
    t = places.traversal[idx]
    dt = np.abs(places.time_s[idx][:, None] - places.time_s[idx][None])
    sims[~((t[:, None] != t[None]) | (dt >= places.gap_s[idx][:, None]))] = -np.inf
    return sims, pos


def validate(model, store: ImageStore, places: PlaceSet, device, max_per_source: int) -> dict[str, float]:
    """Recall@1/5 per source: each image with a positive queries all others (ignoring the grey zone)."""
    out = {}
    rng = np.random.default_rng(12345)
    for k, name in enumerate(places.source_names):
        idx = np.flatnonzero(places.source == k)
        if len(idx) > max_per_source:
            idx = np.sort(rng.choice(idx, max_per_source, replace=False))
        sims, pos = validation_search(places, idx, describe(model, store, idx, device))
        queries = np.flatnonzero(pos.any(axis=1))
        if not len(queries):
            continue
        top = np.argsort(-sims[queries], axis=1)[:, :5]
        hit = np.take_along_axis(pos[queries], top, axis=1)
        out[f"{name}_r1"] = float(hit[:, 0].mean())
        out[f"{name}_r5"] = float(hit.any(axis=1).mean())
    return out


def learning_rate(step: int, total: int, conf: dict) -> float:
    warm = min(int(conf.get("warmup", 200)), total // 10)
    if step < warm:
        return conf["lr"] * (step + 1) / warm
    if conf["schedule"] == "cosine":
        return 0.5 * conf["lr"] * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    return conf["lr"]


def data_summary(entries: list[dict]) -> str:
    parts = []
    for e in entries:
        e = dict(e)
        kind = e.pop("type")
        parts.append(f"{kind}(" + ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("cache",)) + ")")
    return "; ".join(parts)


# ============================================================================ main
def main(argv: list[str] | None = None) -> int:
    cfg, info, out = start_run(__doc__.split("\n\n")[0], "training/configs/place.yaml", argv)
    tcfg, dcfg, ocfg, mcfg = cfg["train"], cfg["data"], cfg["optim"], cfg["mining"]
    device = info.device

    model = PlaceNet(cfg["model"]).to(device)
    rgb = model.conf["in_channels"] == 3
    train_set = build_set(dcfg["train"], dcfg, info.is_main, "data.train")
    val_set = build_set(dcfg["val"], dcfg, info.is_main, "data.val") if dcfg.get("val") else None
    store = ImageStore(train_set, dcfg["store_size"], rgb)
    val_store = ImageStore(val_set, dcfg["store_size"], rgb) if val_set is not None else None

    optimizer = torch.optim.AdamW(model.parameters(), lr=ocfg["lr"], weight_decay=ocfg["weight_decay"])
    ckpt = Checkpointer(out)
    step = ckpt.resume(model, optimizer, device)
    if step is None:
        step = 0
        if cfg["init"].get("checkpoint"):  # fine-tune one of our own earlier models (PlaceNet.load_pretrained)
            src = resolve(cfg["init"]["checkpoint"])
            state = torch.load(src, map_location=device, weights_only=True)
            state = state.get("model", state)
            images = pretrained_init_images(model, state, store, train_set, cfg["init"], tcfg["seed"], device)
            adapted = model.load_pretrained(state, images)
            logger.info("initialised from %s%s", src, f" ({adapted})" if adapted else "")
        elif cfg["init"]["enabled"] and (info.is_main or info.world_size == 1):
            initialise(model, store, train_set, cfg["init"], device, np.random.default_rng(tcfg["seed"]))
    if tcfg.get("freeze"):
        logger.info("frozen: %s (%d parameters)", ", ".join(tcfg["freeze"]), freeze_modules(model, tcfg["freeze"]))
    ddp_model = wrap_ddp(model, info)  # DDP broadcasts rank 0's (initialised) weights

    if info.is_main:
        save_config(cfg, out, {"resolved_model_conf": model.conf, "train_images": len(train_set),
                               "val_images": len(val_set) if val_set is not None else 0,
                               "training_data_summary": data_summary(dcfg["train"]),
                               "command": " ".join(sys.argv)})
        logger.info("%d training images in %d groups, %d validation images, %d parameters, device %s, world size %d",
                    len(train_set), len(train_set.groups), len(val_set) if val_set is not None else 0,
                    parameter_count(model), device, info.world_size)
    val_names = [f"{n}_r{k}" for n in (val_set.source_names if val_set is not None else []) for k in (1, 5)]
    log = MetricLog(out, ["loss", "active", "pos_dist", "neg_dist", "lr", *val_names]) if info.is_main else None
    miner = Miner(train_set, mcfg)
    total = int(tcfg["steps"])
    n_neg = int(mcfg["negatives"])
    rng = np.random.default_rng([tcfg["seed"], info.rank, step])
    acfg = [{**dcfg["augment"], **over} for over in train_set.source_augment]  # per source
    from tqdm import tqdm

    bar = tqdm(total=total, initial=step, unit="step", disable=not info.is_main, mininterval=10, file=sys.stderr)
    last_save = time.monotonic()
    running: list[dict[str, float]] = []
    model.train()
    while step < total:
        if step % int(mcfg["refresh_every"]) == 0 or not len(miner.eligible):
            # Every rank refreshes the same cache (same seed), so all mine from the same descriptors.
            miner.refresh(model, store, device, info, np.random.default_rng([tcfg["seed"], step]))
        lr = learning_rate(step, total, ocfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        images = []
        tuples = miner.triplets(int(tcfg["batch_size"]), rng)
        for q, p, negs in tuples:
            images += [augment(store[i], rng, acfg[train_set.source[i]]) for i in (q, p, *negs)]
        desc = ddp_model(batch_tensor(images, model, device))
        negatives = batch_negatives(train_set, tuples) if cfg["loss"]["name"] == "infonce" else None
        loss, stats = place_loss(desc, n_neg, cfg["loss"], negatives)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if ocfg.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), ocfg["grad_clip"])
        optimizer.step()
        step += 1
        running.append({"loss": float(loss.item()), **stats})
        bar.update(1)
        if info.is_main:
            if step % int(tcfg["log_every"]) == 0 or step == total:
                mean = {k: float(np.mean([r[k] for r in running])) for k in running[0]}
                log.log(step, lr=lr, **mean)
                bar.set_postfix(loss=f"{mean['loss']:.4f}", active=f"{mean['active']:.2f}")
                running.clear()
            if val_set is not None and (step % int(tcfg["val_every"]) == 0 or step == total):
                metrics = validate(model, val_store, val_set, device, int(tcfg["val_max_images"]))
                log.log(step, **metrics)
                logger.info("step %d: validation %s", step, ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
            if time.monotonic() - last_save > tcfg["checkpoint_every_s"] or step == total:
                ckpt.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                           "conf": model.conf}, step)
                last_save = time.monotonic()
    bar.close()
    if info.is_main:
        final = out / "final.pt"
        metrics = validate(model, val_store, val_set, device, int(tcfg["val_max_images"])) if val_set else {}
        torch.save({"model": model.state_dict(), "conf": model.conf, "step": step, "val": metrics}, final)
        logger.info("saved %s (validation %s)", final, metrics)
    cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
