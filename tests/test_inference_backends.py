"""Inference backends: ONNX Runtime vs PyTorch parity on the test networks, feed checks, model errors,
and ``auto`` selection with each backend present or absent (simulated availability, real fall-back)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from deep_vision.errors import BackendUnavailableError, ConfigError, ModelError
from deep_vision.inference import devices, selection
from deep_vision.inference.backend import InferenceBackend, TensorSpec
from deep_vision.inference.export import export_onnx
from deep_vision.inference.selection import load_backend
from deep_vision.models import TEST_NETWORKS, build_model

ATOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """The three test networks exported (ONNX + card + checkpoint) into one folder."""
    folder = tmp_path_factory.mktemp("testnets")
    paths = {}
    for name in TEST_NETWORKS:
        torch.manual_seed(1)
        model = build_model(name).eval()
        torch.save(model.state_dict(), folder / f"{name}.pt")
        spec = model.input_spec()
        export_onnx(model, model.example_inputs(), folder / f"{name}.onnx",
                    output_names=[o["name"] for o in spec["outputs"]], random_trials=1,
                    card_fields={"model_class": name, "model_config": model.conf, "checkpoint": f"{name}.pt",
                                 "inputs": spec["inputs"], "outputs": spec["outputs"]})
        paths[name] = folder / f"{name}.onnx"
    return paths


def random_feeds(backend: InferenceBackend, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s.name: rng.standard_normal(s.shape).astype(s.dtype) for s in backend.inputs}


@pytest.mark.parametrize("name", TEST_NETWORKS)
def test_onnxruntime_matches_torch(exported, name):
    ort = load_backend(exported[name], "onnxruntime:cpu")
    pt = load_backend(exported[name], "torch:cpu")
    assert (ort.name, ort.device, ort.precision) == ("onnxruntime", "cpu", "fp32")
    assert (pt.name, pt.device, pt.precision) == ("torch", "cpu", "fp32")
    assert ort.inputs == pt.inputs and ort.outputs == pt.outputs
    assert all(isinstance(s, TensorSpec) and s.is_static for s in ort.inputs + ort.outputs)
    for seed in range(3):
        feeds = random_feeds(ort, seed)
        a, b = ort.run(feeds), pt.run(feeds)
        assert set(a) == set(b) == {s.name for s in ort.outputs}
        for spec in ort.outputs:
            assert a[spec.name].shape == tuple(spec.shape) and a[spec.name].dtype == np.float32
            np.testing.assert_allclose(a[spec.name], b[spec.name], atol=ATOL, rtol=1e-3)


def test_lstm_state_carries_over_calls(exported):
    """Two calls with hn, cn fed back equal one PyTorch pass over the concatenated sequence."""
    ort = load_backend(exported["testnet_lstm"], "onnxruntime:cpu")
    torch.manual_seed(1)
    model = build_model("testnet_lstm").eval()
    model.load_state_dict(torch.load(exported["testnet_lstm"].with_suffix(".pt"), weights_only=True))
    rng = np.random.default_rng(5)
    seq = rng.standard_normal((1, 16, 32)).astype(np.float32)
    state = np.zeros((1, 1, 64), np.float32)
    first = ort.run({"features": seq[:, :8], "h0": state, "c0": state})
    second = ort.run({"features": seq[:, 8:], "h0": first["hn"], "c0": first["cn"]})
    with torch.no_grad():
        y, (hn, _) = model.lstm(torch.from_numpy(seq), (torch.zeros(1, 1, 64), torch.zeros(1, 1, 64)))
        expected = model.head(y).numpy()
    np.testing.assert_allclose(np.concatenate([first["output"], second["output"]], axis=1), expected, atol=ATOL)
    np.testing.assert_allclose(second["hn"], hn.numpy(), atol=ATOL)


def test_threads_are_configurable(exported):
    ort = load_backend(exported["testnet_linear"], "onnxruntime:cpu", threads=1)
    assert ort.details["intra_op_threads"] == 1
    before = torch.get_num_threads()
    try:
        pt = load_backend(exported["testnet_linear"], "torch:cpu", threads=1)
        assert torch.get_num_threads() == 1 and pt.details["threads"] == 1
    finally:
        torch.set_num_threads(before)
    assert load_backend(exported["testnet_linear"], "onnxruntime:cpu", threads=0).details["intra_op_threads"] == \
        "default"
    with pytest.raises(ConfigError, match="threads must be 0"):
        load_backend(exported["testnet_linear"], "onnxruntime:cpu", threads=-1)


def test_feeds_are_checked(exported):
    ort = load_backend(exported["testnet_conv"], "onnxruntime:cpu")
    with pytest.raises(ModelError, match=r"input 'image' expected shape \[1, 1, 64, 64\], got \[1, 1, 32, 32\]"):
        ort.run({"image": np.zeros((1, 1, 32, 32), np.float32)})
    with pytest.raises(ModelError, match="missing"):
        ort.run({})
    # float64 and non-contiguous arrays are converted, not refused
    out = ort.run({"image": np.zeros((1, 1, 64, 128))[..., ::2]})
    assert out["logits"].shape == (1, 10)


def test_missing_and_broken_models_name_the_path(tmp_path, exported):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelError, match=f"model not found: {missing}"):
        load_backend(missing)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match=str(broken)):
        load_backend(broken, "onnxruntime:cpu")
    with pytest.raises(ModelError, match=str(broken)):
        load_backend(broken)  # auto: the last candidate's error is the model's
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ModelError, match="unknown model file type"):
        load_backend(tmp_path / "x.txt")
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(exported["testnet_linear"].read_bytes())
    with pytest.raises(ModelError, match="needs the PyTorch checkpoint"):
        load_backend(bare, "torch:cpu")


def test_modified_onnx_is_refused(tmp_path, exported):
    for suffix in (".onnx", ".yaml", ".pt"):
        (tmp_path / f"m{suffix}").write_bytes(exported["testnet_linear"].with_suffix(suffix).read_bytes())
    (tmp_path / "m.yaml").write_text((tmp_path / "m.yaml").read_text().replace("testnet_linear.", "m."))
    assert load_backend(tmp_path / "m.yaml", "onnxruntime:cpu").run  # loads through its card
    with (tmp_path / "m.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match=r"sha256 of .*m\.onnx .* modified"):
        load_backend(tmp_path / "m.onnx", "onnxruntime:cpu")


def test_unknown_backend_and_precision(exported):
    with pytest.raises(ConfigError, match="unknown backend 'onnx'"):
        load_backend(exported["testnet_linear"], "onnx")
    with pytest.raises(ConfigError, match="unknown precision"):
        load_backend(exported["testnet_linear"], precision="fp64")
    with pytest.raises(ConfigError, match="fp32 models only"):
        load_backend(exported["testnet_linear"], "onnxruntime:cpu", precision="fp16")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        load_backend(exported["testnet_linear"], "torch:cpu", precision="fp16")


# -- availability -----------------------------------------------------------------------------
def simulate(monkeypatch, *, tensorrt: bool, cuda: bool, ort_cuda: bool, onnxruntime: bool = True) -> None:
    providers = (["CUDAExecutionProvider"] if ort_cuda else []) + ["CPUExecutionProvider"]
    monkeypatch.setattr(devices, "tensorrt_available", lambda: tensorrt)
    monkeypatch.setattr(devices, "cuda_available", lambda: cuda)
    monkeypatch.setattr(devices, "onnxruntime_providers", lambda: providers if onnxruntime else [])


class FakeBackend(InferenceBackend):
    def __init__(self, label: str, precision: str) -> None:
        super().__init__()
        self.name, _, flavour = label.partition(":")
        self.device = "cpu" if flavour == "cpu" else "cuda:0"
        self.precision = precision
        self.details = {"provider": flavour or "cuda"}
        self.inputs, self.outputs = [], []

    def run(self, feeds):
        return {}


@pytest.mark.parametrize(
    "tensorrt, cuda, ort_cuda, expected",
    [
        (True, True, True, "tensorrt:cuda"),
        (True, False, True, "onnxruntime:cpu"),  # TensorRT without a GPU is no use
        (False, True, True, "onnxruntime:cuda"),
        (False, True, False, "onnxruntime:cpu"),
        (False, False, False, "onnxruntime:cpu"),
        (True, True, False, "tensorrt:cuda"),
    ],
)
def test_auto_order(monkeypatch, exported, caplog, tensorrt, cuda, ort_cuda, expected):
    """Which backend auto takes for each combination (loaders faked: only the choice is tested)."""
    simulate(monkeypatch, tensorrt=tensorrt, cuda=cuda, ort_cuda=ort_cuda)
    tried = []

    def fake_load(label, files, **kwargs):
        tried.append(label)
        return FakeBackend(label, kwargs["precision"])

    monkeypatch.setattr(selection, "_load", fake_load)
    with caplog.at_level(logging.INFO, logger="deep_vision.inference.selection"):
        backend = load_backend(exported["testnet_linear"])
    assert backend.label == expected and tried == [expected.replace("tensorrt:cuda", "tensorrt")]
    assert f"backend auto: using {tried[0]}" in caplog.text
    if expected != "tensorrt:cuda":
        assert "tensorrt:" in backend.selection  # says why TensorRT was skipped


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available")
def test_auto_falls_back_for_real_when_gpu_backends_fail(monkeypatch, exported, caplog):
    """TensorRT and ONNX Runtime CUDA claimed present: both really fail here, auto ends on the CPU."""
    simulate(monkeypatch, tensorrt=True, cuda=True, ort_cuda=True)
    with caplog.at_level(logging.INFO, logger="deep_vision.inference.selection"):
        backend = load_backend(exported["testnet_conv"], precision="fp16")
    assert backend.label == "onnxruntime:cpu" and backend.precision == "fp32"
    assert "tensorrt:" in backend.selection and "onnxruntime:cuda:" in backend.selection
    assert "tensorrt failed" in caplog.text and "runs fp32, not the requested fp16" in caplog.text
    out = backend.run({"image": np.zeros((1, 1, 64, 64), np.float32)})
    assert out["logits"].shape == (1, 10)


def test_auto_with_nothing_usable(monkeypatch, exported):
    simulate(monkeypatch, tensorrt=False, cuda=False, ort_cuda=False, onnxruntime=False)
    with pytest.raises(BackendUnavailableError, match="nothing can run .*onnxruntime is not installed|"
                                                      "onnxruntime package is not installed"):
        load_backend(exported["testnet_linear"])


def test_auto_on_a_checkpoint_uses_torch(exported, tmp_path):
    pt = load_backend(exported["testnet_linear"].with_suffix(".pt"))
    assert pt.label == "torch:cpu"


@pytest.mark.parametrize("backend, message", [
    ("tensorrt", "tensorrt Python package is not installed"),
    ("onnxruntime:cuda", "no CUDAExecutionProvider"),
    ("onnxruntime:tensorrt", "no TensorrtExecutionProvider"),
    ("torch:cuda", "torch sees no CUDA GPU"),
])
def test_explicit_unavailable_backend_says_what_is_missing(monkeypatch, exported, backend, message):
    simulate(monkeypatch, tensorrt=False, cuda=False, ort_cuda=False)
    with pytest.raises(BackendUnavailableError, match=message) as info:
        load_backend(exported["testnet_linear"], backend)
    assert f"backend {backend} requested" in str(info.value) and "onnxruntime:cpu" in str(info.value)


def test_tensorrt_claimed_but_not_installed(monkeypatch, exported):
    """Explicit tensorrt with availability faked: the real import fails with an install hint."""
    simulate(monkeypatch, tensorrt=True, cuda=True, ort_cuda=False)
    with pytest.raises(BackendUnavailableError, match="tensorrt package is not importable.*TensorRT 10"):
        load_backend(exported["testnet_linear"], "tensorrt")


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available")
def test_ort_cuda_claimed_but_absent_is_refused_not_silently_cpu(monkeypatch, exported):
    simulate(monkeypatch, tensorrt=False, cuda=True, ort_cuda=True)
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider did not initialise"):
        load_backend(exported["testnet_linear"], "onnxruntime:cuda")
