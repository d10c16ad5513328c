"""DeepVO's network input from camera frames, without torch (run time needs only numpy and OpenCV).

The same functions prepare the training samples (``training/train_vo.py``), the
export parity feeds and the estimator's feeds, so training and run time cannot
drift apart. ``conf`` is a resolved :class:`deep_vision.models.deepvo.DeepVO`
configuration (or a model card's ``model_config``).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

#: ``flow_preset`` names → cv2.DISOPTICAL_FLOW_PRESET_* values
DIS_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


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
