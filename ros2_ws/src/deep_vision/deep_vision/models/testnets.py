"""Small test networks for the inference layer's tests and the bench (random weights, untrained).

Each one covers a family of ONNX operators the real networks use:

- :class:`TinyConvNet`: Conv, Relu, MaxPool, GlobalAveragePool, Flatten, Gemm (the CNN encoders);
- :class:`TinyLSTMNet`: LSTM with explicit state inputs/outputs ``h0, c0 → hn, cn`` (DeepVO's recurrent part);
- :class:`TinyLinearNet`: Gemm + Relu (fully connected heads).

They follow the model protocol of :mod:`deep_vision.models`.
"""

from __future__ import annotations

import copy
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from deep_vision.errors import ConfigError


class _TestNet(nn.Module):
    default_conf: dict[str, Any] = {}

    @classmethod
    def resolve_conf(cls, conf: dict[str, Any] | None) -> dict[str, Any]:
        """Merge ``conf`` into ``default_conf``; unknown keys are an error."""
        conf = dict(conf or {})
        unknown = sorted(set(conf) - set(cls.default_conf))
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown conf key(s) {unknown}; known: {sorted(cls.default_conf)}")
        return {**copy.deepcopy(cls.default_conf), **conf}

    @classmethod
    def from_conf(cls, conf: dict[str, Any] | None = None) -> "_TestNet":
        return cls(conf)

    def example_inputs(self, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
        """Random inputs of the spec's shapes (batch ``batch``), reproducible from ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        out = {}
        for spec in self.input_spec(batch)["inputs"]:
            out[spec["name"]] = torch.randn(*spec["shape"], generator=gen)
        return out


class TinyConvNet(_TestNet):
    """Three conv blocks with max pooling, global average pooling and a linear classifier."""

    default_conf: dict[str, Any] = {
        "size": 64,  # input side S in pixels (grey image [B x 1 x S x S])
        "channels": [16, 32, 64],  # output channels of the three 3x3 conv layers
        "classes": 10,  # width of the output
        "dynamic_batch": False,  # export with a dynamic batch axis instead of a static one
    }

    def __init__(self, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = self.resolve_conf(conf)
        c1, c2, c3 = conf["channels"]
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(c3, conf["classes"])
        if conf["dynamic_batch"]:
            self.dynamic_axes = {"image": {0: "batch"}, "logits": {0: "batch"}}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """[B x 1 x S x S] grey in [0, 1] → [B x classes] logits."""
        return self.classifier(self.features(image))

    def input_spec(self, batch: int = 1) -> dict[str, Any]:
        s = self.conf["size"]
        return {
            "inputs": [{"name": "image", "shape": [batch, 1, s, s], "dtype": "float32", "channel_order": "grey",
                        "normalization": "x / 255", "meaning": "camera frame resized to S x S"}],
            "outputs": [{"name": "logits", "shape": [batch, self.conf["classes"]], "dtype": "float32",
                         "meaning": "class scores (untrained test network)"}],
        }

    def inputs_from_frames(self, frames: list[np.ndarray]) -> dict[str, np.ndarray]:
        """One grey frame [H x W] uint8 → ``image`` [1 x 1 x S x S] float32."""
        s = self.conf["size"]
        small = cv2.resize(_grey(frames[-1]), (s, s), interpolation=cv2.INTER_AREA)
        return {"image": (small.astype(np.float32) / 255.0)[None, None]}


class TinyLSTMNet(_TestNet):
    """A one-layer LSTM over a short feature sequence with its state as explicit inputs and outputs."""

    default_conf: dict[str, Any] = {
        "steps": 8,  # sequence length T
        "features": 32,  # input features per step F
        "hidden": 64,  # LSTM hidden size H
        "layers": 1,  # stacked LSTM layers L
        "outputs": 16,  # width of the per-step linear head
    }

    def __init__(self, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = self.resolve_conf(conf)
        self.lstm = nn.LSTM(conf["features"], conf["hidden"], num_layers=conf["layers"], batch_first=True)
        self.head = nn.Linear(conf["hidden"], conf["outputs"])

    def forward(self, features: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B x T x F] features, [L x B x H] h0 and c0 → [B x T x outputs], [L x B x H] hn and cn."""
        y, (hn, cn) = self.lstm(features, (h0, c0))
        return self.head(y), hn, cn

    def input_spec(self, batch: int = 1) -> dict[str, Any]:
        c = self.conf
        state = [c["layers"], batch, c["hidden"]]
        return {
            "inputs": [
                {"name": "features", "shape": [batch, c["steps"], c["features"]], "dtype": "float32",
                 "meaning": "per-step feature vectors"},
                {"name": "h0", "shape": state, "dtype": "float32", "meaning": "LSTM hidden state (zeros at start)"},
                {"name": "c0", "shape": state, "dtype": "float32", "meaning": "LSTM cell state (zeros at start)"},
            ],
            "outputs": [
                {"name": "output", "shape": [batch, c["steps"], c["outputs"]], "dtype": "float32",
                 "meaning": "per-step outputs"},
                {"name": "hn", "shape": state, "dtype": "float32", "meaning": "hidden state for the next call"},
                {"name": "cn", "shape": state, "dtype": "float32", "meaning": "cell state for the next call"},
            ],
        }

    def inputs_from_frames(self, frames: list[np.ndarray]) -> dict[str, np.ndarray]:
        """A frame shrunk to T rows of F pixels as the sequence, zero state."""
        c = self.conf
        small = cv2.resize(_grey(frames[-1]), (c["features"], c["steps"]), interpolation=cv2.INTER_AREA)
        state = np.zeros((c["layers"], 1, c["hidden"]), np.float32)
        return {"features": (small.astype(np.float32) / 255.0)[None], "h0": state, "c0": state.copy()}


class TinyLinearNet(_TestNet):
    """A three-layer perceptron."""

    default_conf: dict[str, Any] = {
        "inputs": 128,  # input vector length
        "hidden": [256, 256],  # hidden layer widths
        "outputs": 10,  # output vector length
    }

    def __init__(self, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = self.resolve_conf(conf)
        layers: list[nn.Module] = []
        width = conf["inputs"]
        for hidden in conf["hidden"]:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, conf["outputs"]))
        self.mlp = nn.Sequential(*layers)

    def forward(self, vector: torch.Tensor) -> torch.Tensor:
        """[B x inputs] → [B x outputs]."""
        return self.mlp(vector)

    def input_spec(self, batch: int = 1) -> dict[str, Any]:
        return {
            "inputs": [{"name": "vector", "shape": [batch, self.conf["inputs"]], "dtype": "float32",
                        "meaning": "input vector"}],
            "outputs": [{"name": "scores", "shape": [batch, self.conf["outputs"]], "dtype": "float32",
                         "meaning": "output vector"}],
        }

    def inputs_from_frames(self, frames: list[np.ndarray]) -> dict[str, np.ndarray]:
        """A frame shrunk to 16 x (inputs / 16) pixels, flattened."""
        n = self.conf["inputs"]
        w = 16 if n % 16 == 0 else n
        small = cv2.resize(_grey(frames[-1]), (w, n // w), interpolation=cv2.INTER_AREA)
        return {"vector": (small.astype(np.float32) / 255.0).reshape(1, n)}


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
