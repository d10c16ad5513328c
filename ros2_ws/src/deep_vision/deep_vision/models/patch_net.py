"""Patch descriptor: L2-Net (Tian, Fan, Wu, CVPR 2017) with an optional shallow denoising U-Net in front.

- ``PatchNet.descriptor``: L2-Net's fully convolutional body as HardNet (Mishchuk et al., NIPS 2017) uses it:
  seven layers, 3×3 convolutions 32-32-64-64-128-128 (the third and fifth with stride 2), each with
  BatchNorm (no affine) and ReLU, dropout, then an 8×8 convolution to 128 and BatchNorm; the output is L2
  normalised. Each patch is normalised to zero mean and unit standard deviation first (inside the network).
  ``preset: compact`` halves the widths (16-16-32-32-64-64) for a CPU: about a quarter of the work.
- ``PatchNet.denoiser``: a shallow U-Net (two 2× down-samplings, skip connections) that predicts the noise of a
  patch; the denoised patch is the input minus it, clipped to [0, 1]. Trained on noisy / clean patch pairs.
  With ``use_denoiser`` the forward pass describes the denoised patch.

Input ``patches``: [N x 1 x 32 x 32] float32 grey levels / 255 (:func:`deep_vision.models.patch_input.to_network`
of patches cut by ``extract_patches``); N is dynamic in the export. Output ``descriptors``: [N x 128] float32,
unit L2 norm; the distance of two patches is the Euclidean distance of their descriptors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deep_vision.models.conf import merge_conf
from deep_vision.models.patch_input import PATCH_SIZE, extract_patches, keypoint_affines, to_network

PRESETS: dict[str, dict[str, Any]] = {
    "l2net": {"channels": [32, 32, 64, 64, 128, 128]},
    "compact": {"channels": [16, 16, 32, 32, 64, 64]},
}


def _block(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out, affine=False),
            nn.ReLU(inplace=True)]


class L2Net(nn.Module):
    """The descriptor body (see the module docstring)."""

    def __init__(self, channels: list[int], dim: int, dropout: float) -> None:
        super().__init__()
        c = channels
        layers = [*_block(1, c[0]), *_block(c[0], c[1]), *_block(c[1], c[2], 2), *_block(c[2], c[3]),
                  *_block(c[3], c[4], 2), *_block(c[4], c[5]), nn.Dropout(dropout),
                  nn.Conv2d(c[5], dim, 8, bias=False), nn.BatchNorm2d(dim, affine=False)]
        self.features = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight, gain=0.6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        mean = flat.mean(dim=1)[:, None, None, None]
        std = flat.std(dim=1)[:, None, None, None]
        y = self.features((x - mean) / (std + 1e-7))[:, :, 0, 0]  # [N x dim x 1 x 1]: a static dim in ONNX
        return y * torch.rsqrt(torch.clamp((y * y).sum(dim=1, keepdim=True), min=1e-12))  # unit L2 norm


class DenoiseUNet(nn.Module):
    """Shallow U-Net: 32² → 16² → 8² and back, skip connections; predicts the noise (residual learning)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        w = width

        def conv(a: int, b: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(b, b, 3, padding=1), nn.ReLU(inplace=True))

        self.enc1, self.enc2, self.mid = conv(1, w), conv(w, 2 * w), conv(2 * w, 4 * w)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2), conv(4 * w, 2 * w)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2), conv(2 * w, w)
        self.out = nn.Conv2d(w, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return torch.clamp(x - self.out(d1), 0.0, 1.0)


class PatchNet(nn.Module):
    frames_per_sample = 1  # inputs_from_frames: patches around keypoints of one frame
    default_conf: dict[str, Any] = {
        "preset": "l2net",  # l2net | compact: fills the keys left at None
        "channels": None,  # output channels of the six 3x3 conv layers
        "dim": 128,  # descriptor length
        "dropout": 0.3,  # before the last convolution (training only)
        "denoiser_width": 16,  # channels of the U-Net's first level (0: no denoiser)
        "use_denoiser": False,  # describe the denoised patch (the export carries the denoiser in front)
        "magnification": 6.0,  # patch span per keypoint diameter (patch_input.MAGNIFICATION), for the card
    }

    def __init__(self, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = merge_conf("PatchNet", self.default_conf, PRESETS, conf)
        self.descriptor = L2Net(conf["channels"], conf["dim"], conf["dropout"])
        self.denoiser = DenoiseUNet(conf["denoiser_width"]) if conf["denoiser_width"] else None
        if conf["use_denoiser"] and self.denoiser is None:
            raise ValueError("PatchNet: use_denoiser needs denoiser_width > 0")
        self.dynamic_axes = {"patches": {0: "batch"}, "descriptors": {0: "batch"}}

    @classmethod
    def from_conf(cls, conf: dict[str, Any] | None) -> PatchNet:
        return cls(conf)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if self.conf["use_denoiser"]:
            patches = self.denoiser(patches)
        return self.descriptor(patches)

    def example_inputs(self, batch: int = 4) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        return {"patches": torch.rand(batch, 1, PATCH_SIZE, PATCH_SIZE, generator=gen)}

    def inputs_from_frames(self, frames: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Feeds of 256 patches around the strongest DoG keypoints of each [H x W] grey uint8 frame."""
        import cv2

        feeds = []
        for f in frames:
            kps = sorted(cv2.SIFT_create(512).detect(f, None), key=lambda k: -k.response)[:256]
            pts = np.array([k.pt for k in kps]).reshape(-1, 2)
            sizes = np.array([k.size for k in kps])
            feeds.append({"patches": to_network(extract_patches(
                f, keypoint_affines(pts, sizes, magnification=self.conf["magnification"])))})
        return feeds

    def input_spec(self) -> dict[str, Any]:
        return {
            "inputs": [{"name": "patches", "shape": ["batch", 1, PATCH_SIZE, PATCH_SIZE], "dtype": "float32",
                        "channel_order": "grey",
                        "meaning": f"{PATCH_SIZE}x{PATCH_SIZE} patches around keypoints spanning "
                                   f"{self.conf['magnification']} x KeyPoint.size (patch_input.extract_patches)",
                        "normalization": "x / 255 (each patch is normalised inside the network)"}],
            "outputs": [{"name": "descriptors", "shape": ["batch", self.conf["dim"]], "dtype": "float32",
                         "meaning": "patch descriptor, unit L2 norm; compare by Euclidean distance"}],
        }
