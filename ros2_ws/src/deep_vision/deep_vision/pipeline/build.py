"""Estimators from the nodes' parameters (``config/perception.yaml`` sections), without ROS.

The nodes and ``deep-vision evaluate BAG`` / ``deep-vision demo`` build their
estimators here from the same parameter dictionaries, so an evaluation runs
exactly what ``ros2 launch`` would run. ``p`` is one node's parameters
(``{name: value}``); keys missing from it take the node's declared default
(``config/perception.yaml`` lists every parameter, and a test keeps it so).
A missing or broken model raises :class:`ConfigError` naming the parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deep_vision.errors import ConfigError, DeepVisionError
from deep_vision.geometry.camera import PinholeCamera


def _model_path(p: dict[str, Any], default_name: str) -> str:
    path = p.get("model_path") or ""
    if path:
        return str(path)
    from deep_vision.resources import default_model_path

    return str(default_model_path(default_name))


def _threads(p: dict[str, Any]) -> int | None:
    return int(p.get("threads") or 0) or None


def build_homography(p: dict[str, Any], node: str = "homography_node"):
    """(HomographyEstimator, FramePairer) from homography_node's parameters."""
    from deep_vision.estimators.homography import HomographyEstimator
    from deep_vision.estimators.stream import FramePairer

    path = ""
    try:
        path = _model_path(p, "homography")
        estimator = HomographyEstimator.from_model(
            path, backend=p.get("backend", "auto"), refine=bool(p.get("refine", True)), threads=_threads(p),
            network_passes=int(p.get("network_passes", 1)), refine_width=int(p.get("refine_width", 256)),
            ecc_iterations=int(p.get("ecc_iterations", 30)), ecc_levels=int(p.get("ecc_levels", 3)),
            ecc_epsilon=float(p.get("ecc_epsilon", 1e-3)),
            min_correlation=float(p.get("min_correlation", 0.6)))
    except DeepVisionError as exc:
        raise ConfigError(f"{node}: parameter 'model_path' ({path or 'default'}): {exc}") from exc
    return estimator, FramePairer(max_gap_s=float(p.get("max_gap_s", 1.0)))


def build_recognizer(p: dict[str, Any], node: str = "place_recognition_node"):
    """PlaceRecognizer (network or sad) from place_recognition_node's parameters."""
    from deep_vision.estimators.place import PlaceRecognizer

    if p.get("descriptor", "network") == "sad":
        try:
            return PlaceRecognizer.classical("sad", sad_size=(int(p.get("sad_width", 64)), int(p.get("sad_height", 32))))
        except ConfigError as exc:
            raise ConfigError(f"{node}: parameters 'sad_width'/'sad_height': {exc}") from exc
    path = ""
    try:
        path = _model_path(p, "place")
        return PlaceRecognizer.from_model(path, backend=p.get("backend", "auto"), threads=_threads(p))
    except DeepVisionError as exc:
        raise ConfigError(f"{node}: parameter 'model_path' ({path or 'default'}): {exc}") from exc


def build_loop_detector(p: dict[str, Any], node: str = "place_recognition_node", *, recognizer=None, database=None):
    """LoopClosureDetector (recognizer, keyframes, verification) from place_recognition_node's parameters."""
    from deep_vision.estimators.loop_closure import (
        GeometricVerifier,
        KeyframeSelector,
        LoopClosureDetector,
    )

    recognizer = recognizer or build_recognizer(p, node)
    verifier = None
    if p.get("verify", True):
        try:
            verifier = GeometricVerifier(p.get("features", "orb"), int(p.get("max_features", 1000)),
                                         ransac_px=float(p.get("ransac_px", 2.0)),
                                         min_inliers=int(p.get("min_inliers", 25)),
                                         min_inlier_ratio=float(p.get("min_inlier_ratio", 0.25)))
        except ConfigError as exc:
            raise ConfigError(f"{node}: geometric check parameters: {exc}") from exc
    try:
        keyframes = KeyframeSelector(float(p.get("keyframe_interval_s", 0.5)), float(p.get("keyframe_distance_m", 0.0)),
                                     float(p.get("keyframe_max_similarity", 0.0)),
                                     float(p.get("keyframe_min_interval_s", 0.0)))
    except ConfigError as exc:
        raise ConfigError(f"{node}: keyframe parameters: {exc}") from exc
    return LoopClosureDetector(
        recognizer, database=database, top_k=int(p.get("top_k", 5)), min_similarity=float(p.get("min_similarity", 0.0)),
        exclude_recent_s=float(p.get("exclude_recent_s", 20.0)), verifier=verifier, keyframes=keyframes,
        geolocate_verified_only=bool(p.get("geolocate_verified_only", True)),
        approximate_above=int(p.get("approximate_above", 50000)))


#: Camera optical frame on a KITTI-like car: 1.65 m above base_link, looking forward (``camera_pose`` default).
DEFAULT_CAMERA_POSE = [0.0, 0.0, 1.65, 0.5, -0.5, 0.5, -0.5]


def camera_pose_transform(pose: Any) -> np.ndarray:
    """T_base_cam of a ``camera_pose`` parameter (x y z qx qy qz qw)."""
    from deep_vision.geometry.transforms import make_transform, rotation_from_quaternion

    pose = [float(v) for v in pose]
    if len(pose) != 7 or not np.isclose(np.linalg.norm(pose[3:]), 1.0, atol=1e-3):
        raise ConfigError("parameter 'camera_pose' must be x y z qx qy qz qw with a unit quaternion")
    return make_transform(rotation_from_quaternion(pose[3:]), pose[:3])


def ground_scale_from_params(p: dict[str, Any], T_base_cam: np.ndarray | None = None):
    """GroundPlaneScale from odometry_node's ``camera_pose`` (or ``T_base_cam``, e.g. from /tf_static) and
    ``camera_height_m`` (0: the camera's height above base_link)."""
    from deep_vision.estimators.ground_scale import GroundPlaneScale

    if T_base_cam is None:
        T_base_cam = camera_pose_transform(p.get("camera_pose", DEFAULT_CAMERA_POSE))
    return GroundPlaneScale.from_extrinsic(T_base_cam, float(p.get("camera_height_m", 0.0)))


def scale_settings(p: dict[str, Any], T_base_cam: np.ndarray | None = None, node: str = "odometry_node"):
    """odometry_node's scale parameters, checked: (scale_source, its GroundPlaneScale or None, scale_window)."""
    scale_source = p.get("scale_source", "network")
    if scale_source not in ("network", "ground"):
        raise ConfigError(f"{node}: parameter 'scale_source' must be network or ground, got {scale_source!r}")
    if scale_source == "ground" and p.get("mode", "network") != "hybrid":
        raise ConfigError(f"{node}: parameter 'scale_source' is ground, which needs 'mode' hybrid")
    try:
        ground = ground_scale_from_params(p, T_base_cam) if scale_source == "ground" else None
        scale_window = int(p.get("scale_window", 1))
        if scale_window < 1:
            raise ConfigError(f"scale_window must be at least 1, got {scale_window}")
    except ConfigError as exc:
        raise ConfigError(f"{node}: parameters 'camera_pose'/'camera_height_m'/'scale_window': {exc}") from exc
    return scale_source, ground, scale_window


def build_odometry(p: dict[str, Any], camera: PinholeCamera | None = None, node: str = "odometry_node"):
    """VisualOdometry from odometry_node's parameters (``mode: hybrid`` needs ``camera``)."""
    from deep_vision.estimators.odometry import VisualOdometry

    mode = p.get("mode", "network")
    if mode == "hybrid" and camera is None:
        raise ConfigError(f"{node}: parameter 'mode' is hybrid, which needs the camera intrinsics (camera_info)")
    scale_source, ground, scale_window = scale_settings(p, node=node)
    path = ""
    try:
        path = _model_path(p, "vo")
        return VisualOdometry.from_model(
            path, backend=p.get("backend", "auto"), threads=_threads(p), camera=camera, mode=mode,
            scale_source=scale_source, ground=ground, scale_window=scale_window,
            trans_rel=float(p.get("trans_noise_rel", 0.03)), trans_abs=float(p.get("trans_noise_abs", 0.01)),
            rot_rel=float(p.get("rot_noise_rel", 0.05)), rot_abs=float(p.get("rot_noise_abs", 0.002)),
            geometry=p.get("geometry", "dense_flow"), track_width=int(p.get("track_width", 400)),
            refine_geometry=bool(p.get("refine_geometry", True)),
            prior_window=int(p.get("prior_window", 20)),
            prior_max_disagreement_deg=float(p.get("prior_max_disagreement_deg", 0.0)))
    except DeepVisionError as exc:
        raise ConfigError(f"{node}: parameter 'model_path' ({path or 'default'}): {exc}") from exc


POSE_GRAPH_KEYS = ("keyframe_distance_m", "keyframe_angle_deg", "loop_max_distance_m", "loop_max_rotation_deg",
                   "loop_max_chi2", "loop_kernel")


def build_pose_graph(p: dict[str, Any], extrinsic: np.ndarray | None = None, node: str = "pose_graph_node"):
    """PoseGraph from pose_graph_node's parameters (the keys in ``POSE_GRAPH_KEYS``)."""
    from deep_vision.estimators.pose_graph import PoseGraph

    kwargs = {k: p[k] for k in POSE_GRAPH_KEYS if k in p}
    try:
        return PoseGraph(extrinsic=extrinsic, **kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{node}: {exc}") from exc


def load_params(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{node name: {parameter: value}}`` of a ROS 2 parameter file (``node: ros__parameters: {...}``);
    a key's namespace part (``/**/``, ``/robot1/``) is dropped: the name is its last component."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    out: dict[str, dict[str, Any]] = {}
    for node, section in data.items():
        name = str(node).strip("/").split("/")[-1]
        if not isinstance(section, dict) or "ros__parameters" not in section:
            raise ConfigError(f"{path}: section {node!r} has no ros__parameters")
        out[name] = dict(section["ros__parameters"] or {})
    return out
