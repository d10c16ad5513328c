"""PyTorch backend: the training definition run eagerly, on the CPU or a CUDA GPU (FP16 there)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deep_vision.errors import BackendUnavailableError, ConfigError, ModelError
from deep_vision.inference.backend import InferenceBackend, TensorSpec, check_feeds

logger = logging.getLogger(__name__)

# Keys under which training scripts commonly nest the model's state dict in a checkpoint.
_STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict")


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Tensors of a checkpoint, read with ``weights_only=True`` (no pickled code runs).

    Accepts a bare state dict or a training checkpoint that nests it under ``model``,
    ``state_dict`` or ``model_state_dict``.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"PyTorch checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises pickle, zip and runtime errors alike
        raise ModelError(f"cannot read PyTorch checkpoint {path} (weights_only=True): {exc}") from exc
    if not isinstance(data, Mapping):
        raise ModelError(f"{path}: expected a state dict, got {type(data).__name__}")
    for key in _STATE_DICT_KEYS:
        if isinstance(data.get(key), Mapping):
            return dict(data[key])
    return dict(data)


def conf_checkpoint_factory(path: str | Path, model_name: str) -> tuple[Callable[[], Any] | None, dict[str, Any]]:
    """(module factory, conf) for a training checkpoint that stores the network's ``conf`` beside its weights
    (``{"model": state dict, "conf": {...}}``, as the trainers and exporters save); (None, {}) for a bare state
    dict, whose model card must then say what to build. ``model_name``: a :data:`deep_vision.models.MODEL_REGISTRY`
    name."""
    import torch

    from deep_vision.models import build_model

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises pickle, zip and runtime errors alike
        raise ModelError(f"cannot read PyTorch checkpoint {path}: {exc}") from exc
    conf = state.get("conf") if isinstance(state, dict) else None
    if not isinstance(conf, dict):
        return None, {}
    return (lambda: build_model(model_name, conf)), conf


class TorchBackend(InferenceBackend):
    """An ``nn.Module`` in eval mode under ``torch.inference_mode``.

    ``forward`` receives the inputs positionally in the order of ``inputs`` and returns
    one tensor or a tuple/list in the order of ``outputs`` (or a dict keyed by output name).

    Args:
        module: the network, weights loaded.
        inputs, outputs: the model's tensors (from its model card or ``input_spec()``).
        device: ``"cpu"`` or ``"cuda"``/``"cuda:N"``.
        precision: ``"fp32"``, or ``"fp16"`` on CUDA (weights and float inputs in half,
            outputs returned in the outputs' dtypes).
        threads: when given (not None or 0), ``torch.set_num_threads(threads)``, which is process-wide.
    """

    name = "torch"

    def __init__(self, module, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], *,
                 device: str = "cpu", precision: str = "fp32", threads: int | None = None,
                 model_path: str = "<module>") -> None:
        super().__init__()
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError(f"torch:cuda: torch {torch.__version__} sees no CUDA GPU")
        if precision not in ("fp32", "fp16"):
            raise ConfigError(f"torch backend runs fp32 or fp16 (on CUDA), not {precision}")
        if precision == "fp16" and not device.startswith("cuda"):
            raise ConfigError("torch backend: fp16 needs a CUDA device (CPU half-precision kernels are slow)")
        if threads is not None and threads < 0:
            raise ConfigError(f"threads must be 0 (library default) or more, got {threads}")
        if threads:
            torch.set_num_threads(threads)
        self.model_path = model_path
        self.device = "cuda:0" if device == "cuda" else device
        self.precision = precision
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self._torch = torch
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        module = module.eval().to(self.device)
        self.module = module.half() if precision == "fp16" else module
        self.details = {"provider": self.device.split(":")[0], "threads": torch.get_num_threads(),
                        "torch": str(torch.__version__)}

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, module_factory: Callable[[], Any],
                        inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], **kwargs: Any) -> "TorchBackend":
        """Build the module with ``module_factory()`` and load ``checkpoint`` into it (strict)."""
        state = load_state_dict(checkpoint)
        module = module_factory()
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:  # missing/unexpected keys or shape mismatches
            raise ModelError(f"checkpoint {checkpoint} does not fit {type(module).__name__}: {exc}") from exc
        return cls(module, inputs, outputs, model_path=str(checkpoint), **kwargs)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        feeds = check_feeds(self.inputs, feeds, self.model_path)
        args = []
        for spec in self.inputs:
            t = torch.from_numpy(feeds[spec.name]).to(self.device, non_blocking=True)
            args.append(t.to(self._dtype) if t.is_floating_point() else t)
        with torch.inference_mode():
            result = self.module(*args)
        if isinstance(result, Mapping):
            values = [result[s.name] for s in self.outputs]
        elif isinstance(result, (tuple, list)):
            values = list(result)
        else:
            values = [result]
        if len(values) != len(self.outputs):
            raise ModelError(f"{self.model_path}: forward returned {len(values)} outputs, "
                             f"the model declares {len(self.outputs)} ({[s.name for s in self.outputs]})")
        return {s.name: v.detach().cpu().numpy().astype(s.dtype, copy=False) for s, v in zip(self.outputs, values)}

    def close(self) -> None:
        self.module = None
