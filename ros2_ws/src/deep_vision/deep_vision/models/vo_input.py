"""DeepVO's configuration and network input from camera frames, without torch (run time needs only numpy
and OpenCV: an ONNX Runtime or TensorRT deployment need not install PyTorch).

The same functions prepare the training samples (``training/train_vo.py``), the
export parity feeds and the estimator's feeds, so training and run time cannot
drift apart. ``conf`` is a configuration resolved by :func:`resolve_conf` (as
:class:`deep_vision.models.deepvo.DeepVO` holds it, or a model card's ``model_config``).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from deep_vision.errors import ConfigError
from deep_vision.models.conf import merge_conf

#: ``flow_preset`` names → cv2.DISOPTICAL_FLOW_PRESET_* values
DIS_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}

# (out channels, kernel, stride) per conv layer
_FLOWNET_S = [(64, 7, 2), (128, 5, 2), (256, 5, 2), (256, 3, 1), (512, 3, 2), (512, 3, 1), (512, 3, 2),
              (512, 3, 1), (1024, 3, 2)]
_COMPACT = [(16, 5, 2), (32, 5, 2), (64, 3, 2), (64, 3, 1), (128, 3, 2), (128, 3, 1), (192, 3, 2)]

#: DeepVO architectures (see :mod:`deep_vision.models.deepvo`)
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"input": "frames", "channels": 3, "height": 384, "width": 1280, "encoder": _FLOWNET_S,
              "lstm_hidden": 1000, "lstm_layers": 2, "fc_dim": None, "batch_norm": True},
    "compact": {"input": "frames", "channels": 1, "height": 96, "width": 320, "encoder": _COMPACT,
                "lstm_hidden": 256, "lstm_layers": 1, "fc_dim": 256, "batch_norm": True},
}
PRESETS["compact_flow"] = {**PRESETS["compact"], "input": "flow"}

#: DeepVO's configuration keys and defaults
DEFAULT_CONF: dict[str, Any] = {
    "preset": "compact",  # paper | compact | compact_flow: fills the architecture keys left at None
    "input": None,  # frames (the pair stacked on channels, as the paper) | flow (DIS optical flow of the pair)
    "flow_preset": "medium",  # DIS preset (ultrafast | fast | medium) for input flow
    "flow_scale": 8.0,  # pixels of flow (at the network size) per input unit, for input flow
    "channels": None,  # 1 (grey) or 3 (RGB) per frame
    "height": None,  # input height in pixels (frames are resized to it)
    "width": None,  # input width in pixels
    "encoder": None,  # conv layers as [out_channels, kernel, stride]
    "lstm_hidden": None,  # LSTM units per layer
    "lstm_layers": None,  # stacked LSTM layers
    "fc_dim": None,  # projection of the flattened features before the LSTM (None: none, as the paper)
    "batch_norm": None,  # BatchNorm after each conv
    "dropout": 0.3,  # dropout on the LSTM input and output
    "translation_scale": 1.0,  # metres per output unit of the translation head
}


def resolve_conf(conf: dict[str, Any] | None) -> dict[str, Any]:
    """``conf`` (a model card's ``model_config``, a training config's ``model``) over :data:`DEFAULT_CONF`,
    the preset's architecture filled in and checked.

    Raises:
        ConfigError: an unknown key, preset or value (named).
    """
    merged = merge_conf("DeepVO", DEFAULT_CONF, PRESETS, conf)
    merged["encoder"] = [list(map(int, layer)) for layer in merged["encoder"]]
    if merged["channels"] not in (1, 3):
        raise ConfigError(f"DeepVO: channels must be 1 or 3, got {merged['channels']}")
    if merged["input"] not in ("frames", "flow"):
        raise ConfigError(f"DeepVO: input must be frames or flow, got {merged['input']!r}")
    if merged["input"] == "flow" and merged["flow_preset"] not in DIS_PRESETS:
        raise ConfigError(f"DeepVO: flow_preset must be one of {sorted(DIS_PRESETS)}, got {merged['flow_preset']!r}")
    return merged


def input_channels(conf: dict[str, Any]) -> int:
    """Channels of the network's ``pair`` input: two frames, or the two flow components."""
    return 2 if conf["input"] == "flow" else 2 * conf["channels"]


class FlowFrontEnd:
    """Dense optical flow between two network-size uint8 frames (OpenCV DIS), scaled as the network takes it.

    One instance per stream (DIS keeps buffers); the same code serves training and run time.
    """

    def __init__(self, conf: dict[str, Any]) -> None:
        self.scale = np.float32(1.0 / float(conf["flow_scale"]))
        self.dis = cv2.DISOpticalFlow_create(DIS_PRESETS[conf["flow_preset"]])

    def __call__(self, prev: np.ndarray, curr: np.ndarray) -> np.ndarray:
        """[2 x H x W] float32 flow from ``prev`` to ``curr`` (grey uint8, same size), divided by flow_scale."""
        flow = self.dis.calc(np.ascontiguousarray(prev), np.ascontiguousarray(curr), None)
        return np.ascontiguousarray(flow.transpose(2, 0, 1)) * self.scale


def flow_front_end(conf: dict[str, Any]) -> FlowFrontEnd | None:
    """A :class:`FlowFrontEnd` for a flow-input model, None for a frame-input one."""
    return FlowFrontEnd(conf) if conf["input"] == "flow" else None


def resize_frame(frame: np.ndarray, conf: dict[str, Any]) -> np.ndarray:
    """One uint8 frame (grey or RGB) at the network size: [H x W] (grey, and always for input flow) or
    [H x W x 3]."""
    frame = np.asarray(frame)
    channels = 1 if conf["input"] == "flow" else conf["channels"]
    if channels == 1 and frame.ndim == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if channels == 3 and frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    return cv2.resize(frame, (conf["width"], conf["height"]), interpolation=cv2.INTER_AREA)


def normalise_frame(small: np.ndarray) -> np.ndarray:
    """[C x H x W] float32 in [-1, 1] of a frame from :func:`resize_frame`."""
    x = small.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return x[None] if x.ndim == 2 else np.ascontiguousarray(x.transpose(2, 0, 1))


def pair_input(prev: np.ndarray, curr: np.ndarray, conf: dict[str, Any], flow: FlowFrontEnd | None = None
               ) -> np.ndarray:
    """The network's ``pair`` input (without the batch axis) from two frames made by :func:`resize_frame`:
    the normalised frames stacked (input frames) or their flow (input flow; ``flow`` reuses a front end)."""
    if conf["input"] == "flow":
        return (flow or FlowFrontEnd(conf))(prev, curr)
    return np.concatenate([normalise_frame(prev), normalise_frame(curr)])
