"""PlaceNet: a real-time CNN global descriptor for place recognition.

A small VGG-style backbone (3×3 conv + BatchNorm + ReLU, stride-2 stages) and
one of two aggregation heads:

- ``netvlad`` (Arandjelović et al. 2016, arXiv:1511.07247): the local features
  (L2-normalised) are softly assigned to K cluster centres by a 1×1 conv;
  the residuals to each centre are summed, each cluster's sum is L2-normalised
  (intra-normalisation), the K×D vector is L2-normalised, and an optional
  learned linear projection (PCA-whitening-initialised) reduces it to ``dim``
  and is L2-normalised again. The centres start from k-means on backbone
  features (:meth:`PlaceNet.init_netvlad`), the assignment weights from the
  centres as in the paper (``w_k = 2αc_k``, ``b_k = −α‖c_k‖²``).
- ``gem``: generalised-mean pooling (Radenović et al. 2018) with a learnable
  exponent p, then the projection and L2 normalisation. ``gem_grid`` adds a
  spatial pyramid: GeM over the whole map and over each cell of a g×g grid
  per listed g (``[1, 2]``: the whole image + 4 quadrants), each pooled vector
  L2-normalised, concatenated, projected. Global pooling discards where things
  are; in self-similar places (corridors: doors and lockers on both sides,
  everywhere) the layout is what tells places apart.

Presets: ``compact`` (7 conv layers 32-64-64-128-128-192-192 at total stride
16, NetVLAD head with 32 clusters, 256-d output; 2.4 M parameters ≈ 10 MB in
FP32, a few ms per frame with ONNX Runtime on one CPU core) and ``gem`` (same
backbone, GeM head, 256-d).

Input ``image``: [B x C x H x W] float32, C = 1 (grey) or 3 (RGB, in that
order), the frame resized to ``image_size`` (W, H) with ``cv2.INTER_AREA`` and
mapped by ``(x / 255 − ½) / ½`` (see :func:`preprocess`). Output
``descriptor``: [B x dim] float32, unit L2 norm; the cosine similarity of two
places is the inner product of their descriptors. With ``local_features``
(the exported models), a second output ``local_features``: the backbone's map
[B x D x H/s x W/s] (s: total stride), each cell's D-vector at unit L2 norm —
what :class:`deep_vision.estimators.SpatialReranker` matches between a query and
its retrieved candidates. Training uses the descriptor alone.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deep_vision.errors import ConfigError
from deep_vision.models.conf import merge_conf
from deep_vision.models.place_input import preprocess

#: RGB → grey weights of ITU-R BT.601 (``cv2.COLOR_RGB2GRAY``); they sum to one.
LUMA = torch.tensor([0.299, 0.587, 0.114])

PRESETS: dict[str, dict[str, Any]] = {
    "compact": {
        "channels": [32, 64, 64, 128, 128, 192, 192],
        "strides": [2, 2, 1, 2, 1, 2, 1],
        "head": "netvlad",
        "clusters": 32,
        "dim": 256,
    },
    "gem": {
        "channels": [32, 64, 64, 128, 128, 192, 192],
        "strides": [2, 2, 1, 2, 1, 2, 1],
        "head": "gem",
        "clusters": 32,
        "dim": 256,
    },
}


class NetVLAD(nn.Module):
    """NetVLAD aggregation: [B x D x H x W] local features → [B x K·D] (intra- and L2-normalised)."""

    def __init__(self, clusters: int, dim: int, alpha: float = 100.0) -> None:
        super().__init__()
        self.clusters = clusters
        self.dim = dim
        self.alpha = alpha
        self.assign = nn.Conv2d(dim, clusters, 1, bias=True)
        self.centroids = nn.Parameter(torch.rand(clusters, dim))
        self._init_assignment_from_centroids()

    @torch.no_grad()
    def _init_assignment_from_centroids(self) -> None:
        c = self.centroids.data
        self.assign.weight.copy_((2.0 * self.alpha * c)[:, :, None, None])
        self.assign.bias.copy_(-self.alpha * c.pow(2).sum(dim=1))

    @torch.no_grad()
    def set_centroids(self, centroids: torch.Tensor, alpha: float) -> None:
        """Centres [K x D] (unit vectors) and the assignment sharpness α (paper, Sec. 3.1)."""
        self.centroids.data.copy_(centroids)
        self.alpha = float(alpha)
        self._init_assignment_from_centroids()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B x D x H x W] → [B x K·D]."""
        x = F.normalize(x, p=2.0, dim=1)
        soft = torch.softmax(self.assign(x), dim=1).flatten(2)  # [B x K x N]
        feats = x.flatten(2)  # [B x D x N]
        vlad = torch.matmul(soft, feats.transpose(1, 2))  # [B x K x D]: Σ_n a_k(x_n) x_n
        vlad = vlad - soft.sum(dim=2, keepdim=True) * self.centroids[None]  # − Σ_n a_k(x_n) c_k
        vlad = F.normalize(vlad, p=2.0, dim=2)  # intra-normalisation
        return F.normalize(vlad.flatten(1), p=2.0, dim=1)


class GeM(nn.Module):
    """Generalised-mean pooling: [B x D x H x W] → [B x D·Σg²], ``(mean x^p)^(1/p)`` with learnable p.

    ``grid``: pool over g×g cells for each g (1: the whole map); every cell's
    vector is L2-normalised, the concatenation (whole map first, then the cells
    row by row) is scaled to unit norm. The map's sides must divide by each g.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, grid: list[int] | tuple[int, ...] = (1,)) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps
        self.grid = [int(g) for g in grid]
        self.cells = sum(g * g for g in self.grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        powered = x.clamp(min=self.eps).pow(p)
        parts = []
        for g in self.grid:
            if g == 1:
                pooled = powered.mean(dim=(2, 3))
            else:
                h, w = powered.shape[2] // g, powered.shape[3] // g
                pooled = F.avg_pool2d(powered, (h, w), stride=(h, w)).flatten(2).transpose(1, 2)  # [B x g² x D]
            parts.append(F.normalize(pooled.pow(1.0 / p), p=2.0, dim=-1).flatten(1))
        if self.cells == 1:
            return parts[0]
        return torch.cat(parts, dim=1) * (1.0 / math.sqrt(self.cells))


class PlaceNet(nn.Module):
    frames_per_sample = 1  # one frame per descriptor (export parity, INT8 calibration)
    default_conf: dict[str, Any] = {
        "preset": "compact",  # compact (NetVLAD) | gem: fills the architecture keys left at None
        "image_size": [256, 128],  # network input (W, H) in pixels; frames are resized to it
        "in_channels": 1,  # 1: grey, 3: RGB
        "channels": None,  # output channels of the backbone's 3x3 conv layers
        "strides": None,  # stride of each conv layer (one entry per channel entry)
        "head": None,  # netvlad | gem
        "clusters": None,  # NetVLAD cluster count K
        "dim": None,  # output descriptor size after the learned projection (0: no projection)
        "gem_p": 3.0,  # initial GeM exponent
        "gem_grid": [1],  # gem head: pool over g x g cells per entry (1: whole map; [1, 2]: + 4 quadrants)
        "netvlad_alpha": 100.0,  # initial NetVLAD assignment sharpness before k-means initialisation
        "dynamic_batch": False,  # export with a dynamic batch axis (the runtime feeds one frame)
        "local_features": False,  # forward also returns the unit-norm backbone map (exported models)
    }

    def __init__(self, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = self.resolve_conf(conf)
        layers: list[nn.Module] = []
        c_in = conf["in_channels"]
        for c_out, stride in zip(conf["channels"], conf["strides"]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            c_in = c_out
        self.backbone = nn.Sequential(*layers)
        self.feature_dim = c_in
        if conf["head"] == "netvlad":
            self.pool: nn.Module = NetVLAD(conf["clusters"], c_in, conf["netvlad_alpha"])
            pooled = conf["clusters"] * c_in
        else:
            self.pool = GeM(conf["gem_p"], grid=conf["gem_grid"])
            pooled = c_in * self.pool.cells
        self.projection = nn.Linear(pooled, conf["dim"]) if conf["dim"] else None
        self.out_dim = conf["dim"] or pooled
        if conf["dynamic_batch"]:
            self.dynamic_axes = {"image": {0: "batch"}, "descriptor": {0: "batch"}}
            if conf["local_features"]:
                self.dynamic_axes["local_features"] = {0: "batch"}

    @classmethod
    def resolve_conf(cls, conf: dict[str, Any] | None) -> dict[str, Any]:
        """Merge ``conf`` into the defaults and the chosen preset; unknown keys are an error."""
        merged = merge_conf("PlaceNet", cls.default_conf, PRESETS, conf)
        if merged["head"] not in ("netvlad", "gem"):
            raise ConfigError(f"PlaceNet: head must be netvlad or gem, got {merged['head']!r}")
        if merged["in_channels"] not in (1, 3):
            raise ConfigError(f"PlaceNet: in_channels must be 1 (grey) or 3 (RGB), got {merged['in_channels']}")
        if len(merged["channels"]) != len(merged["strides"]) or not merged["channels"]:
            raise ConfigError(f"PlaceNet: channels ({len(merged['channels'])}) and strides "
                              f"({len(merged['strides'])}) need the same, non-zero number of entries")
        size = merged["image_size"]
        stride = math.prod(merged["strides"])
        if len(size) != 2 or min(size) < stride:
            raise ConfigError(f"PlaceNet: image_size must be [W, H], each at least the total stride {stride}, "
                              f"got {size}")
        merged["image_size"] = [int(v) for v in size]
        grid = merged["gem_grid"]
        if not isinstance(grid, (list, tuple)) or not grid or any(int(g) < 1 for g in grid):
            raise ConfigError(f"PlaceNet: gem_grid must be a list of grid sizes >= 1, got {grid!r}")
        merged["gem_grid"] = [int(g) for g in grid]
        if merged["head"] == "gem":
            fw, fh = feature_map_size(size, merged["strides"])
            bad = [g for g in merged["gem_grid"] if fw % g or fh % g]
            if bad:
                raise ConfigError(f"PlaceNet: gem_grid {bad} does not divide the {fw}x{fh} feature map of a "
                                  f"{size[0]}x{size[1]} input")
        elif merged["gem_grid"] != [1]:
            raise ConfigError("PlaceNet: gem_grid needs head gem")
        return merged

    @property
    def feature_size(self) -> tuple[int, int]:
        """(W, H) of the backbone's map for the configured input."""
        return feature_map_size(self.conf["image_size"], self.conf["strides"])

    @classmethod
    def from_conf(cls, conf: dict[str, Any] | None) -> "PlaceNet":
        return cls(conf)

    # ------------------------------------------------------------------ forward
    def features(self, image: torch.Tensor) -> torch.Tensor:
        """[B x C x H x W] normalised image → [B x D x H/s x W/s] local features (s: total stride)."""
        return self.backbone(image)

    def aggregate(self, feats: torch.Tensor) -> torch.Tensor:
        """Local features → the head's pooled vector before the projection (L2-normalised)."""
        return self.pool(feats)

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """[B x C x H x W] normalised image → [B x dim] unit-norm descriptor.

        With ``local_features``: (descriptor, [B x D x H/s x W/s] backbone map with unit-norm cells).
        """
        if image.dim() != 4 or image.shape[1] != self.conf["in_channels"]:
            raise ValueError(f"image: expected [B x {self.conf['in_channels']} x H x W], got {list(image.shape)}")
        feats = self.features(image)
        pooled = self.aggregate(feats)
        desc = pooled if self.projection is None else F.normalize(self.projection(pooled), p=2.0, dim=1)
        if self.conf["local_features"]:
            return desc, F.normalize(feats, p=2.0, dim=1)
        return desc

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def load_pretrained(self, state: dict[str, torch.Tensor], images: torch.Tensor | None = None) -> str:
        """Load one of our earlier models' state dict for fine-tuning; returns what was adapted ('' if nothing).

        The same architecture loads as is. A GeM model with a larger ``gem_grid``
        takes a global-GeM model's backbone and builds its projection from the
        old one (``W``, ``b``), so that training starts from a descriptor that
        already knows the layout:

        - with ``images`` ([N x C x H x W] normalised training frames, N ≥
          ``dim``): each cell's vector gets the old projection, ``W cₖ + b``;
          the projection is the PCA (to ``dim``) of those concatenated, folded
          into one linear map;
        - without: ``W`` tiled over the cells (the old projection of the mean
          of the cell vectors). The mean forgets which cell is which: a
          starting point without layout.

        An RGB model takes a grey model's first convolution times the luma
        weights (ITU-R BT.601, as ``cv2.COLOR_RGB2GRAY``): they sum to one, so
        on the normalised input the RGB model starts as the grey model on the
        frame's grey conversion, and training can then learn what colour adds.
        """
        state, notes = dict(state), []
        own = self.state_dict()
        stem = "backbone.0.weight"
        if stem in state and stem in own and state[stem].shape[1] == 1 and own[stem].shape[1] == 3:
            state[stem] = state[stem].float() * LUMA.to(state[stem].device).view(1, 3, 1, 1)
            notes.append("grey first convolution spread over RGB by the luma weights")
        key = "projection.weight"
        if not (key in state and key in own and state[key].shape != own[key].shape and self.conf["head"] == "gem"):
            self.load_state_dict(state)
            return "; ".join(notes)
        old_w, old_b = state[key].float().cpu(), state["projection.bias"].float().cpu()
        new = own[key]
        cells, dim = self.pool.cells, self.conf["dim"]
        if old_w.shape[0] != new.shape[0] or old_w.shape[1] * cells != new.shape[1]:
            raise ConfigError(f"PlaceNet.load_pretrained: projection {list(old_w.shape)} cannot seed "
                              f"{list(new.shape)} (gem_grid {self.conf['gem_grid']})")
        state[key] = (old_w.repeat(1, cells) * (1.0 / math.sqrt(cells))).to(new.device)
        self.load_state_dict(state)
        if images is None:
            return "; ".join([*notes, f"projection {list(old_w.shape)} tiled over {cells} GeM cells"])
        if len(images) < dim:
            raise ValueError(f"load_pretrained: need at least {dim} images for the PCA, got {len(images)}")
        was_training = self.training
        self.eval()
        pooled = torch.cat([self.aggregate(self.features(images[k : k + 32])).cpu() for k in range(0, len(images), 32)])
        self.train(was_training)
        d = old_w.shape[1]
        z = pooled.double().reshape(len(pooled), cells, d) * math.sqrt(cells)  # unit cell vectors
        y = (z @ old_w.double().T + old_b.double()).reshape(len(pooled), -1)  # [N x cells·dim]
        mean = y.mean(dim=0)
        _, _, vh = torch.linalg.svd(y - mean, full_matrices=False)
        comps = vh[:dim].reshape(dim, cells, -1)  # [dim x cells x dim_old]
        weight = torch.einsum("ikj,jd->ikd", comps, old_w.double()) * math.sqrt(cells)  # acts on pooled
        bias = torch.einsum("ikj,j->i", comps, old_b.double()) - vh[:dim] @ mean
        self.projection.weight.copy_(weight.reshape(dim, -1).float())
        self.projection.bias.copy_(bias.float())
        pca = (f"projection {list(old_w.shape)} applied per GeM cell, PCA of the {cells} cells' descriptors "
               f"({cells * dim}-d, {len(images)} images) to {dim}-d")
        return "; ".join([*notes, pca])

    @torch.no_grad()
    def init_netvlad(self, features: np.ndarray | torch.Tensor, seed: int = 0, iterations: int = 25) -> float:
        """Initialise the NetVLAD centres by k-means (FAISS) on local features; returns α.

        k-means (FAISS, spherical) starts from k-means++ seeds (Arthur & Vassilvitskii 2007).

        Args:
            features: [N x D] backbone features (rows, not yet normalised), N ≥ K; typically
                a few thousand sampled from :meth:`features` over training images.

        As in the paper, α is chosen so that a feature's soft assignment to its
        nearest centre is 100× that to the second nearest on average:
        ``α = −log(0.01) / mean(s₁ − s₂)`` with ``s`` the sorted inner products.
        """
        if self.conf["head"] != "netvlad":
            raise ConfigError("PlaceNet.init_netvlad: the model's head is gem, not netvlad")
        import faiss

        x = np.ascontiguousarray(torch.as_tensor(features).float().cpu().numpy())
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise ValueError(f"features: expected [N x {self.feature_dim}], got {list(x.shape)}")
        K = self.conf["clusters"]
        if len(x) < K:
            raise ValueError(f"init_netvlad needs at least {K} features (one per cluster), got {len(x)}")
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        km = faiss.Kmeans(x.shape[1], K, niter=iterations, seed=seed, spherical=True, verbose=False)
        km.train(x, init_centroids=kmeans_plus_plus(x, K, np.random.default_rng(seed)))
        c = km.centroids / np.maximum(np.linalg.norm(km.centroids, axis=1, keepdims=True), 1e-12)
        sims = np.sort(x @ c.T, axis=1)[:, ::-1]
        gap = float(np.mean(sims[:, 0] - sims[:, 1])) if K > 1 else 1.0
        alpha = -math.log(0.01) / max(gap, 1e-6)
        self.pool.set_centroids(torch.from_numpy(c).to(self.pool.centroids), alpha)
        return alpha

    @torch.no_grad()
    def init_projection_pca(self, pooled: np.ndarray | torch.Tensor, whiten: bool = True) -> None:
        """Set the projection to PCA (+ whitening) of pooled vectors [N x K·D] (or [N x D] for GeM).

        NetVLAD's own dimensionality reduction; a good starting point for
        training and a usable descriptor before any training.
        """
        if self.projection is None:
            raise ConfigError("PlaceNet.init_projection_pca: the model has no projection (dim 0)")
        x = torch.as_tensor(pooled).double().cpu()
        mean = x.mean(dim=0)
        xc = x - mean
        n = min(self.conf["dim"], min(xc.shape))
        # Principal directions from the SVD of the centred data.
        _, s, vh = torch.linalg.svd(xc, full_matrices=False)
        comps = vh[:n]  # [n x P]
        if whiten:
            comps = comps / (s[:n, None] / math.sqrt(max(len(x) - 1, 1)) + 1e-6)
        weight = torch.zeros(self.conf["dim"], x.shape[1], dtype=torch.float64)
        weight[:n] = comps
        self.projection.weight.copy_(weight.float())
        self.projection.bias.copy_((-weight @ mean).float())

    # ------------------------------------------------------------------ model protocol
    def example_inputs(self, batch: int = 1) -> dict[str, torch.Tensor]:
        w, h = self.conf["image_size"]
        gen = torch.Generator().manual_seed(0)
        return {"image": torch.rand(batch, self.conf["in_channels"], h, w, generator=gen) * 2 - 1}

    def inputs_from_frames(self, frames: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Network feeds from [H x W] grey or [H x W x 3] RGB uint8 frames, one feed per frame."""
        return [{"image": preprocess(f, self.conf["image_size"], self.conf["in_channels"])} for f in frames]

    def input_spec(self) -> dict[str, Any]:
        w, h = self.conf["image_size"]
        c = self.conf["in_channels"]
        batch: int | str = "batch" if self.conf["dynamic_batch"] else 1
        outputs = [{"name": "descriptor", "shape": [batch, self.out_dim], "dtype": "float32",
                    "meaning": "global place descriptor, unit L2 norm; cosine similarity = inner product"}]
        if self.conf["local_features"]:
            fw, fh = self.feature_size
            outputs.append({"name": "local_features", "shape": [batch, self.feature_dim, fh, fw], "dtype": "float32",
                            "meaning": "backbone feature map, each cell unit L2 norm (spatial re-ranking)"})
        return {
            "inputs": [{"name": "image", "shape": [batch, c, h, w], "dtype": "float32",
                        "channel_order": "grey" if c == 1 else "RGB",
                        "meaning": f"the camera frame resized to {w}x{h} (cv2.INTER_AREA)",
                        "normalization": "(x / 255 - 0.5) / 0.5"}],
            "outputs": outputs,
        }


def feature_map_size(image_size: list[int] | tuple[int, int], strides: list[int]) -> tuple[int, int]:
    """(W, H) of the backbone's map for an input of ``image_size`` (3x3 conv, padding 1: ceil(n / stride))."""
    fw, fh = int(image_size[0]), int(image_size[1])
    for s in strides:
        fw, fh = -(-fw // s), -(-fh // s)
    return fw, fh


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator, max_points: int = 20_000) -> np.ndarray:
    """k-means++ seeds [k x D] float32 from rows of ``x`` (a random subset of ``max_points`` at most)."""
    if len(x) > max_points:
        x = x[rng.choice(len(x), max_points, replace=False)]
    seeds = [x[int(rng.integers(len(x)))]]
    d2 = ((x - seeds[0]) ** 2).sum(axis=1)
    for _ in range(k - 1):
        total = float(d2.sum())
        i = int(rng.choice(len(x), p=d2 / total)) if total > 0 else int(rng.integers(len(x)))
        seeds.append(x[i])
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(axis=1))
    return np.ascontiguousarray(np.stack(seeds), dtype=np.float32)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
