"""The ONNX operators TensorRT 10's ONNX parser supports, and the export check that uses them.

Source of the lists: onnx/onnx-tensorrt, ``docs/operators.md``, "Operator Support
Matrix", the version headed "TensorRT 10.15 supports operators in the inclusive
range of opset 9 to opset 24"
(https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md, Apache-2.0).
Only the operator names and the Y/N column are kept; the per-operator restrictions
(supported types, inputs that must be initializers, attribute limits) are in the
source and TensorRT checks them when it builds an engine. RotaryEmbedding,
RMSNormalization and TensorScatter arrived in TensorRT 10.15 (onnx-tensorrt
``docs/Changelog.md``): :data:`ADDED_AFTER_10_0` lists them so a check can target an
older 10.x. To update, replace the lists and :data:`OPSET_RANGE` from the new
operators.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import onnx

from deep_vision.errors import ModelError

logger = logging.getLogger(__name__)

SOURCE = "onnx/onnx-tensorrt docs/operators.md (TensorRT 10.15 support matrix)"

#: Opsets the TensorRT 10 parser accepts (inclusive).
OPSET_RANGE: tuple[int, int] = (9, 24)

#: Operators marked "Y" (supported), default ONNX domain.
SUPPORTED_OPS: frozenset[str] = frozenset((
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "Attention",
    "AveragePool", "BatchNormalization", "BlackmanWindow", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv",
    "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand",
    "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool",
    "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization", "GRU",
    "HammingWindow", "HannWindow", "Hardmax", "HardSigmoid", "HardSwish", "Identity", "If", "ImageScaler",
    "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log",
    "LogSoftmax", "Loop", "LpNormalization", "LpPool", "LRN", "LSTM", "MatMul", "Max", "MaxPool", "Mean",
    "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Neg", "NonMaxSuppression", "NonZero", "Not",
    "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu", "QuantizeLinear", "RandomNormal",
    "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RMSNormalization", "RNN", "RoiAlign",
    "RotaryEmbedding", "Round", "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu",
    "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign",
    "SpaceToDepth", "Split", "Sqrt", "Squeeze", "STFT", "Sub", "Sum", "Tan", "Tanh", "TensorScatter",
    "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
))

#: Operators marked "N" (listed as not supported).
UNSUPPORTED_OPS: frozenset[str] = frozenset((
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor",
    "CenterCropPad", "Col2Im", "Compress", "ConcatFromSequence", "ConvInteger", "Det", "DFT",
    "DynamicQuantizeLinear", "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix",
    "Multinomial", "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement",
    "QLinearConv", "QLinearMatMul", "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty",
    "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss",
    "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit", "TfIdfVectorizer", "Unique",
))

#: Supported operators added after TensorRT 10.0, with the version that added them.
ADDED_AFTER_10_0: dict[str, str] = {"RMSNormalization": "10.15", "RotaryEmbedding": "10.15", "TensorScatter": "10.15"}

_DEFAULT_DOMAINS = ("", "ai.onnx")


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """All nodes of ``graph``, including those in the subgraphs of If, Loop and Scan."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _nodes(g)


def unsupported_operators(model: onnx.ModelProto, *, min_version: str | None = None) -> dict[str, list[str]]:
    """Operators of ``model`` TensorRT 10 cannot parse → the names of the nodes that use them.

    Operators of other domains (``com.microsoft``, custom ops) count as unsupported:
    they would need a TensorRT plugin. With ``min_version`` (e.g. ``"10.0"``), operators
    added after that version count as unsupported too.
    """
    allowed = set(SUPPORTED_OPS)
    if min_version is not None:
        allowed -= {op for op, since in ADDED_AFTER_10_0.items() if _version(since) > _version(min_version)}
    found: dict[str, list[str]] = {}
    for node in _nodes(model.graph):
        key = node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}"
        if node.domain not in _DEFAULT_DOMAINS or node.op_type not in allowed:
            found.setdefault(key, []).append(node.name or f"<unnamed {node.op_type}>")
    return found


def check_tensorrt_compatible(model: onnx.ModelProto | str | Path, *, where: str = "",
                              min_version: str | None = None) -> None:
    """Raise :class:`ModelError` when ``model`` uses an operator or opset TensorRT 10 does not support.

    ``where`` names the model in the message (defaults to the path when one is given).
    """
    if not isinstance(model, onnx.ModelProto):
        where = where or str(model)
        model = onnx.load(str(model), load_external_data=False)
    where = where or model.graph.name or "ONNX model"
    opset = next((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), None)
    if opset is not None and not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ModelError(
            f"{where}: opset {opset} is outside TensorRT 10's supported range "
            f"{OPSET_RANGE[0]}..{OPSET_RANGE[1]} ({SOURCE})"
        )
    bad = unsupported_operators(model, min_version=min_version)
    if bad:
        listed = "; ".join(
            f"{op} ({'marked unsupported' if op in UNSUPPORTED_OPS else 'not in the list'}; nodes: "
            f"{', '.join(nodes[:3])}{', …' if len(nodes) > 3 else ''})"
            for op, nodes in sorted(bad.items())
        )
        raise ModelError(f"{where}: operators TensorRT 10 cannot run: {listed}. Supported list: {SOURCE}")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())
