"""PlaceNet's network input from a camera frame, without torch (run time needs only numpy and OpenCV:
an ONNX Runtime or TensorRT deployment need not install PyTorch).

The same function prepares the training images (``training/train_place.py``), the
export parity feeds and :class:`deep_vision.estimators.PlaceRecognizer`'s feeds.
"""

from __future__ import annotations

import cv2
import numpy as np


def preprocess(image: np.ndarray, image_size: list[int] | tuple[int, int], in_channels: int) -> np.ndarray:
    """A uint8 frame ([H x W] grey or [H x W x 3] RGB) → [1 x C x H' x W'] float32 network input.

    Grey frames are replicated for an RGB network; RGB frames are converted to
    grey for a grey one. Resizing uses ``INTER_AREA`` when shrinking.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected an [H x W] grey or [H x W x 3] RGB image, got shape {list(image.shape)}")
    if in_channels == 1 and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    elif in_channels == 3 and image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    w, h = int(image_size[0]), int(image_size[1])
    if image.shape[1] != w or image.shape[0] != h:
        shrink = image.shape[1] > w or image.shape[0] > h
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    x = image.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    x = x[None, None] if x.ndim == 2 else x.transpose(2, 0, 1)[None]
    return np.ascontiguousarray(x)
