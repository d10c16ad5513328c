"""INT8 calibration for TensorRT: network inputs made from camera frames of a rosbag2.

:class:`BagCalibrationData` turns frames (``deep_vision.io.bag.BagSequence``) into
feeds with a preprocessing function the caller passes in (the model's own, e.g.
``model.inputs_from_frames``). :class:`CalibratorCore` is the calibrator's logic —
batches, device copies, the calibration cache file — in plain Python, tested
without TensorRT. :func:`make_int8_calibrator` mixes it into a subclass of
``tensorrt.IInt8EntropyCalibrator2``, created only when TensorRT is importable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deep_vision.errors import BagError, ConfigError
from deep_vision.inference.backend import TensorSpec

logger = logging.getLogger(__name__)

#: frames (``window`` consecutive images, oldest first) → a feed (input name → array, batch
#: axis first) or a list of feeds.
Preprocess = Callable[[list[np.ndarray]], "dict[str, np.ndarray] | list[dict[str, np.ndarray]]"]


class BagCalibrationData:
    """Calibration batches from the camera frames of a bag.

    Args:
        bag: rosbag2 folder.
        preprocess: see :data:`Preprocess`.
        inputs: the network's inputs; each batch matches their shapes (the batch size is
            their first axis, filled by concatenating preprocessed frames).
        max_batches: stop after this many batches.
        stride: use every ``stride``-th frame (consecutive frames look alike).
        window: frames per sample (2 for networks on frame pairs).
        image_topic: camera topic in the bag (default: deep_vision's layout).
    """

    def __init__(self, bag: str | Path, preprocess: Preprocess, inputs: Sequence[TensorSpec], *,
                 max_batches: int = 64, stride: int = 5, window: int = 1, image_topic: str | None = None) -> None:
        if not inputs or not all(s.is_static for s in inputs):
            raise ConfigError(f"calibration needs static input shapes, got {[list(s.shape) for s in inputs]}")
        if window < 1 or stride < 1 or max_batches < 1:
            raise ConfigError(f"window, stride and max_batches must be >= 1 (got {window}, {stride}, {max_batches})")
        self.bag = Path(bag)
        self.preprocess = preprocess
        self.inputs = list(inputs)
        self.max_batches = max_batches
        self.stride = stride
        self.window = window
        self.image_topic = image_topic
        self.batch_size = int(self.inputs[0].shape[0])

    def _samples(self) -> Iterator[dict[str, np.ndarray]]:
        from deep_vision.io.bag import BagSequence

        seq = BagSequence(self.bag, **({"image_topic": self.image_topic} if self.image_topic else {}))
        history: list[np.ndarray] = []
        for i, frame in enumerate(seq.frames()):
            history = (history + [frame.image])[-self.window:]
            if len(history) == self.window and i % self.stride == 0:
                result = self.preprocess(list(history))
                yield from ([result] if isinstance(result, dict) else result)

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        """Feeds shaped like ``inputs``, at most ``max_batches`` of them."""
        pending: list[dict[str, np.ndarray]] = []
        count = 0
        for sample in self._samples():
            pending.append(sample)
            if sum(next(iter(s.values())).shape[0] for s in pending) < self.batch_size:
                continue
            batch = {}
            for spec in self.inputs:
                if spec.name not in sample:
                    raise ConfigError(f"preprocess returned {sorted(sample)}, missing input {spec.name!r}")
                array = np.concatenate([s[spec.name] for s in pending], axis=0)[: self.batch_size]
                if tuple(array.shape) != tuple(spec.shape):
                    raise ConfigError(f"preprocess gives {spec.name!r} of shape {list(array.shape)} per batch, "
                                      f"the network takes {list(spec.shape)}")
                batch[spec.name] = np.ascontiguousarray(array, dtype=spec.dtype)
            pending = []
            yield batch
            count += 1
            if count >= self.max_batches:
                return
        if count == 0:
            raise BagError(f"{self.bag}: no calibration batch (too few frames for window {self.window})")


class CalibratorCore:
    """What a TensorRT calibrator does, without TensorRT.

    Args:
        data: where the batches come from (anything with ``batches()`` and ``batch_size``).
        cache_file: calibration cache (the scales TensorRT computed); reused when present,
            so a rebuild does not read the bag again.
        to_device: host array → object with ``data_ptr()`` on the GPU (default: a torch
            CUDA tensor); the objects are kept alive until the next batch.
    """

    def __init__(self, data: Any, cache_file: str | Path, to_device: Callable[[np.ndarray], Any] | None = None,
                 ) -> None:
        self.data = data
        self.cache_file = Path(cache_file)
        self._to_device = to_device or _torch_cuda_tensor
        self._batches: Iterator[dict[str, np.ndarray]] | None = None
        self._device: dict[str, Any] = {}
        self.batches_served = 0

    def get_batch_size(self) -> int:
        return int(self.data.batch_size)

    def get_batch(self, names: list[str], *args: Any) -> list[int] | None:
        """Device pointers of the next batch in the order of ``names``, or None when done."""
        if self._batches is None:
            self._batches = iter(self.data.batches())
        batch = next(self._batches, None)
        if batch is None:
            return None
        missing = [n for n in names if n not in batch]
        if missing:
            raise ConfigError(f"calibration batch lacks input(s) {missing}; it has {sorted(batch)}")
        self._device = {n: self._to_device(batch[n]) for n in names}
        self.batches_served += 1
        return [int(self._device[n].data_ptr()) for n in names]

    def read_calibration_cache(self) -> bytes | None:
        if self.cache_file.is_file() and self.cache_file.stat().st_size > 0:
            logger.info("using INT8 calibration cache %s", self.cache_file)
            return self.cache_file.read_bytes()
        return None

    def write_calibration_cache(self, cache: Any) -> None:
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_name(f".{self.cache_file.name}.{os.getpid()}.tmp")
        tmp.write_bytes(bytes(cache))
        os.replace(tmp, self.cache_file)
        logger.info("wrote INT8 calibration cache %s", self.cache_file)


def _torch_cuda_tensor(array: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).cuda()


def make_int8_calibrator(data: Any, cache_file: str | Path, to_device: Callable[[np.ndarray], Any] | None = None):
    """A ``tensorrt.IInt8EntropyCalibrator2`` running :class:`CalibratorCore` (imports tensorrt)."""
    from deep_vision.inference.tensorrt_backend import _import_tensorrt

    trt = _import_tensorrt()

    class BagEntropyCalibrator(CalibratorCore, trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            CalibratorCore.__init__(self, data, cache_file, to_device)

    return BagEntropyCalibrator()
