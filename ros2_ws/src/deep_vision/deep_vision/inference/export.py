"""PyTorch module → ONNX file + model card, with the checks that make the file trustworthy.

:func:`export_onnx` writes ``<name>.onnx`` (fixed opset, named inputs and outputs,
static shapes unless dynamic axes are declared) and ``<name>.yaml`` only when all of
these pass, and raises :class:`~deep_vision.errors.ModelError` saying which failed:

1. ``onnx.checker`` (full check, with shape inference);
2. every operator is in TensorRT 10's supported list (:mod:`.tensorrt_ops`);
3. ONNX Runtime (CPU) and PyTorch agree within ``atol + rtol·|reference|`` on the
   example inputs, on random inputs and on the real inputs given.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deep_vision.errors import ConfigError, ModelError
from deep_vision.inference.modelcard import (
    ModelCard,
    TensorCard,
    TrainingInfo,
    file_sha256,
)

logger = logging.getLogger(__name__)

#: The opset our models are exported with: supported by TensorRT 10 (9..24) and ONNX Runtime.
DEFAULT_OPSET = 17
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3

_CARD_FIELDS = {"name", "description", "model_class", "model_config", "checkpoint", "training", "metrics",
                "inputs", "outputs"}
_ANNOTATIONS = ("channel_order", "normalization", "meaning")


def export_onnx(module, example_inputs: Mapping[str, Any], path: str | Path, *, output_names: Sequence[str],
                dynamic_axes: Mapping[str, Mapping[int, str]] | None = None, opset: int = DEFAULT_OPSET,
                card_fields: Mapping[str, Any] | None = None,
                real_inputs: Iterable[Mapping[str, Any]] | None = None,
                atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL, random_trials: int = 3, seed: int = 0,
                check_tensorrt: bool = True) -> ModelCard:
    """Export ``module`` to ``path`` (``.onnx``) and write its card beside it (``.yaml``); return the card.

    Args:
        module: the network (moved to the CPU, eval mode); ``forward`` takes the inputs
            positionally in the order of ``example_inputs``.
        example_inputs: input name → tensor; fixes the names, order and (static) shapes.
        output_names: names of ``forward``'s outputs, in order.
        dynamic_axes: ``{tensor name: {axis: axis name}}`` for axes left dynamic.
        card_fields: card content the export cannot know: ``name``, ``description``,
            ``model_class``, ``model_config``, ``checkpoint``, ``training`` (command, data,
            steps), ``metrics``, and ``inputs``/``outputs`` annotations (``channel_order``,
            ``normalization``, ``meaning`` per tensor, as a list of dicts with ``name`` or a
            dict keyed by name).
        real_inputs: feeds made from real data (input name → array or tensor) for the parity check.
        atol, rtol: parity tolerance.
        random_trials: random feeds for the parity check (besides ``example_inputs``); with
            dynamic axes, trials after the first change the dynamic sizes.
        check_tensorrt: refuse operators outside TensorRT 10's list.
    """
    import torch

    path = Path(path)
    if path.suffix != ".onnx":
        raise ConfigError(f"export path must end in .onnx, got {path}")
    fields = dict(card_fields or {})
    unknown = sorted(set(fields) - _CARD_FIELDS)
    if unknown:
        raise ConfigError(f"card_fields: unknown key(s) {unknown}; known: {sorted(_CARD_FIELDS)}")
    input_names = list(example_inputs)
    output_names = list(output_names)
    if not input_names or not output_names:
        raise ConfigError("export needs at least one input and one output name")
    module = module.cpu().eval()
    examples = {k: torch.as_tensor(v).cpu() for k, v in example_inputs.items()}

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
    try:
        _torch_export(module, examples, tmp, input_names, output_names, dynamic_axes, opset)
        graph_inputs, graph_outputs = _check_graph(tmp, path, input_names, output_names)
        if check_tensorrt:
            from deep_vision.inference.tensorrt_ops import check_tensorrt_compatible

            check_tensorrt_compatible(tmp, where=f"export of {path}")
        parity = _check_parity(module, examples, tmp, path, output_names, dynamic_axes or {}, real_inputs,
                               atol, rtol, random_trials, seed)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

    card = ModelCard(
        name=str(fields.get("name") or path.stem),
        inputs=_tensor_cards(graph_inputs, fields.get("inputs")),
        outputs=_tensor_cards(graph_outputs, fields.get("outputs")),
        opset=opset,
        sha256=file_sha256(path),
        onnx=path.name,
        description=str(fields.get("description", "")),
        model_class=fields.get("model_class"),
        model_config=dict(fields.get("model_config") or {}),
        checkpoint=fields.get("checkpoint"),
        dynamic_axes={k: {int(a): str(n) for a, n in v.items()} for k, v in dynamic_axes.items()}
        if dynamic_axes else None,
        training=_training(fields.get("training")),
        metrics=dict(fields.get("metrics") or {}),
        export=_export_info(parity, atol, rtol, check_tensorrt),
    )
    card_path = card.save(path.with_suffix(".yaml"))
    logger.info("exported %s (opset %d, sha256 %s…) and %s", path, opset, card.sha256[:12], card_path)
    return card


def example_inputs_for(model, batch: int = 1) -> dict[str, Any] | None:
    """Example inputs of a model following the :mod:`deep_vision.models` protocol.

    ``model.example_inputs(batch=...)`` when it has one, else random tensors of its
    ``input_spec()`` shapes; None when neither gives batch size ``batch``.
    """
    import torch

    example = getattr(model, "example_inputs", None)
    if example is not None:
        return example(batch=batch)
    specs = model.input_spec()["inputs"]
    if batch != specs[0]["shape"][0]:
        return None
    gen = torch.Generator().manual_seed(0)
    return {s["name"]: torch.randn(*[int(d) for d in s["shape"]], generator=gen).to(
        getattr(torch, np.dtype(s.get("dtype", "float32")).name)) for s in specs}


def _torch_export(module, examples: dict[str, Any], out: Path, input_names: list[str], output_names: list[str],
                  dynamic_axes: Mapping[str, Mapping[int, str]] | None, opset: int) -> None:
    import torch

    with warnings.catch_warnings():
        # The TorchScript-based exporter (dynamo=False) is deprecated but needs no onnxscript
        # and writes plain standard-domain graphs, which is what TensorRT parses best.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # Emitted for every LSTM; our recurrent networks take h0/c0 as inputs, which is its advice.
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
        try:
            torch.onnx.export(module, tuple(examples.values()), str(out), dynamo=False, input_names=input_names,
                              output_names=output_names, opset_version=opset, do_constant_folding=True,
                              dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()} if dynamic_axes else None)
        except Exception as exc:  # noqa: BLE001 - the exporter raises many error types
            raise ModelError(f"torch.onnx.export failed for {type(module).__name__}: {exc}") from exc


def _check_graph(tmp: Path, path: Path, input_names: list[str], output_names: list[str]):
    import onnx

    try:
        onnx.checker.check_model(str(tmp), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelError(f"export of {path}: onnx.checker rejects the graph: {exc}") from exc
    graph = onnx.load(str(tmp)).graph
    initializers = {i.name for i in graph.initializer}
    got_in = [i for i in graph.input if i.name not in initializers]
    if [i.name for i in got_in] != input_names:
        raise ModelError(f"export of {path}: graph inputs {[i.name for i in got_in]} differ from {input_names} "
                         "(an input the network does not use is dropped by the exporter)")
    if [o.name for o in graph.output] != output_names:
        raise ModelError(f"export of {path}: graph outputs {[o.name for o in graph.output]} differ from "
                         f"{output_names} (does forward return them all, in this order?)")
    return got_in, list(graph.output)


def _random_like(t, gen, dynamic: Mapping[int, str], grow: int):
    import torch

    shape = [s + grow if i in dynamic else s for i, s in enumerate(t.shape)]
    if t.dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if not t.is_floating_point():
        return torch.randint(0, 10, shape, generator=gen).to(t.dtype)
    return torch.randn(shape, generator=gen).to(t.dtype)


def _check_parity(module, examples: dict[str, Any], onnx_path: Path, path: Path, output_names: list[str],
                  dynamic_axes: Mapping[str, Mapping[int, str]], real_inputs, atol: float, rtol: float,
                  random_trials: int, seed: int) -> dict[str, Any]:
    import torch

    from deep_vision.inference.onnxruntime_backend import OnnxRuntimeBackend

    ort = OnnxRuntimeBackend(onnx_path, provider="cpu")
    gen = torch.Generator().manual_seed(seed)
    cases: list[tuple[str, dict[str, Any]]] = [("the example inputs", examples)]
    for i in range(random_trials):
        grow = 1 if i % 2 == 1 else 0  # vary dynamic axes on every other trial
        cases.append((f"random input #{i}",
                      {k: _random_like(v, gen, dynamic_axes.get(k, {}), grow) for k, v in examples.items()}))
    n_real = 0
    for i, feed in enumerate(real_inputs or ()):
        cases.append((f"real input #{i}", {k: torch.as_tensor(np.asarray(v)) for k, v in feed.items()}))
        n_real += 1
    worst = 0.0
    for label, feed in cases:
        with torch.no_grad():
            ref = module(*[feed[k] for k in examples])
        ref = list(ref) if isinstance(ref, (tuple, list)) else [ref]
        got = ort.run({k: v.numpy() for k, v in feed.items()})
        for name, r in zip(output_names, ref):
            r = r.detach().numpy()
            diff = np.abs(got[name].astype(np.float64) - r)
            worst = max(worst, float(diff.max(initial=0.0)))
            if not np.all(diff <= atol + rtol * np.abs(r)):
                raise ModelError(
                    f"export of {path}: ONNX Runtime and PyTorch differ on output {name!r} for {label}: "
                    f"max |diff| {diff.max():.3g} exceeds atol {atol:g} + rtol {rtol:g}·|reference|"
                )
    logger.info("parity ONNX Runtime vs PyTorch: %d random + %d real inputs, max |diff| %.3g", random_trials + 1,
                n_real, worst)
    return {"random_inputs": random_trials + 1, "real_inputs": n_real, "max_abs_diff": float(f"{worst:.3g}")}


def _tensor_cards(values, annotations) -> list[TensorCard]:
    import onnx

    by_name: dict[str, Mapping[str, Any]] = {}
    if isinstance(annotations, Mapping):
        by_name = dict(annotations)
    elif annotations:
        by_name = {a["name"]: a for a in annotations}
    cards = []
    for v in values:
        tt = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        extra = {k: by_name.get(v.name, {}).get(k) for k in _ANNOTATIONS}
        cards.append(TensorCard(v.name, shape, dtype, channel_order=extra["channel_order"],
                                normalization=extra["normalization"], meaning=extra["meaning"] or ""))
    return cards


def _training(value: Any) -> TrainingInfo:
    if value is None:
        return TrainingInfo()
    if isinstance(value, TrainingInfo):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(TrainingInfo)})
        if unknown:
            raise ConfigError(f"card_fields.training: unknown key(s) {unknown}; known: command, data, steps")
        return TrainingInfo(**value)
    raise ConfigError(f"card_fields.training must be a mapping (command, data, steps), got {value!r}")


def _export_info(parity: dict[str, Any], atol: float, rtol: float, check_tensorrt: bool) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import torch

    return {
        "date": datetime.date.today().isoformat(),
        "torch": str(torch.__version__),
        "onnx": str(onnx.__version__),
        "onnxruntime": str(onnxruntime.__version__),
        "parity": {**parity, "atol": atol, "rtol": rtol},
        "tensorrt_operator_check": "passed: TensorRT 10 list (onnx-tensorrt operators.md)" if check_tensorrt
        else "skipped",
    }
