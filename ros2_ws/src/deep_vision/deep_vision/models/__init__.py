"""Network definitions: one module per network, the single definition used by training, export and runtime.

Importing this package is light (no torch): model modules are imported on demand
through :func:`resolve_model_class`.

A model class (an ``nn.Module``) exposes what export, the backends and the bench need:

- ``default_conf``: dict of its configuration keys (one comment per key); the
  class is built with ``from_conf(conf)`` when it has that classmethod, else
  ``cls(conf)``; unknown keys are an error;
- ``input_spec()``: ``{"inputs": [...], "outputs": [...]}``, each entry a dict with
  ``name``, ``shape`` (ints; a string names a dynamic axis), ``dtype`` and optional
  ``channel_order``, ``normalization``, ``meaning``; ``forward`` takes the inputs
  positionally in that order and returns one tensor or a tuple in the outputs' order;
- optionally ``example_inputs(batch=1)`` → ``dict[str, torch.Tensor]`` (else random
  tensors of the spec's shapes are used), ``dynamic_axes`` (ONNX export
  ``dynamic_axes`` mapping) and ``inputs_from_frames(frames)`` → feeds (numpy, batch 1)
  made of real camera images: given ``frames_per_sample`` (default 1; 2 for networks on
  frame pairs) consecutive ``[H x W]`` uint8 frames, oldest first, it returns one feed dict
  or a list of them; used for export parity checks and INT8 calibration.
"""

from __future__ import annotations

import importlib
from typing import Any

from deep_vision.errors import ConfigError

#: Registered model names → "module:Class". The CLI's ``--model-class`` takes these or a dotted path.
MODEL_REGISTRY: dict[str, str] = {
    "homography_net": "deep_vision.models.homography_net:HomographyNet",
    "place_net": "deep_vision.models.place_net:PlaceNet",
    "deepvo": "deep_vision.models.deepvo:DeepVO",
    "patch_net": "deep_vision.models.patch_net:PatchNet",
    "testnet_conv": "deep_vision.models.testnets:TinyConvNet",
    "testnet_lstm": "deep_vision.models.testnets:TinyLSTMNet",
    "testnet_linear": "deep_vision.models.testnets:TinyLinearNet",
}

#: The small networks the inference tests and the bench use.
TEST_NETWORKS: tuple[str, ...] = ("testnet_conv", "testnet_lstm", "testnet_linear")


def resolve_model_class(name: str) -> type:
    """The class for a registered name, ``"package.module:Class"`` or ``"package.module.Class"``."""
    target = MODEL_REGISTRY.get(name, name)
    if ":" in target:
        module_name, _, attr = target.partition(":")
    else:
        module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(
            f"unknown model class {name!r}: give a registered name ({', '.join(sorted(MODEL_REGISTRY))}) "
            "or a dotted path like deep_vision.models.testnets:TinyConvNet"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model class {name!r}: cannot import module {module_name!r}: {exc}") from exc
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise ConfigError(f"model class {name!r}: module {module_name!r} has no class {attr!r}")
    return cls


def build_model(name: str, conf: dict[str, Any] | None = None) -> Any:
    """Instantiate the model class ``name`` (see :func:`resolve_model_class`) from ``conf``."""
    cls = resolve_model_class(name)
    from_conf = getattr(cls, "from_conf", None)
    return from_conf(conf or {}) if callable(from_conf) else cls(conf or {})


__all__ = ["MODEL_REGISTRY", "TEST_NETWORKS", "build_model", "resolve_model_class"]
