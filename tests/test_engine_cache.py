"""TensorRT engine cache with a fake builder (TensorRT is not installable here): key, atomic writes,
corrupt files, killed writers, concurrent builders; INT8 calibration data from a bag; lazy tensorrt import."""

from __future__ import annotations

import dataclasses
import multiprocessing
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from deep_vision.errors import BackendUnavailableError, ConfigError, ModelError
from deep_vision.inference import engine_cache
from deep_vision.inference.backend import TensorSpec
from deep_vision.inference.engine_cache import EngineCache, cache_key, default_cache_dir

KEY_PARTS = dict(tensorrt_version="10.15.1", gpu_name="NVIDIA Jetson Orin", compute_capability="8.7",
                 precision="fp16", input_shapes={"patches": (1, 2, 128, 128)})


@pytest.fixture
def onnx_file(tmp_path) -> Path:
    path = tmp_path / "net.onnx"
    path.write_bytes(b"pretend this is an ONNX model")
    return path


class CountingBuilder:
    """A fake engine builder: deterministic bytes from the ONNX file, counts its calls."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls = 0
        self.delay_s = delay_s

    def __call__(self, onnx_path: Path) -> bytes:
        self.calls += 1
        time.sleep(self.delay_s)
        return b"ENGINE:" + onnx_path.read_bytes() * 100


def test_key_changes_with_each_component():
    base = cache_key("a" * 64, **KEY_PARTS)
    variants = {
        "onnx_sha256": cache_key("b" * 64, **KEY_PARTS),
        "tensorrt_version": cache_key("a" * 64, **{**KEY_PARTS, "tensorrt_version": "10.14.0"}),
        "gpu_name": cache_key("a" * 64, **{**KEY_PARTS, "gpu_name": "NVIDIA GeForce RTX 4090"}),
        "compute_capability": cache_key("a" * 64, **{**KEY_PARTS, "compute_capability": "8.9"}),
        "precision": cache_key("a" * 64, **{**KEY_PARTS, "precision": "int8"}),
        "input_shapes": cache_key("a" * 64, **{**KEY_PARTS, "input_shapes": {"patches": (4, 2, 128, 128)}}),
    }
    digests = {base.digest} | {k.digest for k in variants.values()}
    assert len(digests) == 1 + len(variants)
    assert {f.name for f in dataclasses.fields(base)} == set(variants)
    # same parts, same key (input order does not matter)
    two = {"a": (1, 2), "b": (3,)}
    assert cache_key("a" * 64, **{**KEY_PARTS, "input_shapes": two}) == cache_key(
        "a" * 64, **{**KEY_PARTS, "input_shapes": dict(reversed(two.items()))})
    with pytest.raises(ConfigError, match="gpu_name"):
        cache_key("a" * 64, **{**KEY_PARTS, "gpu_name": ""})


def test_build_once_then_hit(tmp_path, onnx_file):
    cache = EngineCache(tmp_path / "cache")
    builder = CountingBuilder()
    first = cache.get_or_build(onnx_file, builder, **KEY_PARTS)
    second = cache.get_or_build(onnx_file, builder, **KEY_PARTS)
    assert builder.calls == 1 and first.built and not second.built
    assert first.data == second.data == builder(onnx_file) and first.path == second.path
    assert first.path.parent == tmp_path / "cache" and first.path.name.startswith("net-fp16-")
    assert cache.entries() == [first.path]
    # another precision is another engine
    third = cache.get_or_build(onnx_file, builder, **{**KEY_PARTS, "precision": "fp32"})
    assert third.built and third.path != first.path and len(cache.entries()) == 2
    # a changed ONNX file is another engine too
    onnx_file.write_bytes(b"retrained")
    assert cache.get_or_build(onnx_file, builder, **KEY_PARTS).built


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "flip_byte", "other_key"])
def test_corrupt_engine_is_deleted_and_rebuilt(tmp_path, onnx_file, caplog, damage):
    cache = EngineCache(tmp_path)
    builder = CountingBuilder()
    entry = cache.get_or_build(onnx_file, builder, **KEY_PARTS)
    raw = entry.path.read_bytes()
    if damage == "truncate":  # e.g. a full disk, or a copy cut short
        entry.path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        entry.path.write_bytes(b"\x00" * 64)
    elif damage == "empty":
        entry.path.write_bytes(b"")
    elif damage == "flip_byte":
        entry.path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    else:  # an engine built for another key, copied under this name
        other = cache.get_or_build(onnx_file, builder, **{**KEY_PARTS, "gpu_name": "other GPU"})
        entry.path.write_bytes(other.path.read_bytes())
        builder.calls -= 1
    again = cache.get_or_build(onnx_file, builder, **KEY_PARTS)
    assert again.built and builder.calls == 2 and again.data == entry.data
    assert cache.read(again.path, again.key) == entry.data
    assert "building again" in caplog.text


def test_unreadable_engine_is_rebuilt(tmp_path, onnx_file):
    cache = EngineCache(tmp_path)
    builder = CountingBuilder()
    entry = cache.get_or_build(onnx_file, builder, **KEY_PARTS)
    entry.path.unlink()
    entry.path.mkdir()  # reading a folder fails with OSError: "unreadable"
    with pytest.raises(ModelError, match="unreadable"):
        cache.read(entry.path, entry.key)
    entry.path.rmdir()
    assert cache.get_or_build(onnx_file, builder, **KEY_PARTS).built


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from deep_vision.inference import engine_cache
    from deep_vision.inference.engine_cache import EngineCache

    def die_before_rename(src, dst):  # the process is killed after writing the temp file, before the rename
        os.kill(os.getpid(), signal.SIGKILL)

    engine_cache.os.replace = die_before_rename
    parts = dict(tensorrt_version="10.15.1", gpu_name="NVIDIA Jetson Orin", compute_capability="8.7",
                 precision="fp16", input_shapes={"patches": (1, 2, 128, 128)})
    EngineCache(sys.argv[1]).get_or_build(Path(sys.argv[2]), lambda p: b"ENGINE" * 1000, **parts)
""")


def test_atomic_write_survives_a_killed_writer(tmp_path, onnx_file):
    cache_dir = tmp_path / "cache"
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(cache_dir), str(onnx_file)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == -9, result.stderr
    assert not list(cache_dir.glob("*.engine")), "no engine file may appear from a killed writer"
    leftovers = list(cache_dir.glob(".*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 6000  # the dead writer's complete temp file
    # the lock died with the process: the next start-up builds, cleans up, and gets a valid engine
    cache = EngineCache(cache_dir, lock_timeout_s=5)
    builder = CountingBuilder()
    entry = cache.get_or_build(onnx_file, builder, **KEY_PARTS)
    assert entry.built and builder.calls == 1 and not list(cache_dir.glob(".*.tmp"))
    assert cache.read(entry.path, entry.key) == entry.data


def _build_in_process(cache_dir: str, onnx_path: str, counter: str, queue) -> None:
    def slow_builder(path: Path) -> bytes:
        with open(counter, "a") as f:
            f.write("build\n")
        time.sleep(0.6)  # long enough that every process arrives while the first builds
        return b"ENGINE:" + path.read_bytes()

    entry = EngineCache(cache_dir, lock_timeout_s=30).get_or_build(Path(onnx_path), slow_builder, **KEY_PARTS)
    queue.put((entry.built, entry.data))


def test_concurrent_builders_build_once(tmp_path, onnx_file):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    counter = tmp_path / "builds.txt"
    procs = [ctx.Process(target=_build_in_process, args=(str(tmp_path / "cache"), str(onnx_file), str(counter), queue))
             for _ in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert counter.read_text().count("build") == 1
    assert sorted(built for built, _ in results) == [False, False, False, True]
    assert len({data for _, data in results}) == 1


def test_lock_timeout_and_empty_engine(tmp_path, onnx_file):
    cache = EngineCache(tmp_path, lock_timeout_s=0.3)
    key = cache_key("a" * 64, **KEY_PARTS)
    with cache.lock(cache.entry_path(key, "net")):
        with pytest.raises(ModelError, match="timed out after 0.3 s waiting for the build lock"):
            cache.get_or_build(onnx_file, CountingBuilder(), onnx_sha256="a" * 64, **KEY_PARTS)
    with pytest.raises(ModelError, match="builder returned no engine"):
        cache.get_or_build(onnx_file, lambda p: b"", **KEY_PARTS)
    with pytest.raises(ModelError, match="ONNX model not found"):
        cache.get_or_build(tmp_path / "missing.onnx", CountingBuilder(), **KEY_PARTS)
    assert not cache.entries()


def test_cache_folder_is_configurable(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEP_VISION_ENGINE_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env" and EngineCache().folder == tmp_path / "env"
    monkeypatch.delenv("DEEP_VISION_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "deep_vision" / "engines"
    assert EngineCache(tmp_path / "explicit").folder == tmp_path / "explicit"


def test_tensorrt_is_imported_lazily():
    script = ("import sys, deep_vision.inference.tensorrt_backend, deep_vision.inference.calibration, "
              "deep_vision.inference.selection; assert 'tensorrt' not in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_build_engine_without_tensorrt_says_what_is_missing(onnx_file):
    from deep_vision.inference.tensorrt_backend import build_engine

    with pytest.raises(BackendUnavailableError, match="tensorrt package is not importable"):
        build_engine(onnx_file, precision="fp16", input_shapes={"x": (1, 4)})


def test_cli_build_engine_without_tensorrt(tmp_path, capsys):
    from deep_vision.cli.main import main

    assert main(["build-engine", str(tmp_path / "missing.onnx")]) == 2
    assert "model not found" in capsys.readouterr().err


# -- INT8 calibration -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_bag(tmp_path_factory) -> Path:
    from deep_vision.cli.main import main

    folder = tmp_path_factory.mktemp("calib")
    (folder / "world.yaml").write_text(yaml.safe_dump({"scene": {"ground_texel_m": 0.08, "facade_texel_m": 0.08,
                                                                  "margin_m": 25.0}}))
    bag = folder / "bag"
    assert main(["synth", "--out", str(bag), "--frames", "8", "--size", "160x64", "--storage", "sqlite3",
                 "--config", str(folder / "world.yaml"), "--workers", "1"]) == 0
    return bag


class HostBuffer:
    """Stands in for a CUDA tensor: keeps the array alive and exposes its address."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = np.ascontiguousarray(array)

    def data_ptr(self) -> int:
        return self.array.ctypes.data


def test_calibrator_reads_bag_frames_and_cache(small_bag, tmp_path):
    from deep_vision.inference.calibration import BagCalibrationData, CalibratorCore
    from deep_vision.models import build_model

    model = build_model("testnet_conv")
    specs = [TensorSpec("image", (2, 1, 64, 64))]  # batch 2: two frames per batch
    data = BagCalibrationData(small_bag, model.inputs_from_frames, specs, stride=2, max_batches=10)
    batches = list(data.batches())
    assert len(batches) == 2 and batches[0]["image"].shape == (2, 1, 64, 64)  # frames 0, 2, 4, 6
    assert 0.0 <= batches[0]["image"].min() and batches[0]["image"].max() <= 1.0 and batches[0]["image"].std() > 0.01

    cal = CalibratorCore(data, tmp_path / "calib" / "net.int8.calib", to_device=HostBuffer)
    assert cal.get_batch_size() == 2 and cal.read_calibration_cache() is None
    pointers = cal.get_batch(["image"])
    assert len(pointers) == 1 and isinstance(pointers[0], int)
    buffer = cal._device["image"].array
    np.testing.assert_array_equal(buffer, batches[0]["image"])
    assert cal.get_batch(["image"]) is not None and cal.get_batch(["image"]) is None and cal.batches_served == 2
    cal.write_calibration_cache(b"TRT-8601-EntropyCalibration2\nimage: 3c010a14\n")
    assert cal.read_calibration_cache() == b"TRT-8601-EntropyCalibration2\nimage: 3c010a14\n"
    with pytest.raises(ConfigError, match="lacks input"):
        CalibratorCore(data, tmp_path / "x", to_device=HostBuffer).get_batch(["other"])


def test_calibration_pairs_and_errors(small_bag):
    from deep_vision.errors import BagError
    from deep_vision.inference.calibration import BagCalibrationData

    def pair(frames):  # a network on frame pairs (window 2), like HomographyNet
        assert len(frames) == 2
        return {"patches": np.stack([f[:32, :32] for f in frames])[None].astype(np.float32)}

    data = BagCalibrationData(small_bag, pair, [TensorSpec("patches", (1, 2, 32, 32))], window=2, stride=1)
    assert len(list(data.batches())) == 7
    # a preprocess may also return several feeds per call (e.g. one per consecutive pair)
    twice = BagCalibrationData(small_bag, lambda frames: [pair(frames), pair(frames)],
                               [TensorSpec("patches", (1, 2, 32, 32))], window=2, stride=1)
    assert len(list(twice.batches())) == 14
    with pytest.raises(BagError, match="no calibration batch"):
        list(BagCalibrationData(small_bag, pair, [TensorSpec("patches", (1, 2, 32, 32))], window=9).batches())
    with pytest.raises(ConfigError, match="static input shapes"):
        BagCalibrationData(small_bag, pair, [TensorSpec("patches", ("batch", 2, 32, 32))])
    with pytest.raises(ConfigError, match="takes \\[1, 2, 16, 16\\]"):
        list(BagCalibrationData(small_bag, pair, [TensorSpec("patches", (1, 2, 16, 16))], window=2).batches())


def test_int8_calibrator_needs_tensorrt(small_bag, tmp_path):
    from deep_vision.inference.calibration import make_int8_calibrator

    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        make_int8_calibrator(object(), tmp_path / "c.calib")


def test_fsync_hook_is_used(tmp_path, onnx_file, monkeypatch):
    """Writes are fsynced (file and folder) before they count as done."""
    calls = []
    monkeypatch.setattr(engine_cache, "_fsync", lambda fd: calls.append(fd))
    EngineCache(tmp_path).get_or_build(onnx_file, CountingBuilder(), **KEY_PARTS)
    assert len(calls) == 2
