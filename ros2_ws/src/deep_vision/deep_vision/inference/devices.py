"""What this machine can run: CUDA, TensorRT, ONNX Runtime providers, CPU and GPU names.

Small functions on purpose: backend selection calls them through this module
(``devices.cuda_available()``), so tests simulate any machine by monkeypatching them.
Nothing here imports tensorrt; torch and onnxruntime are imported only when asked.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger(__name__)


def tensorrt_available() -> bool:
    """Whether the ``tensorrt`` Python package is installed (checked without importing it)."""
    return importlib.util.find_spec("tensorrt") is not None


def tensorrt_version() -> str:
    """Version of the installed TensorRT (imports it); ``""`` when it is absent."""
    if not tensorrt_available():
        return ""
    import tensorrt

    return str(tensorrt.__version__)


def torch_available() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # an import hook refusing torch; ValueError: sys.modules["torch"] is None
        return False


def cuda_available() -> bool:
    """Whether a CUDA GPU is usable: through torch when installed, else by the NVIDIA driver's device files."""
    if torch_available():
        import torch

        return bool(torch.cuda.is_available())
    return Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/nvidia0").exists()


def onnxruntime_providers() -> list[str]:
    """Execution providers of the installed ONNX Runtime build (``[]`` without ONNX Runtime)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def gpu_name(device: int = 0) -> str:
    """Name of CUDA device ``device`` (``""`` without a GPU or without torch)."""
    if not (torch_available() and cuda_available()):
        return ""
    import torch

    return str(torch.cuda.get_device_name(device))


def compute_capability(device: int = 0) -> str:
    """Compute capability of CUDA device ``device`` as ``"8.6"`` (``""`` without a GPU or without torch)."""
    if not (torch_available() and cuda_available()):
        return ""
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return f"{major}.{minor}"


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
