"""Choose and load an inference backend for a model file: ``load_backend(path, "auto")``.

Backend names (as in parameter files and on the command line):

==========================  ==============================================================
``auto``                    TensorRT when importable and a GPU is present, then ONNX Runtime
                            CUDA, then ONNX Runtime CPU; logs which one it took and why
``tensorrt``                TensorRT 10 engine, built once and cached (see ``engine_cache``)
``onnxruntime[:provider]``  provider ``cpu``, ``cuda`` or ``tensorrt``; without one: CUDA if
                            usable, else CPU
``torch[:device]``          the PyTorch definition + checkpoint, device ``cpu`` or ``cuda``
==========================  ==============================================================

An explicitly requested backend that cannot run here raises
:class:`~deep_vision.errors.BackendUnavailableError` saying what is missing; a missing,
modified (sha256) or broken model raises :class:`~deep_vision.errors.ModelError` naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deep_vision.errors import BackendUnavailableError, ConfigError, ModelError
from deep_vision.inference import devices
from deep_vision.inference.backend import PRECISIONS, InferenceBackend, TensorSpec
from deep_vision.inference.modelcard import ModelCard, card_path_for

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime", "onnxruntime:cpu", "onnxruntime:cuda", "onnxruntime:tensorrt",
            "torch", "torch:cpu", "torch:cuda")
#: The order ``auto`` tries.
AUTO_ORDER = ("tensorrt", "onnxruntime:cuda", "onnxruntime:cpu")
_CHECKPOINT_SUFFIXES = (".pt", ".pth")


@dataclass
class ModelFiles:
    """The files behind a model path: ONNX file, model card, PyTorch checkpoint (each may be absent)."""

    path: Path
    onnx: Path | None = None
    card: ModelCard | None = None
    card_path: Path | None = None
    checkpoint: Path | None = None


def resolve_model(model_path: str | Path, *, verify: bool = True) -> ModelFiles:
    """Find the ONNX file, card and checkpoint for ``model_path`` (``.onnx``, ``.yaml`` card, or ``.pt``).

    With ``verify``, the ONNX file's sha256 is checked against its card when there is one.
    """
    path = Path(model_path)
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    if not path.is_file():
        raise ModelError(f"model path is not a file: {path}")
    files = ModelFiles(path)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        files.card_path = path
    elif suffix == ".onnx":
        files.onnx = path
        files.card_path = card_path_for(path) if card_path_for(path).is_file() else None
    elif suffix in _CHECKPOINT_SUFFIXES:
        files.checkpoint = path
        files.card_path = card_path_for(path) if card_path_for(path).is_file() else None
    else:
        raise ModelError(f"{path}: unknown model file type {suffix!r} (expected .onnx, a .yaml model card or .pt)")
    if files.card_path is not None:
        files.card = ModelCard.load(files.card_path)
        card_onnx = files.card.onnx_path(files.card_path)
        if files.onnx is None and card_onnx.is_file():
            files.onnx = card_onnx
        if files.checkpoint is None and files.card.checkpoint:
            files.checkpoint = files.card_path.parent / files.card.checkpoint
        if suffix in (".yaml", ".yml") and files.onnx is None:
            raise ModelError(f"model card {path} names ONNX file {card_onnx}, which does not exist")
        if verify and files.onnx is not None:
            files.card.verify_sha256(files.onnx)
    elif files.onnx is not None:
        logger.warning("%s has no model card beside it (%s): sha256 not verified", path, card_path_for(path).name)
    return files


def load_backend(model_path: str | Path, backend: str = "auto", *, precision: str = "fp32",
                 threads: int | None = None, engine_cache: Path | None = None,
                 torch_module_factory: Callable[[], Any] | None = None, device_id: int = 0,
                 calibrator: Any = None) -> InferenceBackend:
    """Load ``model_path`` on ``backend`` (see the module docstring for the names).

    Args:
        precision: fp32, fp16 or int8. ``auto`` runs ONNX Runtime in fp32 when TensorRT
            is not available (with a warning); explicit backends refuse what they cannot do.
        threads: CPU threads (ONNX Runtime intra-op threads; ``torch.set_num_threads``);
            None or 0 keeps each library's default.
        engine_cache: TensorRT engine cache folder (default: ``$DEEP_VISION_ENGINE_CACHE``
            or ``~/.cache/deep_vision/engines``).
        torch_module_factory: builds the ``nn.Module`` for the torch backend; default: the
            card's ``model_class`` with its ``model_config``.
        calibrator: INT8 calibrator for building a TensorRT int8 engine.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    files = resolve_model(model_path)
    kwargs = dict(precision=precision, threads=threads, engine_cache=engine_cache,
                  torch_module_factory=torch_module_factory, device_id=device_id, calibrator=calibrator)
    if backend != "auto":
        if files.onnx is None and not backend.startswith("torch"):
            raise ModelError(f"{files.path}: backend {backend} needs an ONNX model; found none for this path")
        return _load(backend, files, **kwargs)
    if files.onnx is None or files.path.suffix.lower() in _CHECKPOINT_SUFFIXES:
        logger.info("backend auto: %s is a PyTorch checkpoint; using torch", files.path)
        return _load("torch", files, **kwargs)
    reasons: list[str] = []
    for label in AUTO_ORDER:
        missing = why_unavailable(label)
        if missing:
            reasons.append(f"{label}: {missing}")
            continue
        candidate_kwargs = dict(kwargs)
        if label != "tensorrt" and precision != "fp32":
            logger.warning("backend auto: %s runs fp32, not the requested %s", label, precision)
            candidate_kwargs["precision"] = "fp32"
        try:
            chosen = _load(label, files, **candidate_kwargs)
        except (BackendUnavailableError, ModelError, RuntimeError, OSError) as exc:
            if label == AUTO_ORDER[-1]:
                raise
            logger.warning("backend auto: %s failed for %s: %s", label, files.path, exc)
            reasons.append(f"{label}: {exc}")
            continue
        why = f"skipped {'; '.join(reasons)}" if reasons else "first choice"
        chosen.selection = f"auto: {why}"
        logger.info("backend auto: using %s for %s (%s)", label, files.path.name, why)
        return chosen
    raise BackendUnavailableError(f"backend auto: nothing can run {files.path}: {'; '.join(reasons)}")


def why_unavailable(label: str) -> str:
    """What is missing on this machine for backend ``label``, or ``""`` when nothing is (cheap checks only)."""
    name, _, flavour = label.partition(":")
    if name == "tensorrt" or flavour == "tensorrt":
        if name == "tensorrt" and not devices.tensorrt_available():
            return "the tensorrt Python package is not installed"
        if flavour == "tensorrt" and "TensorrtExecutionProvider" not in devices.onnxruntime_providers():
            return f"onnxruntime has no TensorrtExecutionProvider (providers: {_providers_text()})"
        if not devices.cuda_available():
            return "no CUDA GPU is visible"
        return ""
    if name == "onnxruntime":
        providers = devices.onnxruntime_providers()
        if not providers:
            return "the onnxruntime package is not installed"
        if flavour == "cuda":
            if "CUDAExecutionProvider" not in providers:
                return f"onnxruntime has no CUDAExecutionProvider (providers: {_providers_text()})"
            if not devices.cuda_available():
                return "no CUDA GPU is visible"
        return ""
    if name == "torch":
        if not devices.torch_available():
            return "the torch package is not installed"
        if flavour == "cuda" and not devices.cuda_available():
            return "torch sees no CUDA GPU"
        return ""
    return f"unknown backend {label!r}"


def available_backends() -> list[str]:
    """Explicit backend names that can run on this machine."""
    return [b for b in BACKENDS if (b == "tensorrt" or ":" in b) and not why_unavailable(b)]


def _providers_text() -> str:
    return ", ".join(devices.onnxruntime_providers()) or "none"


def _load(label: str, files: ModelFiles, *, precision: str, threads: int | None, engine_cache: Path | None,
          torch_module_factory: Callable[[], Any] | None, device_id: int, calibrator: Any) -> InferenceBackend:
    name, _, flavour = label.partition(":")
    missing = why_unavailable(label)
    if missing:
        raise BackendUnavailableError(f"backend {label} requested for {files.path} but {missing}; "
                                      f"available here: {', '.join(available_backends()) or 'none'}")
    if name == "onnxruntime":
        from deep_vision.inference.onnxruntime_backend import OnnxRuntimeBackend

        if not flavour:
            flavour = "cuda" if not why_unavailable("onnxruntime:cuda") else "cpu"
            logger.info("backend onnxruntime: using the %s provider", flavour)
        trt_cache = None
        if flavour == "tensorrt":
            from deep_vision.inference.engine_cache import default_cache_dir

            trt_cache = Path(engine_cache or default_cache_dir()) / "onnxruntime-trt"
        return OnnxRuntimeBackend(files.onnx, provider=flavour, precision=precision, threads=threads,
                                  device_id=device_id, trt_cache=trt_cache)
    if name == "tensorrt":
        from deep_vision.inference.engine_cache import EngineCache
        from deep_vision.inference.tensorrt_backend import TensorRTBackend

        return TensorRTBackend.from_onnx(files.onnx, precision=precision, input_shapes=static_input_shapes(files),
                                         cache=EngineCache(engine_cache), calibrator=calibrator,
                                         onnx_sha256=files.card.sha256 if files.card else None, device_id=device_id)
    return _load_torch(files, flavour, precision=precision, threads=threads, factory=torch_module_factory,
                       device_id=device_id)


def _load_torch(files: ModelFiles, flavour: str, *, precision: str, threads: int | None,
                factory: Callable[[], Any] | None, device_id: int) -> InferenceBackend:
    from deep_vision.inference.torch_backend import TorchBackend

    if files.checkpoint is None:
        raise ModelError(f"backend torch needs the PyTorch checkpoint of {files.path}: pass the .pt file "
                         "or record 'checkpoint' in its model card")
    if factory is None:
        if files.card is None or not files.card.model_class:
            raise ModelError(f"backend torch: no module factory given and no model card with model_class "
                             f"for {files.path}")
        from deep_vision.models import build_model

        card = files.card

        def factory() -> Any:
            return build_model(card.model_class, card.model_config)

    if files.card is not None:
        inputs, outputs = files.card.input_specs, files.card.output_specs
    else:  # no card: ask the module for its spec
        inputs, outputs = module_specs(factory())
    device = flavour or ("cuda" if devices.cuda_available() else "cpu")
    if device == "cuda":
        device = f"cuda:{device_id}"
    return TorchBackend.from_checkpoint(files.checkpoint, factory, inputs, outputs, device=device,
                                        precision=precision, threads=threads)


def module_specs(module: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output specs from a model's ``input_spec()`` (see :mod:`deep_vision.models`)."""
    spec = getattr(module, "input_spec", None)
    if spec is None:
        raise ModelError(f"{type(module).__name__} has no input_spec(); cannot tell its inputs and outputs")
    data = spec()
    return ([TensorSpec.from_dict(d) for d in data["inputs"]], [TensorSpec.from_dict(d) for d in data["outputs"]])


def static_input_shapes(files: ModelFiles) -> dict[str, tuple[int, ...]]:
    """Input shapes for the TensorRT optimization profile: the card's, else the ONNX graph's."""
    if files.card is not None:
        specs = files.card.input_specs
    else:
        import onnx

        graph = onnx.load(str(files.onnx), load_external_data=False).graph
        initializers = {i.name for i in graph.initializer}
        specs = [TensorSpec(i.name, tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                                          for d in i.type.tensor_type.shape.dim))
                 for i in graph.input if i.name not in initializers]
    dynamic = [s for s in specs if not s.is_static]
    if dynamic:
        raise ModelError(f"{files.path}: TensorRT engines are built for fixed input shapes; "
                         f"{', '.join(f'{s.name} {list(s.shape)}' for s in dynamic)} have dynamic axes "
                         "(export with static shapes or give a card with concrete shapes)")
    return {s.name: tuple(int(d) for d in s.shape) for s in specs}
