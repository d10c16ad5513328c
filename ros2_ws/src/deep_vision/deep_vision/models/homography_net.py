"""HomographyNet (DeTone, Malisiewicz, Rabinovich 2016, arXiv:1606.03798).

A VGG-like regression network on two stacked grey patches that predicts the
4-point parameterisation of the homography between them: the displacement of
each patch corner. Three presets:

- ``paper``: 8 conv 3×3 layers 64-64-64-64-128-128-128-128 with BatchNorm +
  ReLU, max-pooling after each pair but the last, dropout 0.5 before and after
  FC 1024, FC 8 — 34 M parameters (≈137 MB in FP32, over our 15 MB model limit).
- ``compact``: the same structure with a strided first layer, narrower convs,
  one more pooling and FC 256 — 2.5 M parameters (≈10 MB), about 7× fewer
  multiply-adds, for real time on a CPU.
- ``corr``: a siamese variant for fast training on small compute: an 8-conv
  encoder (16-32-32-64-64-96-96-128, one grey patch in, strided first layer,
  pooling after the 2nd and 4th conv) runs on each patch to L2-normalised
  features at 1/8 resolution; a global correlation layer (every source cell against every
  target cell, as in Rocco et al.'s geometric-matching CNN) feeds a small conv
  head and FC 256 → 8. Matching is explicit instead of learned through
  channel stacking, which converges in a fraction of the steps — 1.1 M
  parameters (≈4.4 MB).

Input ``patches``: [B x 2 x S x S] float32, channel 0 the previous (source)
patch, channel 1 the current patch, grey levels mapped by ``(x / 255 − ½) / ½``
(see :func:`normalize`). Output ``offsets``: [B x 4 x 2] float32 pixels; corner
k of the source patch (TL, TR, BR, BL, pixel centres) maps to
``corner_k + offsets[:, k]`` in the current patch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from deep_vision.errors import ConfigError
from deep_vision.models.conf import merge_conf
from deep_vision.models.homography_input import normalize

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "channels": [64, 64, 64, 64, 128, 128, 128, 128],
        "first_stride": 1,
        "pool_after": [1, 3, 5],
        "fc_dim": 1024,
        "correlation": False,
        "head_channels": [],
    },
    "compact": {
        "channels": [32, 32, 64, 64, 96, 96, 128, 128],
        "first_stride": 2,
        "pool_after": [1, 3, 5],
        "fc_dim": 256,
        "correlation": False,
        "head_channels": [],
    },
    "corr": {
        "channels": [16, 32, 32, 64, 64, 96, 96, 128],
        "first_stride": 2,
        "pool_after": [1, 3],
        "fc_dim": 256,
        "correlation": True,
        "head_channels": [128, 128, 64],
    },
}


class HomographyNet(nn.Module):
    frames_per_sample = 2  # inputs_from_frames pairs consecutive frames (export parity, INT8 calibration)
    default_conf: dict[str, Any] = {
        "preset": "compact",  # paper | compact: fills the architecture keys left at None
        "patch_size": 128,  # input patch side S in pixels
        "rho": 32.0,  # largest corner displacement trained for (pixels at S); outputs are scaled by it
        "channels": None,  # output channels of the 8 conv layers
        "first_stride": None,  # stride of the first conv (2 halves the work of the compact net)
        "pool_after": None,  # indices of conv layers followed by 2x2 max-pooling
        "fc_dim": None,  # width of the hidden fully connected layer
        "dropout": 0.5,  # dropout after the last conv block and after the hidden FC layer (paper)
        "correlation": None,  # siamese encoder + global correlation (corr preset) instead of stacked input
        "head_channels": None,  # correlation head: conv 3x3 layers, 2x2 max-pooling after each but the first
    }

    def __init__(self, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = self.resolve_conf(conf)
        layers: list[nn.Module] = []
        c_in = 1 if conf["correlation"] else 2
        size = conf["patch_size"]
        for i, c_out in enumerate(conf["channels"]):
            stride = conf["first_stride"] if i == 0 else 1
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            size = (size + stride - 1) // stride
            if i in conf["pool_after"]:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c_in = c_out
        if conf["correlation"]:
            # Correlation channels index target cells; the head sees them at every source cell.
            self.encoder = nn.Sequential(*layers)
            head: list[nn.Module] = []
            c_in = size * size
            for i, c_out in enumerate(conf["head_channels"]):
                head += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True)]
                if i > 0:
                    head.append(nn.MaxPool2d(2))
                    size //= 2
                c_in = c_out
            layers = head
        layers.append(nn.Dropout2d(conf["dropout"]) if conf["dropout"] else nn.Identity())
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * size * size, conf["fc_dim"]),
            nn.ReLU(inplace=True),
            nn.Dropout(conf["dropout"]) if conf["dropout"] else nn.Identity(),
            nn.Linear(conf["fc_dim"], 8),
        )
        self.register_buffer("rho", torch.tensor(float(conf["rho"])), persistent=False)

    @classmethod
    def resolve_conf(cls, conf: dict[str, Any] | None) -> dict[str, Any]:
        """Merge ``conf`` into the defaults and the chosen preset; unknown keys are an error."""
        merged = merge_conf("HomographyNet", cls.default_conf, PRESETS, conf)
        if len(merged["channels"]) != 8:
            raise ConfigError(f"HomographyNet: channels needs 8 entries, got {len(merged['channels'])}")
        return merged

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """[B x 2 x S x S] normalised patches → [B x 4 x 2] corner offsets in pixels."""
        if patches.dim() != 4 or patches.shape[1] != 2:
            raise ValueError(f"patches: expected [B x 2 x S x S], got {list(patches.shape)}")
        x = self.correlate(patches) if self.conf["correlation"] else patches
        return (self.head(self.features(x)) * self.rho).view(-1, 4, 2)

    def correlate(self, patches: torch.Tensor) -> torch.Tensor:
        """[B x 2 x S x S] → [B x N x h x w]: cosine similarity of each source cell (spatial) with the N = h·w
        target cells (channels), ReLU then L2-normalised over the channels (Rocco et al. 2017)."""
        b = patches.shape[0]
        feats = self.encoder(patches.reshape(b * 2, 1, patches.shape[2], patches.shape[3]))
        feats = nn.functional.normalize(feats, dim=1)
        c, h, w = feats.shape[1:]
        feats = feats.reshape(b, 2, c, h * w)
        corr = torch.bmm(feats[:, 1].transpose(1, 2), feats[:, 0])  # [B x N_target x N_source]
        return nn.functional.normalize(torch.relu(corr), dim=1).reshape(b, h * w, h, w)

    @classmethod
    def from_conf(cls, conf: dict[str, Any] | None) -> "HomographyNet":
        return cls(conf)

    def example_inputs(self, batch: int = 1) -> dict[str, torch.Tensor]:
        s = self.conf["patch_size"]
        return {"patches": torch.rand(batch, 2, s, s) * 2 - 1}

    def inputs_from_frames(self, frames: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Network feeds from consecutive [H x W] uint8 frames, resized as the estimator does."""
        import cv2

        s = self.conf["patch_size"]
        small = [cv2.resize(f, (s, s), interpolation=cv2.INTER_AREA) for f in frames]
        return [{"patches": np.stack([normalize(a), normalize(b)])[None]} for a, b in zip(small[:-1], small[1:])]

    def input_spec(self) -> dict[str, Any]:
        s = self.conf["patch_size"]
        return {
            "inputs": [{"name": "patches", "shape": [1, 2, s, s], "dtype": "float32", "channel_order": "grey",
                        "meaning": "channel 0 previous frame, channel 1 current frame, each resized to SxS",
                        "normalization": "(x / 255 - 0.5) / 0.5"}],
            "outputs": [{"name": "offsets", "shape": [1, 4, 2], "dtype": "float32",
                         "meaning": "pixel displacement of the source patch corners TL, TR, BR, BL"}],
        }


def normalize_torch(grey: torch.Tensor) -> torch.Tensor:
    """Same as :func:`normalize` for a tensor of grey levels in [0, 255]."""
    return grey.float() / 127.5 - 1.0


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
