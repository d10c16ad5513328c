"""A folder of built TensorRT engines, keyed by everything that makes an engine valid.

An engine only runs on the TensorRT version and GPU it was built for, so the key is
ONNX sha256 + TensorRT version + GPU name + compute capability + precision + input
shapes. Each engine file starts with a small header (magic, JSON with the key, the
payload size and its sha256), so a truncated or foreign file is detected, deleted and
rebuilt instead of crashing the runtime.

Concurrency: files are written to a temp file in the same folder, fsynced and renamed
(readers see the old file or the complete new one, never half of one); builds take an
exclusive ``fcntl.flock`` on a per-entry lock file, so two processes starting at once
build once (the second waits, then reads the first one's engine). The kernel releases
the lock when a builder dies; its leftover temp file is removed by the next builder.

The builder is a parameter (``Callable[[Path], bytes]``: ONNX path → serialized
engine), so this logic is tested without TensorRT.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deep_vision.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

MAGIC = b"DVENGIN1"
_HEADER = struct.Struct("<8sI")  # magic, length of the JSON metadata that follows
ENV_CACHE_DIR = "DEEP_VISION_ENGINE_CACHE"


def default_cache_dir() -> Path:
    """``$DEEP_VISION_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/deep_vision/engines`` (``~/.cache/...``)."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "deep_vision" / "engines"


@dataclass(frozen=True)
class EngineKey:
    """What an engine depends on. Two keys are equal exactly when an engine built for one runs the other."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]  # (input name, shape), sorted by name

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shapes"] = {name: list(shape) for name, shape in self.input_shapes}
        return data

    @property
    def digest(self) -> str:
        """sha256 (hex) of the key's canonical JSON."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def cache_key(onnx_sha256: str, tensorrt_version: str, gpu_name: str, compute_capability: str, precision: str,
              input_shapes: Mapping[str, Sequence[int]]) -> EngineKey:
    """Build an :class:`EngineKey`; every part must be non-empty."""
    parts = {"onnx_sha256": onnx_sha256, "tensorrt_version": tensorrt_version, "gpu_name": gpu_name,
             "compute_capability": compute_capability, "precision": precision}
    empty = [k for k, v in parts.items() if not v]
    if empty or not input_shapes:
        raise ConfigError(f"engine cache key: empty part(s) {empty + ([] if input_shapes else ['input_shapes'])}")
    shapes = tuple(sorted((str(n), tuple(int(d) for d in s)) for n, s in input_shapes.items()))
    return EngineKey(input_shapes=shapes, **{k: str(v) for k, v in parts.items()})


@dataclass
class CachedEngine:
    """A serialized engine from the cache: where it lies, its bytes, and whether this call built it."""

    path: Path
    data: bytes
    key: EngineKey
    built: bool


class CorruptEngineError(ModelError):
    """An engine file is truncated, foreign or built for another key."""


def _fsync(fd: int) -> None:
    os.fsync(fd)


class EngineCache:
    """Engines under ``folder`` (created on first write).

    Args:
        folder: cache folder; :func:`default_cache_dir` when None.
        lock_timeout_s: how long to wait for another process's build before giving up.
    """

    def __init__(self, folder: str | Path | None = None, *, lock_timeout_s: float = 3600.0) -> None:
        self.folder = Path(folder) if folder is not None else default_cache_dir()
        self.lock_timeout_s = lock_timeout_s

    # -- paths -----------------------------------------------------------------------------
    def entry_path(self, key: EngineKey, name: str = "model") -> Path:
        """``<folder>/<name>-<precision>-<digest[:16]>.engine``."""
        return self.folder / f"{name}-{key.precision}-{key.digest[:16]}.engine"

    # -- reading ---------------------------------------------------------------------------
    @staticmethod
    def read(path: Path, key: EngineKey) -> bytes:
        """The engine bytes of ``path``; :class:`CorruptEngineError` says what is wrong with it."""
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise CorruptEngineError(f"engine {path} is unreadable: {exc}") from exc
        if len(raw) < _HEADER.size:
            raise CorruptEngineError(f"engine {path} is truncated ({len(raw)} bytes, no header)")
        magic, meta_len = _HEADER.unpack_from(raw)
        if magic != MAGIC:
            raise CorruptEngineError(f"engine {path} is not a deep_vision engine file (magic {magic!r})")
        start = _HEADER.size + meta_len
        try:
            meta = json.loads(raw[_HEADER.size:start].decode())
            size, checksum = int(meta["payload_size"]), str(meta["payload_sha256"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise CorruptEngineError(f"engine {path} has a damaged header: {exc}") from exc
        if meta.get("key_digest") != key.digest:
            raise CorruptEngineError(f"engine {path} was built for another key: {meta.get('key')}")
        payload = raw[start:]
        if len(payload) != size:
            raise CorruptEngineError(f"engine {path} is truncated: {len(payload)} of {size} payload bytes")
        if hashlib.sha256(payload).hexdigest() != checksum:
            raise CorruptEngineError(f"engine {path} is corrupt: payload sha256 does not match its header")
        return payload

    def load(self, key: EngineKey, name: str = "model") -> bytes | None:
        """The cached engine for ``key``, or None when it is absent or invalid (left in place)."""
        path = self.entry_path(key, name)
        if not path.exists():
            return None
        try:
            return self.read(path, key)
        except CorruptEngineError as exc:
            logger.warning("%s", exc)
            return None

    # -- writing ---------------------------------------------------------------------------
    def store(self, key: EngineKey, data: bytes, name: str = "model") -> Path:
        """Write ``data`` for ``key`` atomically: temp file in the same folder, fsync, rename."""
        if not data:
            raise ModelError(f"refusing to cache an empty engine for {name}")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.entry_path(key, name)
        meta = json.dumps({"key": key.to_dict(), "key_digest": key.digest, "payload_size": len(data),
                           "payload_sha256": hashlib.sha256(data).hexdigest(), "created": time.time()}).encode()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as f:
                f.write(_HEADER.pack(MAGIC, len(meta)))
                f.write(meta)
                f.write(data)
                f.flush()
                _fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            _fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
        return path

    @contextlib.contextmanager
    def lock(self, path: Path) -> Iterator[None]:
        """Exclusive lock for building ``path`` (``fcntl.flock`` on ``<path>.lock``), waiting up to the timeout."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock_path = path.with_name(path.name + ".lock")
        deadline = time.monotonic() + self.lock_timeout_s
        with lock_path.open("a+") as f:
            waited = False
            while True:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waited:
                        logger.info("waiting for another process building %s", path.name)
                        waited = True
                    if time.monotonic() > deadline:
                        raise ModelError(
                            f"timed out after {self.lock_timeout_s:g} s waiting for the build lock {lock_path}"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    # -- the one call users make -----------------------------------------------------------
    def get_or_build(self, onnx_path: str | Path, builder: Callable[[Path], bytes], *, tensorrt_version: str,
                     gpu_name: str, compute_capability: str, precision: str,
                     input_shapes: Mapping[str, Sequence[int]], onnx_sha256: str | None = None,
                     name: str | None = None) -> CachedEngine:
        """The engine for ``onnx_path`` under this key, built with ``builder(onnx_path)`` when missing or invalid.

        ``onnx_sha256`` is computed from the file when not given; ``name`` (default: the
        ONNX file's stem) prefixes the engine file name.
        """
        from deep_vision.inference.modelcard import file_sha256

        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise ModelError(f"ONNX model not found: {onnx_path}")
        key = cache_key(onnx_sha256 or file_sha256(onnx_path), tensorrt_version, gpu_name, compute_capability,
                        precision, input_shapes)
        return self.get_or_build_key(key, onnx_path, builder, name or onnx_path.stem)

    def get_or_build_key(self, key: EngineKey, onnx_path: Path, builder: Callable[[Path], bytes],
                         name: str) -> CachedEngine:
        path = self.entry_path(key, name)
        data = self.load(key, name)  # fast path without the lock: files are only ever replaced whole
        if data is not None:
            logger.debug("engine cache hit: %s", path)
            return CachedEngine(path, data, key, built=False)
        with self.lock(path):
            # Another process may have built it while we waited for the lock.
            if path.exists():
                try:
                    return CachedEngine(path, self.read(path, key), key, built=False)
                except CorruptEngineError as exc:
                    logger.warning("%s; deleting it and building again", exc)
                    path.unlink(missing_ok=True)
            for stale in self.folder.glob(f".{path.name}.*.tmp"):  # left by a builder that died
                logger.info("removing %s, left by an interrupted build", stale.name)
                stale.unlink(missing_ok=True)
            logger.info("building engine %s from %s (%s)", path.name, onnx_path, key.precision)
            t0 = time.perf_counter()
            data = builder(onnx_path)
            if not isinstance(data, (bytes, bytearray, memoryview)) or not len(data):
                raise ModelError(f"engine builder returned no engine for {onnx_path}")
            data = bytes(data)
            self.store(key, data, name)
            logger.info("built %s in %.1f s (%.1f MB)", path.name, time.perf_counter() - t0, len(data) / 1e6)
            return CachedEngine(path, data, key, built=True)

    def entries(self) -> list[Path]:
        """Engine files in the folder."""
        return sorted(self.folder.glob("*.engine")) if self.folder.is_dir() else []
