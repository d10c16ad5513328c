"""Model cards: ``models/<name>.yaml`` beside ``models/<name>.onnx``.

A card says what goes in and out of the network (names, shapes, dtypes, channel
order, normalisation, meaning), how it was made (training command, data, steps;
export opset and library versions), how good it is (metrics) and which exact
ONNX file it describes (sha256). Loaded with ``yaml.safe_load`` only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deep_vision.errors import ConfigError, ModelError
from deep_vision.inference.backend import TensorSpec

logger = logging.getLogger(__name__)


@dataclass
class TensorCard:
    """One input or output as documented in a card."""

    name: str
    shape: list[int | str]  # ints; a string names a dynamic axis
    dtype: str = "float32"
    channel_order: str | None = None  # e.g. grey, RGB, BGR; None where channels are not colours
    normalization: str | None = None  # formula from raw values, e.g. "(x / 255 - 0.5) / 0.5"
    meaning: str = ""

    @property
    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, tuple(self.shape), self.dtype)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> "TensorCard":
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping with name, shape, dtype, got {data!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        missing = [k for k in ("name", "shape") if k not in data]
        if missing:
            raise ConfigError(f"{where}: missing key(s) {missing}")
        return cls(**{**data, "shape": list(data["shape"])})


@dataclass
class TrainingInfo:
    command: str = ""  # command line that trained the network ("" for untrained test networks)
    data: str = ""  # training data (dataset names, splits, bags)
    steps: int | None = None  # optimizer steps


@dataclass
class ModelCard:
    """Everything a user of ``models/<name>.onnx`` needs to know; see the module docstring."""

    name: str
    inputs: list[TensorCard]
    outputs: list[TensorCard]
    opset: int
    sha256: str  # of the ONNX file
    onnx: str = ""  # ONNX file name, relative to the card's folder
    description: str = ""
    model_class: str | None = None  # registered name or "module:Class" of the PyTorch definition
    model_config: dict[str, Any] = field(default_factory=dict)  # the conf the network was built from
    checkpoint: str | None = None  # PyTorch state dict the ONNX file was exported from (relative to the card)
    dynamic_axes: dict[str, dict[int, str]] | None = None
    training: TrainingInfo = field(default_factory=TrainingInfo)
    metrics: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)  # library versions, parity tolerance and error, date

    # -- tensors ---------------------------------------------------------------------------
    @property
    def input_specs(self) -> list[TensorSpec]:
        return [t.spec for t in self.inputs]

    @property
    def output_specs(self) -> list[TensorSpec]:
        return [t.spec for t in self.outputs]

    # -- files -----------------------------------------------------------------------------
    def onnx_path(self, card_path: str | Path) -> Path:
        """The ONNX file this card (stored at ``card_path``) describes."""
        card_path = Path(card_path)
        return card_path.parent / (self.onnx or card_path.with_suffix(".onnx").name)

    def verify_sha256(self, onnx_path: str | Path) -> None:
        """Raise :class:`ModelError` when ``onnx_path``'s sha256 is not the card's."""
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise ModelError(f"ONNX model not found: {onnx_path}")
        actual = file_sha256(onnx_path)
        if actual != self.sha256:
            raise ModelError(
                f"sha256 of {onnx_path} is {actual[:12]}… but its model card says {self.sha256[:12]}…: the ONNX "
                "file was modified or the card is stale; export the model again (deep-vision export)"
            )

    # -- YAML ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        # Drop unset optional fields so the card stays short and readable.
        for tensors in (data["inputs"], data["outputs"]):
            for t in tensors:
                for key in ("channel_order", "normalization"):
                    if t[key] is None:
                        del t[key]
        for key in ("model_class", "checkpoint", "dynamic_axes"):
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model card") -> "ModelCard":
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        missing = [k for k in ("name", "inputs", "outputs", "opset", "sha256") if k not in data]
        if missing:
            raise ConfigError(f"{where}: missing key(s) {missing}")
        kwargs = dict(data)
        for key in ("inputs", "outputs"):
            if not isinstance(data[key], list) or not data[key]:
                raise ConfigError(f"{where}: {key} must be a non-empty list of {{name, shape, dtype}}")
            kwargs[key] = [TensorCard.from_dict(t, f"{where}: {key}[{i}]") for i, t in enumerate(data[key])]
        training = data.get("training") or {}
        if not isinstance(training, dict) or set(training) - {"command", "data", "steps"}:
            raise ConfigError(f"{where}: training must be a mapping with keys command, data, steps")
        kwargs["training"] = TrainingInfo(**training)
        kwargs["opset"] = int(data["opset"])
        kwargs["sha256"] = str(data["sha256"])
        for key in ("metrics", "export", "model_config"):
            kwargs[key] = dict(data.get(key) or {})
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path) -> "ModelCard":
        """Read a card; a missing or malformed file raises :class:`ModelError` naming it."""
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model card not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
            return cls.from_dict(data, where=str(path))
        except (yaml.YAMLError, ConfigError, TypeError, ValueError) as exc:
            raise ModelError(f"model card {path} is not valid: {exc}") from exc

    def save(self, path: str | Path) -> Path:
        """Write the card as YAML (temp file + rename, so readers never see half a card)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, default_flow_style=None))
        os.replace(tmp, path)
        return path


def card_path_for(model_path: str | Path) -> Path:
    """``models/x.onnx`` → ``models/x.yaml``."""
    return Path(model_path).with_suffix(".yaml")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
