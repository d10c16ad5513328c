"""The one interface every inference backend implements, and the tensor specs it reports."""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deep_vision.errors import ModelError

logger = logging.getLogger(__name__)

#: Precisions a backend may run in.
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one model input or output.

    ``shape`` holds ints for fixed axes and a string (the axis name, e.g. ``"batch"``)
    for a dynamic axis; ``dtype`` is a numpy dtype name (``"float32"``).
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) and d >= 0 for d in self.shape)

    def matches(self, shape: Sequence[int]) -> bool:
        """Whether a concrete ``shape`` fits this spec (dynamic axes match any size)."""
        return len(shape) == len(self.shape) and all(
            not isinstance(d, int) or d < 0 or d == s for d, s in zip(self.shape, shape)
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TensorSpec":
        return cls(str(data["name"]), tuple(data["shape"]), str(data.get("dtype", "float32")))


def check_feeds(specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray], model: str) -> dict[str, np.ndarray]:
    """Validate ``feeds`` against ``specs`` and return contiguous arrays of the specs' dtypes.

    Raises:
        ModelError: naming ``model`` and the input on a missing or unknown input name
            or a shape that does not fit.
    """
    names = [s.name for s in specs]
    missing = [n for n in names if n not in feeds]
    unknown = sorted(set(feeds) - set(names))
    if missing or unknown:
        raise ModelError(
            f"{model}: inputs {sorted(feeds)} do not match the model's inputs {names}"
            + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else "")
        )
    out = {}
    for spec in specs:
        array = np.asarray(feeds[spec.name])
        if not spec.matches(array.shape):
            raise ModelError(
                f"{model}: input {spec.name!r} expected shape {list(spec.shape)}, got {list(array.shape)}"
            )
        out[spec.name] = np.ascontiguousarray(array, dtype=spec.dtype)
    return out


class InferenceBackend(abc.ABC):
    """A loaded model that runs batches of numpy arrays.

    Attributes set by every implementation:
        name: ``"tensorrt"``, ``"onnxruntime"`` or ``"torch"``.
        device: ``"cpu"`` or ``"cuda:N"``.
        precision: one of :data:`PRECISIONS`.
        inputs, outputs: the model's tensors, in the model's order.
        model_path: the file the model came from (for messages), or a description.
        details: what else matters to reproduce a timing (provider, threads, engine file, ...).
        selection: why ``load_backend(..., "auto")`` chose this backend ("" otherwise).
    """

    name: str = "?"
    device: str = "cpu"
    precision: str = "fp32"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    model_path: str = "?"
    selection: str = ""

    def __init__(self) -> None:
        self.details: dict[str, Any] = {}

    @abc.abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch: input name → array (shapes as in :attr:`inputs`) → output name → array."""

    @property
    def label(self) -> str:
        """Short name of backend and device, as used on the command line: ``onnxruntime:cpu``."""
        flavour = self.details.get("provider") or self.device.split(":")[0]
        return f"{self.name}:{flavour}"

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.details.items())
        return f"{self.label} on {self.device}, {self.precision}" + (f" ({extra})" if extra else "")

    def close(self) -> None:
        """Release sessions and device buffers (the object is unusable afterwards)."""

    def __enter__(self) -> "InferenceBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()} model={self.model_path}>"
