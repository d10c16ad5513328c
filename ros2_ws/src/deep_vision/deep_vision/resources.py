"""Where shipped files live: models and parameter files, in a source tree or a ROS install."""

from __future__ import annotations

import os
from pathlib import Path

from deep_vision.errors import ModelError

PACKAGE = "deep_vision"


def _candidate_roots() -> list[Path]:
    roots: list[Path] = []
    env = os.environ.get("DEEP_VISION_MODELS")
    if env:
        roots.append(Path(env))
    try:  # a colcon install: share/deep_vision/models
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )

        try:
            roots.append(Path(get_package_share_directory(PACKAGE)) / "models")
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    # A source checkout: <repo>/models beside ros2_ws/.
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "models").is_dir() and (parent / "ros2_ws").is_dir():
            roots.append(parent / "models")
            break
    return roots


def default_model_path(name: str) -> Path:
    """``<models>/<name>.onnx`` from $DEEP_VISION_MODELS, the ROS share folder or the source tree."""
    roots = _candidate_roots()
    for root in roots:
        path = root / f"{name}.onnx"
        if path.is_file():
            return path
    searched = ", ".join(str(r) for r in roots) or "nowhere (no models folder found)"
    raise ModelError(f"no shipped model {name}.onnx; searched {searched}. Set the model_path parameter "
                     "or DEEP_VISION_MODELS")


def default_params_path() -> Path:
    """The shipped ``config/perception.yaml`` (ROS share folder or source tree), beside the models folder."""
    roots = _candidate_roots()
    for root in roots:
        path = root.parent / "config" / "perception.yaml"
        if path.is_file():
            return path
    searched = ", ".join(str(r.parent / "config") for r in roots) or "nowhere"
    raise ModelError(f"no shipped config/perception.yaml; searched {searched}. Pass --params")
