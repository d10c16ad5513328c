"""HomographyNet's input scale, without torch (run time needs only numpy: an ONNX Runtime or TensorRT
deployment need not install PyTorch).

The same function prepares the training pairs (``training/train_homography.py``), the export parity
feeds (:meth:`deep_vision.models.homography_net.HomographyNet.inputs_from_frames`) and
:class:`deep_vision.estimators.HomographyEstimator`'s feeds.
"""

from __future__ import annotations

import numpy as np


def normalize(grey_uint8: np.ndarray) -> np.ndarray:
    """uint8 grey levels (any shape) → float32 in [-1, 1], the network's input scale ``(x / 255 − ½) / ½``."""
    return np.asarray(grey_uint8, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)
