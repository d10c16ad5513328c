"""TensorRT 10 backend: build an engine from ONNX, deserialize it, run it with reused CUDA buffers.

Kept small on purpose: TensorRT cannot be installed on the development machines, so
everything around it (engine cache, calibration data, selection) lives in modules
tested without it. ``tensorrt`` is imported inside the functions, never at module import.
Device buffers are PyTorch CUDA tensors (allocated once per input shape and reused);
the engine runs on a private CUDA stream with ``execute_async_v3``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deep_vision.errors import BackendUnavailableError, ConfigError, ModelError
from deep_vision.inference import devices
from deep_vision.inference.backend import InferenceBackend, TensorSpec, check_feeds
from deep_vision.inference.engine_cache import EngineCache

logger = logging.getLogger(__name__)


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend tensorrt: the tensorrt package is not importable ({exc}); install TensorRT 10 "
            "(NVIDIA's apt repository or pip tensorrt, see the Dockerfile)"
        ) from exc
    if not str(trt.__version__).startswith("10."):
        raise BackendUnavailableError(f"backend tensorrt: TensorRT 10 required, found {trt.__version__}")
    return trt


def _trt_logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def build_engine(onnx_path: Path, *, precision: str, input_shapes: Mapping[str, Sequence[int]],
                 workspace_bytes: int = 1 << 30, calibrator: Any = None) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine (TensorRT 10 Python API).

    The optimization profile pins each input to its model-card shape (min = opt = max).
    ``precision``: fp32, fp16 (FP16 kernels allowed) or int8 (INT8 with FP16 fallback;
    needs ``calibrator``, an ``IInt8EntropyCalibrator2`` such as
    :func:`deep_vision.inference.calibration.make_int8_calibrator`).
    """
    trt = _import_tensorrt()
    log = _trt_logger(trt)
    builder = trt.Builder(log)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if calibrator is None:
            raise ConfigError(f"int8 engine for {onnx_path} needs a calibrator (calibration bag)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.name not in input_shapes:
            raise ModelError(f"{onnx_path}: no shape given for input {tensor.name!r}")
        shape = tuple(int(d) for d in input_shapes[tensor.name])
        profile.set_shape(tensor.name, shape, shape, shape)
    config.add_optimization_profile(profile)
    if precision == "int8":
        config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"TensorRT failed to build an engine for {onnx_path} ({precision}); see its log above")
    return bytes(serialized)


class TensorRTBackend(InferenceBackend):
    """A deserialized engine with one execution context and device buffers reused across calls."""

    name = "tensorrt"

    def __init__(self, engine_data: bytes, *, precision: str, device_id: int = 0, model_path: str = "<engine>",
                 engine_path: Path | None = None) -> None:
        super().__init__()
        trt = _import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError("backend tensorrt: no CUDA GPU visible to torch")
        self._torch = torch
        self.device = f"cuda:{device_id}"
        self.precision = precision
        self.model_path = model_path
        self._runtime = trt.Runtime(_trt_logger(trt))
        self.engine = self._runtime.deserialize_cuda_engine(engine_data)
        if self.engine is None:
            raise ModelError(f"TensorRT cannot deserialize the engine for {model_path} ({engine_path})")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device=self.device)
        self.inputs, self.outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            spec = TensorSpec(name, tuple(self.engine.get_tensor_shape(name)),
                              np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))).name)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(spec)
        self._buffers: dict[str, Any] = {}
        self.details = {"provider": "cuda", "tensorrt": trt.__version__,
                        "engine": str(engine_path) if engine_path else "in memory"}

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: str):
        buf = self._buffers.get(name)
        if buf is None or tuple(buf.shape) != shape:
            torch_dtype = getattr(self._torch, dtype)
            buf = self._buffers[name] = self._torch.empty(shape, dtype=torch_dtype, device=self.device)
            self.context.set_tensor_address(name, buf.data_ptr())
        return buf

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        feeds = check_feeds(self.inputs, feeds, self.model_path)
        with torch.cuda.stream(self.stream):
            for spec in self.inputs:
                array = feeds[spec.name]
                self.context.set_input_shape(spec.name, array.shape)
                self._buffer(spec.name, array.shape, spec.dtype).copy_(torch.from_numpy(array), non_blocking=True)
            for spec in self.outputs:
                self._buffer(spec.name, tuple(self.context.get_tensor_shape(spec.name)), spec.dtype)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise ModelError(f"TensorRT execution failed for {self.model_path}")
            out = {spec.name: self._buffers[spec.name].to("cpu", non_blocking=True) for spec in self.outputs}
        self.stream.synchronize()
        return {name: t.numpy() for name, t in out.items()}

    def close(self) -> None:
        self._buffers.clear()
        self.context = None
        self.engine = None

    @classmethod
    def from_onnx(cls, onnx_path: str | Path, *, precision: str, input_shapes: Mapping[str, Sequence[int]],
                  cache: EngineCache, onnx_sha256: str | None = None, calibrator: Any = None,
                  device_id: int = 0) -> "TensorRTBackend":
        """Engine for ``onnx_path`` from ``cache``, built (and cached) when missing, stale or corrupt."""
        trt = _import_tensorrt()
        if not devices.cuda_available():
            raise BackendUnavailableError("backend tensorrt: no CUDA GPU visible")

        def builder(path: Path) -> bytes:
            return build_engine(path, precision=precision, input_shapes=input_shapes, calibrator=calibrator)

        entry = cache.get_or_build(onnx_path, builder, tensorrt_version=trt.__version__,
                                   gpu_name=devices.gpu_name(device_id),
                                   compute_capability=devices.compute_capability(device_id), precision=precision,
                                   input_shapes=input_shapes, onnx_sha256=onnx_sha256)
        logger.info("%s engine %s", "built" if entry.built else "cached", entry.path)
        return cls(entry.data, precision=precision, device_id=device_id, model_path=str(onnx_path),
                   engine_path=entry.path)
