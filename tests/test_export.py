"""ONNX export: parity on random and real inputs, refusals (checker, TensorRT operators, parity),
model card round trip and the sha256 check, the ``deep-vision export`` command."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch
import yaml
from conftest import small_world_config
from onnx import TensorProto, helper

from deep_vision.cli.main import main
from deep_vision.errors import ConfigError, ModelError
from deep_vision.inference import export as export_module
from deep_vision.inference.export import export_onnx
from deep_vision.inference.modelcard import ModelCard, file_sha256
from deep_vision.inference.selection import load_backend
from deep_vision.inference.tensorrt_ops import (
    ADDED_AFTER_10_0,
    SUPPORTED_OPS,
    UNSUPPORTED_OPS,
    check_tensorrt_compatible,
    unsupported_operators,
)
from deep_vision.models import TEST_NETWORKS, build_model, resolve_model_class


@pytest.fixture(scope="module")
def real_frames():
    """Two consecutive frames of the synthetic world (real camera-like images, not noise)."""
    from deep_vision.synthetic import SyntheticSequence

    seq = SyntheticSequence(small_world_config(frames=2, width=320, height=120))
    return [seq.image(0), seq.image(1)]


def export_testnet(name, path, **kwargs):
    model = build_model(name, kwargs.pop("conf", None)).eval()
    spec = model.input_spec()
    return model, export_onnx(model, model.example_inputs(), path, output_names=[o["name"] for o in spec["outputs"]],
                              card_fields={"inputs": spec["inputs"], "outputs": spec["outputs"], "model_class": name,
                                           "model_config": model.conf, **kwargs.pop("card_fields", {})}, **kwargs)


@pytest.mark.parametrize("name", TEST_NETWORKS)
def test_export_checks_parity_on_random_and_real_inputs(tmp_path, real_frames, name):
    model = build_model(name).eval()
    real = [model.inputs_from_frames([f]) for f in real_frames]
    _, card = export_testnet(name, tmp_path / f"{name}.onnx", real_inputs=real, random_trials=2)
    parity = card.export["parity"]
    assert parity["real_inputs"] == 2 and parity["random_inputs"] == 3 and parity["max_abs_diff"] < 1e-4
    assert card.export["tensorrt_operator_check"].startswith("passed")
    assert (tmp_path / f"{name}.onnx").is_file() and (tmp_path / f"{name}.yaml").is_file()
    assert not list(tmp_path.glob(".*tmp*")), "temp files left behind"
    graph = onnx.load(str(tmp_path / f"{name}.onnx")).graph
    assert [i.name for i in graph.input] == [s["name"] for s in model.input_spec()["inputs"]]
    assert [o.name for o in graph.output] == [s["name"] for s in model.input_spec()["outputs"]]
    ops = {n.op_type for n in graph.node}
    assert {"conv": {"Conv", "MaxPool", "GlobalAveragePool", "Gemm"}, "lstm": {"LSTM"},
            "linear": {"Gemm", "Relu"}}[name.split("_")[1]] <= ops


class Determinant(torch.nn.Module):
    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return torch.linalg.det(m)


def test_export_refuses_operator_tensorrt_cannot_run(tmp_path):
    path = tmp_path / "det.onnx"
    with pytest.raises(ModelError, match=r"operators TensorRT 10 cannot run: Det \(marked unsupported; nodes: "):
        export_onnx(Determinant(), {"m": torch.randn(1, 3, 3)}, path, output_names=["det"])
    assert not path.exists() and not list(tmp_path.iterdir()), "nothing may be written for a refused model"
    # opting out of the check exports it (ONNX Runtime runs Det)
    card = export_onnx(Determinant(), {"m": torch.randn(1, 3, 3)}, path, output_names=["det"], check_tensorrt=False)
    assert card.export["tensorrt_operator_check"] == "skipped"


def _graph_model(nodes, opset=17, inputs=("x",), outputs=("y",)):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in outputs],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_operator_check_sees_subgraphs_custom_domains_and_opsets(tmp_path):
    then_graph = helper.make_graph([helper.make_node("Unique", ["x"], ["u"], name="inner_unique")], "then", [],
                                   [helper.make_tensor_value_info("u", TensorProto.FLOAT, [4])])
    else_graph = helper.make_graph([helper.make_node("Identity", ["x"], ["v"])], "else", [],
                                   [helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 4])])
    model = _graph_model([
        helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
        helper.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=else_graph, name="branch"),
        helper.make_node("FusedGemm", ["x"], ["z"], domain="com.microsoft", name="ms_op"),
    ])
    assert unsupported_operators(model) == {"Unique": ["inner_unique"], "com.microsoft::FusedGemm": ["ms_op"]}
    with pytest.raises(ModelError, match="my model: operators TensorRT 10 cannot run: Unique"):
        check_tensorrt_compatible(model, where="my model")
    with pytest.raises(ModelError, match="opset 8 is outside TensorRT 10's supported range 9..24"):
        check_tensorrt_compatible(_graph_model([helper.make_node("Relu", ["x"], ["y"])], opset=8))
    rms = _graph_model([helper.make_node("RMSNormalization", ["x"], ["y"], name="rms")], opset=23)
    assert unsupported_operators(rms) == {}
    assert unsupported_operators(rms, min_version="10.0") == {"RMSNormalization": ["rms"]}


def test_operator_list_is_sane():
    assert {"Conv", "LSTM", "Gemm", "MaxPool", "Relu", "Resize", "GridSample"} <= SUPPORTED_OPS
    assert {"Det", "Unique", "DFT"} <= UNSUPPORTED_OPS and not SUPPORTED_OPS & UNSUPPORTED_OPS
    assert set(ADDED_AFTER_10_0) <= SUPPORTED_OPS
    assert all(op[0].isupper() for op in SUPPORTED_OPS | UNSUPPORTED_OPS)


class SignDependent(torch.nn.Module):
    """Python control flow on data: tracing freezes the branch taken for the example input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if bool(x.sum() > 0) else x * 3


def test_export_refuses_parity_failure(tmp_path):
    path = tmp_path / "sign.onnx"
    with pytest.raises(ModelError, match=r"differ on output 'y' for real input #0: max \|diff\|"):
        export_onnx(SignDependent(), {"x": torch.ones(1, 4)}, path, output_names=["y"], random_trials=0,
                    real_inputs=[{"x": -np.ones((1, 4), np.float32)}])
    assert not path.exists()


def test_export_refuses_graph_the_checker_rejects(tmp_path, monkeypatch):
    def broken_export(module, examples, out, input_names, output_names, dynamic_axes, opset):
        model = _graph_model([helper.make_node("Relu", ["undefined_tensor"], ["y"])])
        onnx.save(model, str(out))

    monkeypatch.setattr(export_module, "_torch_export", broken_export)
    with pytest.raises(ModelError, match="onnx.checker rejects the graph"):
        export_onnx(torch.nn.ReLU(), {"x": torch.ones(1, 4)}, tmp_path / "bad.onnx", output_names=["y"])
    assert not list(tmp_path.iterdir())


def test_export_arguments_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="must end in .onnx"):
        export_onnx(torch.nn.ReLU(), {"x": torch.ones(1)}, tmp_path / "x.pt", output_names=["y"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['sha'\]"):
        export_onnx(torch.nn.ReLU(), {"x": torch.ones(1)}, tmp_path / "x.onnx", output_names=["y"],
                    card_fields={"sha": "x"})


def test_dynamic_axes_stay_dynamic(tmp_path):
    _, card = export_testnet("testnet_conv", tmp_path / "dyn.onnx", conf={"dynamic_batch": True},
                             dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    assert card.inputs[0].shape == ["batch", 1, 64, 64] and card.outputs[0].shape == ["batch", 10]
    assert card.dynamic_axes == {"image": {0: "batch"}, "logits": {0: "batch"}}
    backend = load_backend(tmp_path / "dyn.onnx", "onnxruntime:cpu")
    assert backend.run({"image": np.zeros((3, 1, 64, 64), np.float32)})["logits"].shape == (3, 10)


def test_model_card_round_trip(tmp_path):
    _, card = export_testnet(
        "testnet_conv", tmp_path / "conv.onnx",
        card_fields={"training": {"command": "python training/train_x.py --config c.yaml",
                                  "data": "synthetic seeds 1-20", "steps": 1000},
                     "metrics": {"accuracy": 0.5}, "description": "a test network"})
    data = yaml.safe_load((tmp_path / "conv.yaml").read_text())
    assert {"inputs", "outputs", "opset", "sha256", "training", "metrics"} <= set(data)
    assert data["inputs"][0] == {"name": "image", "shape": [1, 1, 64, 64], "dtype": "float32",
                                 "channel_order": "grey", "normalization": "x / 255",
                                 "meaning": "camera frame resized to S x S"}
    assert data["training"] == {"command": "python training/train_x.py --config c.yaml",
                                "data": "synthetic seeds 1-20", "steps": 1000}
    assert data["sha256"] == file_sha256(tmp_path / "conv.onnx") and data["opset"] == 17
    loaded = ModelCard.load(tmp_path / "conv.yaml")
    assert loaded == card
    loaded.save(tmp_path / "copy.yaml")
    assert ModelCard.load(tmp_path / "copy.yaml") == card
    assert dataclasses.replace(card, metrics={}) != card


def test_model_card_errors_name_the_file(tmp_path):
    with pytest.raises(ModelError, match=f"model card not found: {tmp_path / 'none.yaml'}"):
        ModelCard.load(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ninputs: []\noutputs: []\nopset: 17\nsha256: abc\n")
    with pytest.raises(ModelError, match=f"model card {bad} is not valid: .*inputs must be a non-empty list"):
        ModelCard.load(bad)
    bad.write_text("name: x\nopset: 17\nsha256: abc\ninputs: [{name: a, shape: [1]}]\noutputs: [{name: b, shape: [1]}]"
                   "\nshaa256: typo\n")
    with pytest.raises(ModelError, match=r"unknown key\(s\) \['shaa256'\]"):
        ModelCard.load(bad)


def test_sha256_check_refuses_a_modified_onnx_file(tmp_path):
    _, card = export_testnet("testnet_linear", tmp_path / "lin.onnx")
    card.verify_sha256(tmp_path / "lin.onnx")  # untouched: fine
    model = onnx.load(str(tmp_path / "lin.onnx"))
    model.graph.initializer[0].float_data[:] = []  # change a weight through the ONNX API ...
    weights = np.frombuffer(model.graph.initializer[0].raw_data, np.float32).copy()
    weights[0] += 1.0
    model.graph.initializer[0].raw_data = weights.tobytes()
    onnx.save(model, str(tmp_path / "lin.onnx"))  # ... and save it over the exported file
    with pytest.raises(ModelError, match=r"sha256 of .*lin\.onnx is [0-9a-f]{12}… but its model card says"):
        card.verify_sha256(tmp_path / "lin.onnx")
    with pytest.raises(ModelError, match="modified or the card is stale"):
        load_backend(tmp_path / "lin.onnx")


def test_cli_export(tmp_path, capsys):
    torch.manual_seed(3)
    model = build_model("testnet_linear", {"hidden": [32]})
    torch.save({"model": model.state_dict(), "step": 7}, tmp_path / "last.pt")  # a training checkpoint
    (tmp_path / "conf.yaml").write_text("hidden: [32]\n")
    (tmp_path / "metrics.yaml").write_text("mse: 0.25\n")
    out = tmp_path / "models" / "lin.onnx"
    code = main(["export", "--model-class", "testnet_linear", "--checkpoint", str(tmp_path / "last.pt"),
                 "--config", str(tmp_path / "conf.yaml"), "--out", str(out),
                 "--metrics", str(tmp_path / "metrics.yaml"),
                 "--training-command", "python training/x.py", "--training-steps", "7"])
    assert code == 0
    text = capsys.readouterr().out
    assert "onnx.checker ok, TensorRT 10 operators ok" in text and str(out) in text
    card = ModelCard.load(out.with_suffix(".yaml"))
    assert card.checkpoint == "../last.pt" and card.model_config["hidden"] == [32] and card.metrics == {"mse": 0.25}
    assert card.training.steps == 7
    # the exported weights are the checkpoint's: ONNX Runtime matches the module
    x = np.random.default_rng(0).standard_normal((1, 128)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(load_backend(out).run({"vector": x})["scores"], expected, atol=1e-5)
    # ... and the torch backend finds the checkpoint through the card
    np.testing.assert_allclose(load_backend(out, "torch:cpu").run({"vector": x})["scores"], expected, atol=1e-5)


def test_cli_export_errors(tmp_path, capsys):
    assert main(["export", "--model-class", "no_such_net", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "unknown model class 'no_such_net'" in capsys.readouterr().err
    torch.save(build_model("testnet_linear").state_dict(), tmp_path / "lin.pt")
    assert main(["export", "--model-class", "testnet_conv", "--checkpoint", str(tmp_path / "lin.pt"),
                 "--out", str(tmp_path / "x.onnx")]) == 2
    assert "does not fit testnet_conv" in capsys.readouterr().err
    assert resolve_model_class("deep_vision.models.testnets.TinyLinearNet").__name__ == "TinyLinearNet"


def test_cli_export_with_real_frames_from_a_bag(tmp_path, capsys):
    (tmp_path / "world.yaml").write_text(yaml.safe_dump({"scene": {"ground_texel_m": 0.08, "facade_texel_m": 0.08,
                                                                    "margin_m": 25.0}}))
    bag = tmp_path / "bag"
    assert main(["synth", "--out", str(bag), "--frames", "4", "--size", "160x64", "--storage", "sqlite3",
                 "--config", str(tmp_path / "world.yaml"), "--workers", "1"]) == 0
    out = tmp_path / "conv.onnx"
    assert main(["export", "--model-class", "testnet_conv", "--out", str(out), "--bag", str(bag),
                 "--real-samples", "3"]) == 0
    assert "3 real inputs" in capsys.readouterr().out
    assert ModelCard.load(out.with_suffix(".yaml")).export["parity"]["real_inputs"] == 3
