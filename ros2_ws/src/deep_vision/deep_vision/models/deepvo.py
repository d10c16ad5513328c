"""DeepVO (Wang, Clark, Wen, Trigoni, ICRA 2017): recurrent CNN visual odometry.

A FlowNet-style convolutional encoder on two stacked consecutive frames feeds an
LSTM whose output is regressed to the 6-DoF motion between the frames:
translation (metres, in the previous camera's frame) and Euler angles (radians,
ZYX as :func:`deep_vision.geometry.transforms`), trained with
``1/N Σ ‖p̂ − p‖² + κ‖φ̂ − φ‖²``.

Presets (defined with the configuration keys and their checks in the torch-free
:mod:`deep_vision.models.vo_input`, which run time imports):

- ``paper``: FlowNetSimple's encoder (conv1–conv6, 64…1024 channels) on RGB
  frames at 1280×384, two LSTM layers of 1000 units — ≈ 250 M parameters,
  far over our 15 MB model limit; kept as the reference definition.
- ``compact``: a strided encoder on grey frames at 320×96, one LSTM layer of
  256 units — ≈ 2 M parameters (≈ 8 MB), real time on a CPU.
- ``compact_flow``: the compact network on the dense optical flow of the pair
  instead of the two frames (``input: flow``): OpenCV's DIS flow at 320×96,
  computed by :class:`FlowFrontEnd` identically in training and at run time.
  Flow carries the motion's geometry without the scene's appearance, so that a
  network trained on rendered frames can work on real ones (the idea of
  TartanVO, Wang et al. 2020; measured: bench/results/vo-flow-2026-11-21.md);
  the network still assumes the training camera's field of view.

The LSTM state is an explicit input and output (``h0, c0 → h1, c1``), so the
exported ONNX graph processes one frame pair per call and the caller carries
the state across frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from deep_vision.models.vo_input import (
    DEFAULT_CONF,
    flow_front_end,
    input_channels,
    pair_input,
    resize_frame,
    resolve_conf,
)


class DeepVO(nn.Module):
    frames_per_sample = 2  # inputs_from_frames pairs consecutive frames
    default_conf: dict[str, Any] = DEFAULT_CONF  # keys and defaults: deep_vision.models.vo_input

    def __init__(self, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = self.resolve_conf(conf)
        layers: list[nn.Module] = []
        c_in = self.input_channels
        h, w = conf["height"], conf["width"]
        for c_out, k, s in conf["encoder"]:
            layers.append(nn.Conv2d(c_in, c_out, k, stride=s, padding=k // 2, bias=not conf["batch_norm"]))
            if conf["batch_norm"]:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.1, inplace=True))
            h, w = (h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1
            c_in = c_out
        self.encoder = nn.Sequential(*layers)
        self.feature_shape = (c_in, h, w)
        flat = c_in * h * w
        self.project = nn.Sequential(nn.Linear(flat, conf["fc_dim"]), nn.LeakyReLU(0.1, inplace=True)) \
            if conf["fc_dim"] else nn.Identity()
        lstm_in = conf["fc_dim"] or flat
        self.dropout = nn.Dropout(conf["dropout"])
        self.lstm = nn.LSTM(lstm_in, conf["lstm_hidden"], conf["lstm_layers"], batch_first=True)
        self.head = nn.Linear(conf["lstm_hidden"], 6)

    @classmethod
    def resolve_conf(cls, conf: dict[str, Any] | None) -> dict[str, Any]:
        return resolve_conf(conf)

    @property
    def input_channels(self) -> int:
        return input_channels(self.conf)

    @classmethod
    def from_conf(cls, conf: dict[str, Any] | None) -> "DeepVO":
        return cls(conf)

    def initial_state(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.conf["lstm_layers"], batch, self.conf["lstm_hidden"])
        return torch.zeros(shape), torch.zeros(shape)

    def encode(self, pairs: torch.Tensor) -> torch.Tensor:
        """[N x 2C x H x W] stacked frame pairs → [N x F] features."""
        return self.project(self.encoder(pairs).flatten(1))

    def forward(self, pair: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step.

        Args:
            pair: [B x 2C x H x W] previous and current frame stacked on channels, normalised (input frames),
                or [B x 2 x H x W] their optical flow (input flow): :func:`pair_input` makes either.
            h0, c0: [L x B x U] LSTM state from the previous step (zeros at the start).
        Returns:
            motion [B x 6] (tx, ty, tz in metres, rz, ry, rx in radians: the current camera's
            pose in the previous camera's frame), h1, c1 [L x B x U].
        """
        if pair.dim() != 4 or pair.shape[1] != self.input_channels:
            raise ValueError(f"pair: expected [B x {self.input_channels} x H x W], got {list(pair.shape)}")
        x = self.dropout(self.encode(pair)).unsqueeze(1)
        y, (h1, c1) = self.lstm(x, (h0, c0))
        return self._scale(self.head(self.dropout(y[:, 0]))), h1, c1

    def forward_sequence(self, frames: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                         ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """[B x (T+1) x C x H x W] frames (input frames) or [B x T x 2 x H x W] flows of consecutive pairs
        (input flow) → [B x T x 6] motions (all pairs encoded in one batch)."""
        if self.conf["input"] == "flow":
            B, T = frames.shape[:2]
            pairs = frames.flatten(0, 1)
        else:
            B, T = frames.shape[0], frames.shape[1] - 1
            pairs = torch.cat([frames[:, :-1], frames[:, 1:]], dim=2).flatten(0, 1)
        feats = self.dropout(self.encode(pairs)).view(B, T, -1)
        if state is None:
            h0, c0 = self.initial_state(B)
            state = (h0.to(frames.device), c0.to(frames.device))
        y, state = self.lstm(feats, state)
        return self._scale(self.head(self.dropout(y))), state

    def _scale(self, out: torch.Tensor) -> torch.Tensor:
        s = float(self.conf["translation_scale"])
        if s == 1.0:
            return out
        return torch.cat([out[..., :3] * s, out[..., 3:]], dim=-1)

    # -- export / inference helpers ------------------------------------------------------------
    def input_spec(self) -> dict[str, Any]:
        c, h, w = self.conf["channels"], self.conf["height"], self.conf["width"]
        L, U = self.conf["lstm_layers"], self.conf["lstm_hidden"]
        if self.conf["input"] == "flow":
            first = {"name": "pair", "shape": [1, 2, h, w], "dtype": "float32", "channel_order": "flow u, flow v",
                     "normalization": f"pixels at {w}x{h} / {self.conf['flow_scale']}",
                     "meaning": f"DIS optical flow ({self.conf['flow_preset']}) from the previous to the current "
                                f"grey frame, both resized to {w}x{h} (deep_vision.models.vo_input.pair_input)"}
        else:
            first = {"name": "pair", "shape": [1, 2 * c, h, w], "dtype": "float32",
                     "channel_order": "grey" if c == 1 else "RGB", "normalization": "(x / 255 - 0.5) / 0.5",
                     "meaning": "previous frame then current frame, stacked on channels, resized to HxW"}
        return {
            "inputs": [
                first,
                {"name": "h0", "shape": [L, 1, U], "dtype": "float32", "meaning": "LSTM hidden state (zeros at start)"},
                {"name": "c0", "shape": [L, 1, U], "dtype": "float32", "meaning": "LSTM cell state (zeros at start)"},
            ],
            "outputs": [
                {"name": "motion", "shape": [1, 6], "dtype": "float32",
                 "meaning": "tx ty tz (m) and Euler ZYX rz ry rx (rad) of the current camera in the previous camera frame"},
                {"name": "h1", "shape": [L, 1, U], "dtype": "float32", "meaning": "LSTM hidden state for the next call"},
                {"name": "c1", "shape": [L, 1, U], "dtype": "float32", "meaning": "LSTM cell state for the next call"},
            ],
        }

    def example_inputs(self, batch: int = 1) -> dict[str, torch.Tensor]:
        h, w = self.conf["height"], self.conf["width"]
        h0, c0 = self.initial_state(batch)
        return {"pair": torch.rand(batch, self.input_channels, h, w) * 2 - 1, "h0": h0 + 0.1, "c0": c0 - 0.1}

    def inputs_from_frames(self, frames: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Feeds from consecutive [H x W] uint8 grey frames (state zero), as the estimator prepares them."""
        small = [resize_frame(f, self.conf) for f in frames]
        flow = flow_front_end(self.conf)
        h0, c0 = (t.numpy() for t in self.initial_state(1))
        return [{"pair": pair_input(a, b, self.conf, flow)[None], "h0": h0, "c0": c0}
                for a, b in zip(small[:-1], small[1:])]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
