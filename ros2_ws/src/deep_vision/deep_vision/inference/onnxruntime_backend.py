"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers, one session tuned for latency."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from deep_vision.errors import BackendUnavailableError, ConfigError, ModelError
from deep_vision.inference import devices
from deep_vision.inference.backend import InferenceBackend, TensorSpec, check_feeds

logger = logging.getLogger(__name__)

#: Our provider names → ONNX Runtime's.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

# ONNX type strings ("tensor(float)") → numpy dtype names.
_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(bool)": "bool",
}


def _spec(arg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else str(d or "?") for d in arg.shape)
    if arg.type not in _ORT_DTYPES:
        raise ModelError(f"tensor {arg.name!r} has type {arg.type}, which deep_vision does not handle")
    return TensorSpec(arg.name, shape, _ORT_DTYPES[arg.type])


class OnnxRuntimeBackend(InferenceBackend):
    """One ``InferenceSession`` on one execution provider, reused for every call.

    Session options favour latency: all graph optimizations, sequential execution,
    ``threads`` intra-op threads (ONNX Runtime's default, one per core, when None)
    and one inter-op thread. On CUDA, inputs and outputs go through an I/O binding
    so the session does not allocate per call.

    Args:
        onnx_path: the model.
        provider: ``"cpu"``, ``"cuda"`` or ``"tensorrt"`` (the TensorRT execution provider,
            with CUDA and CPU behind it for unsupported nodes).
        precision: ``"fp32"``; ``"fp16"``/``"int8"`` only with the TensorRT provider.
        threads: intra-op threads; None or 0 keeps ONNX Runtime's default.
        device_id: CUDA device.
        trt_cache: folder for the TensorRT provider's engine cache (None: no cache).
    """

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, *, provider: str = "cpu", precision: str = "fp32",
                 threads: int | None = None, device_id: int = 0, trt_cache: Path | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError(f"backend onnxruntime: the onnxruntime package is not importable: {exc}")
        if provider not in PROVIDERS:
            raise ConfigError(f"onnxruntime provider {provider!r} unknown; choose one of {', '.join(PROVIDERS)}")
        if precision != "fp32" and provider != "tensorrt":
            raise ConfigError(
                f"onnxruntime:{provider} runs fp32 models only (asked for {precision}); use the tensorrt "
                "backend or onnxruntime:tensorrt for fp16/int8"
            )
        if threads is not None and threads < 0:
            raise ConfigError(f"threads must be 0 (library default) or more, got {threads}")
        threads = threads or None
        available = devices.onnxruntime_providers()
        if PROVIDERS[provider] not in available:
            raise BackendUnavailableError(
                f"onnxruntime:{provider}: this ONNX Runtime build has no {PROVIDERS[provider]} "
                f"(available: {', '.join(available) or 'none'}); install onnxruntime-gpu for CUDA/TensorRT"
            )
        self.model_path = str(onnx_path)
        self.precision = precision
        self.provider = provider

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only: ORT's warnings about node placement are noise here

        providers: list = []
        if provider == "tensorrt":
            trt_options = {"device_id": device_id, "trt_fp16_enable": precision == "fp16",
                           "trt_int8_enable": precision == "int8"}
            if trt_cache is not None:
                Path(trt_cache).mkdir(parents=True, exist_ok=True)
                trt_options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(trt_cache))
            providers.append((PROVIDERS["tensorrt"], trt_options))
        if provider in ("cuda", "tensorrt"):
            providers.append((PROVIDERS["cuda"], {"device_id": device_id}))
        providers.append(PROVIDERS["cpu"])
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise ModelError(f"ONNX Runtime cannot load {onnx_path}: {exc}") from exc
        # ORT silently falls back to the CPU when a GPU provider fails to initialise: refuse that.
        active = self.session.get_providers()
        if active[0] != PROVIDERS[provider]:
            raise BackendUnavailableError(
                f"onnxruntime:{provider}: {PROVIDERS[provider]} did not initialise for {onnx_path} "
                f"(session runs on {', '.join(active)}); check the CUDA/cuDNN/TensorRT libraries"
            )
        self.device = "cpu" if provider == "cpu" else f"cuda:{device_id}"
        self.inputs = [_spec(a) for a in self.session.get_inputs()]
        self.outputs = [_spec(a) for a in self.session.get_outputs()]
        self._output_names = [s.name for s in self.outputs]
        self._binding = self.session.io_binding() if provider != "cpu" else None
        self.details = {"provider": provider,
                        "intra_op_threads": threads if threads is not None else "default",
                        "onnxruntime": ort.__version__}
        logger.debug("loaded %s with %s", onnx_path, self.describe())

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = check_feeds(self.inputs, feeds, self.model_path)
        if self._binding is None:
            values = self.session.run(self._output_names, feeds)
            return dict(zip(self._output_names, values))
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name in self._output_names:
            binding.bind_output(name, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        return dict(zip(self._output_names, binding.copy_outputs_to_cpu()))

    @property
    def device_id(self) -> int:
        return int(self.device.split(":")[1]) if ":" in self.device else 0

    def close(self) -> None:
        self._binding = None
        self.session = None  # type: ignore[assignment]
