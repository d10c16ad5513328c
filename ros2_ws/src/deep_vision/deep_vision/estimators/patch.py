"""Learned patch descriptors (L2-Net) for keypoints, on any inference backend.

.. code-block:: python

    from deep_vision.estimators import PatchDescriptor

    desc = PatchDescriptor.from_model("models/patch.onnx", backend="auto")
    d = desc.describe(grey, keypoints, sizes)   # [N x 128] float32, unit norm; compare by Euclidean distance

``keypoints``: [N x 2] pixel (x, y); ``sizes``: keypoint diameters as OpenCV's ``KeyPoint.size`` — the patch
spans ``magnification`` × size pixels (the model card's value, 6 as SIFT's descriptor window); without sizes
every patch spans 32 pixels (one image pixel per patch pixel). ``angles`` (degrees, ``KeyPoint.angle``)
turn the patches; without them they are upright, as a robot's camera mostly is. Patches are cut by
:func:`deep_vision.models.patch_input.extract_patches`, the function that cut the training patches.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from deep_vision.errors import ConfigError, ModelError
from deep_vision.io.image import as_grey
from deep_vision.models.patch_input import MAGNIFICATION, PATCH_SIZE, extract_patches, keypoint_affines, to_network

logger = logging.getLogger(__name__)


class PatchDescriptor:
    """Descriptors of grey patches around keypoints (see the module docstring)."""

    def __init__(self, backend: Any, *, magnification: float = MAGNIFICATION, input_name: str = "patches",
                 output_name: str = "descriptors", batch: int = 1024) -> None:
        if not magnification > 0:
            raise ConfigError(f"patch descriptor: magnification must be positive, got {magnification}")
        self.backend = backend
        self.magnification = float(magnification)
        self.input_name = input_name
        self.output_name = output_name
        self.batch = int(batch)
        self.last_time_ms = 0.0
        self.model_id = ""
        self._dim: int | None = None

    @classmethod
    def from_model(cls, path: str | Path, backend: str = "auto", threads: int | None = None,
                   **kwargs: Any) -> PatchDescriptor:
        """Load a PatchNet: ONNX file (+ model card) or a PyTorch checkpoint (``final.pt`` of training).

        The magnification comes from the card's (or checkpoint's) model config unless given.
        """
        from deep_vision.inference import load_backend
        from deep_vision.inference.modelcard import ModelCard, card_path_for, file_sha256

        path = Path(path)
        factory, conf = None, {}
        if path.suffix.lower() in (".pt", ".pth"):
            from deep_vision.inference.torch_backend import conf_checkpoint_factory

            factory, conf = conf_checkpoint_factory(path, "patch_net")
        net = load_backend(path, backend, threads=threads, torch_module_factory=factory)
        if not net.inputs or not net.outputs:
            raise ModelError(f"{path}: the model declares no inputs or outputs")
        shape = list(net.inputs[0].shape)
        if len(shape) != 4 or shape[1:] != [1, PATCH_SIZE, PATCH_SIZE]:
            raise ModelError(f"{path}: input {net.inputs[0].name!r} has shape {shape}; a patch descriptor takes "
                             f"[N x 1 x {PATCH_SIZE} x {PATCH_SIZE}]")
        card = card_path_for(path)
        model_id = ""
        if card.is_file():
            loaded = ModelCard.load(card)
            conf = dict(getattr(loaded, "model_config", None) or {}) or conf
            model_id = loaded.sha256
        kwargs.setdefault("magnification", float(conf.get("magnification", MAGNIFICATION)))
        logger.info("patch descriptor: %s", net.describe())
        desc = cls(net, input_name=net.inputs[0].name, output_name=net.outputs[0].name, **kwargs)
        desc.model_id = model_id or file_sha256(path)
        return desc

    @property
    def dim(self) -> int:
        """Descriptor length (the output's last axis; described once when the graph leaves it symbolic)."""
        if self._dim is None:
            shape = self.backend.outputs[0].shape
            self._dim = int(shape[-1]) if isinstance(shape[-1], int) else int(self.describe_patches(
                np.zeros((1, PATCH_SIZE, PATCH_SIZE), np.uint8)).shape[1])
        return self._dim

    @property
    def label(self) -> str:
        return f"learned patches on {getattr(self.backend, 'label', str(self.backend))}"

    def describe(self, grey: np.ndarray, keypoints: np.ndarray, sizes: np.ndarray | None = None,
                 angles: np.ndarray | None = None) -> np.ndarray:
        """[N x D] float32 unit descriptors of the keypoints ([N x 2] x, y) of a uint8 image (see the module
        docstring for ``sizes`` and ``angles``)."""
        kp = np.asarray(keypoints, np.float64)
        if kp.ndim != 2 or kp.shape[1] != 2 and len(kp):
            raise ValueError(f"keypoints must be [N x 2] (x, y), got shape {list(kp.shape)}")
        kp = kp.reshape(-1, 2)
        if not np.isfinite(kp).all():
            raise ValueError("keypoints contain NaN or infinite coordinates")
        if sizes is None:
            sizes = np.full(len(kp), PATCH_SIZE / self.magnification)
        sizes = np.asarray(sizes, np.float64).reshape(-1)
        if len(sizes) != len(kp) or not (np.isfinite(sizes).all() and (sizes > 0).all()):
            raise ValueError(f"sizes must be {len(kp)} positive finite keypoint diameters")
        t0 = time.perf_counter()
        patches = extract_patches(as_grey(grey), keypoint_affines(kp, sizes, angles, self.magnification))
        out = self.describe_patches(patches)
        self.last_time_ms = (time.perf_counter() - t0) * 1e3
        return out

    def describe_patches(self, patches: np.ndarray) -> np.ndarray:
        """[N x D] float32 descriptors of [N x 32 x 32] uint8 patches."""
        x = to_network(np.asarray(patches))
        if len(x) == 0:
            return np.zeros((0, self.dim), np.float32)
        parts = [self.backend.run({self.input_name: x[i:i + self.batch]})[self.output_name]
                 for i in range(0, len(x), self.batch)]
        return np.ascontiguousarray(np.concatenate(parts).astype(np.float32, copy=False))
