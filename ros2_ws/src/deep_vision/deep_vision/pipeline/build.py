"""Estimators from the nodes' parameters (``config/perception.yaml`` sections), without ROS.

The nodes and ``deep-vision evaluate BAG`` / ``deep-vision demo`` build their
estimators here from the same parameter dictionaries, so an evaluation runs
exactly what ``ros2 launch`` would run. ``p`` is one node's parameters
(``{name: value}``), checked by :func:`deep_vision.params.validate`; keys
missing from it take the node's declared default.
A missing or broken model raises :class:`ConfigError` naming the parameter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deep_vision.errors import ConfigError, DeepVisionError
from deep_vision.geometry.camera import PinholeCamera
from deep_vision.params import validate


def _model_path(p: dict[str, Any], default_name: str) -> str:
    path = p["model_path"] or ""
    if path:
        return str(path)
    return str(_default_model(default_name))


def _default_model(name: str):
    from deep_vision.resources import default_model_path

    return default_model_path(name)


def _threads(p: dict[str, Any]) -> int | None:
    return int(p["threads"] or 0) or None


def build_homography(p: dict[str, Any], node: str = "homography_node"):
    """(HomographyEstimator, FramePairer) from homography_node's parameters."""
    p = validate(node, p)
    from deep_vision.estimators.homography import HomographyEstimator
    from deep_vision.estimators.stream import FramePairer

    path = ""
    try:
        path = _model_path(p, "homography")
        estimator = HomographyEstimator.from_model(
            path, backend=p["backend"], refine=bool(p["refine"]), threads=_threads(p),
            network_passes=int(p["network_passes"]), refine_width=int(p["refine_width"]),
            ecc_iterations=int(p["ecc_iterations"]), ecc_levels=int(p["ecc_levels"]),
            ecc_epsilon=float(p["ecc_epsilon"]),
            min_correlation=float(p["min_correlation"]))
    except DeepVisionError as exc:
        raise ConfigError(f"{node}: parameter 'model_path' ({path or 'default'}): {exc}") from exc
    return estimator, FramePairer(max_gap_s=float(p["max_gap_s"]))


def build_recognizer(p: dict[str, Any], node: str = "place_recognition_node"):
    """PlaceRecognizer (network or sad) from place_recognition_node's parameters."""
    p = validate(node, p)
    from deep_vision.estimators.place import PlaceRecognizer

    if p["descriptor"] == "sad":
        try:
            return PlaceRecognizer.classical("sad", sad_size=(int(p["sad_width"]), int(p["sad_height"])))
        except ConfigError as exc:
            raise ConfigError(f"{node}: parameters 'sad_width'/'sad_height': {exc}") from exc
    path = ""
    try:
        path = _model_path(p, "place")
        return PlaceRecognizer.from_model(path, backend=p["backend"], threads=_threads(p))
    except DeepVisionError as exc:
        raise ConfigError(f"{node}: parameter 'model_path' ({path or 'default'}): {exc}") from exc


def _patch_descriptor(p: dict[str, Any], node: str):
    """The PatchDescriptor of a node's ``patch_model_path`` (empty: the shipped one)."""
    from deep_vision.estimators.patch import PatchDescriptor

    path = ""
    try:
        path = p["patch_model_path"] or str(_default_model("patch"))
        return PatchDescriptor.from_model(path, backend=p["backend"], threads=_threads(p))
    except DeepVisionError as exc:
        raise ConfigError(f"{node}: parameter 'patch_model_path' ({path or 'default'}): {exc}") from exc


def build_verifier(p: dict[str, Any], node: str = "place_recognition_node"):
    """GeometricVerifier (None with ``verify`` off) from place_recognition_node's parameters, with the camera's
    pose on the robot (``camera_pose``) and the ground as loop-closure scale source (``loop_scale``)."""
    p = validate(node, p)
    from deep_vision.estimators.loop_closure import GeometricVerifier

    if not p["verify"]:
        return None
    patch = _patch_descriptor(p, node) if p["features"] == "learned" else None
    try:
        verifier = GeometricVerifier(p["features"], int(p["max_features"]), ransac_px=float(p["ransac_px"]),
                                     min_inliers=int(p["min_inliers"]),
                                     min_inlier_ratio=float(p["min_inlier_ratio"]), patch_descriptor=patch,
                                     patch_span=float(p["patch_span"]))
    except ConfigError as exc:
        raise ConfigError(f"{node}: geometric check parameters: {exc}") from exc
    try:
        verifier.set_camera_pose(camera_pose_transform(p["camera_pose"], node), ground=p["loop_scale"] == "ground")
    except ConfigError as exc:
        raise ConfigError(f"{node}: parameters 'camera_pose'/'loop_scale': {exc}") from exc
    return verifier


def build_loop_detector(p: dict[str, Any], node: str = "place_recognition_node", *, recognizer=None, database=None):
    """LoopClosureDetector (recognizer, keyframes, verification) from place_recognition_node's parameters."""
    p = validate(node, p)
    from deep_vision.estimators.loop_closure import KeyframeSelector, LoopClosureDetector

    recognizer = recognizer or build_recognizer(p, node)
    verifier = build_verifier(p, node)
    try:
        keyframes = KeyframeSelector(float(p["keyframe_interval_s"]), float(p["keyframe_distance_m"]),
                                     float(p["keyframe_max_similarity"]),
                                     float(p["keyframe_min_interval_s"]))
    except ConfigError as exc:
        raise ConfigError(f"{node}: keyframe parameters: {exc}") from exc
    return LoopClosureDetector(
        recognizer, database=database, top_k=int(p["top_k"]), min_similarity=float(p["min_similarity"]),
        exclude_recent_s=float(p["exclude_recent_s"]), verifier=verifier, keyframes=keyframes,
        geolocate_verified_only=bool(p["geolocate_verified_only"]),
        approximate_above=int(p["approximate_above"]))


def camera_pose_transform(pose: Any, node: str = "") -> np.ndarray:
    """T_base_cam of a ``camera_pose`` parameter (x y z qx qy qz qw); a bad one raises ConfigError naming ``node``."""
    from deep_vision.geometry.transforms import make_transform, rotation_from_quaternion

    pose = [float(v) for v in pose]
    if len(pose) != 7 or not np.isclose(np.linalg.norm(pose[3:]), 1.0, atol=1e-3):
        raise ConfigError(f"{node + ': ' if node else ''}parameter 'camera_pose' must be x y z qx qy qz qw with a "
                          "unit quaternion")
    return make_transform(rotation_from_quaternion(pose[3:]), pose[:3])


def ground_scale_from_params(p: dict[str, Any], T_base_cam: np.ndarray | None = None,
                             node: str = "odometry_node"):
    """GroundPlaneScale from odometry_node's ``camera_pose`` (or ``T_base_cam``, e.g. from /tf_static) and
    ``camera_height_m`` (0: the camera's height above base_link), the plane's tilt bound ``ground_max_tilt_deg``,
    sideways bound ``ground_max_lateral_m`` and the top views' length ``ground_topview`` (cell
    ``ground_topview_cell_m``, levelled over ``ground_topview_pitch_frames`` steps less
    ``ground_topview_pitch_reference_frames``, dead band ``ground_topview_pitch_deadband_deg``)."""
    p = validate(node, p)
    from deep_vision.estimators.ground_scale import GroundPlaneScale

    if T_base_cam is None:
        T_base_cam = camera_pose_transform(p["camera_pose"])
    cell = float(p["ground_topview_cell_m"]) if p["ground_topview"] else 0.0
    return GroundPlaneScale.from_extrinsic(T_base_cam, float(p["camera_height_m"]),
                                           max_tilt_deg=float(p["ground_max_tilt_deg"]),
                                           max_lateral_m=float(p["ground_max_lateral_m"]), topview_cell_m=cell,
                                           topview_pitch_frames=int(p["ground_topview_pitch_frames"]),
                                           topview_pitch_reference_frames=int(
                                               p["ground_topview_pitch_reference_frames"]),
                                           topview_pitch_deadband_deg=float(p["ground_topview_pitch_deadband_deg"]))


def scale_settings(p: dict[str, Any], T_base_cam: np.ndarray | None = None, node: str = "odometry_node"):
    """odometry_node's scale parameters, checked: (scale_source, its GroundPlaneScale or None, scale_window)."""
    p = validate(node, p)
    scale_source = p["scale_source"]
    if scale_source == "ground" and p["mode"] != "hybrid":
        raise ConfigError(f"{node}: parameter 'scale_source' is ground, which needs 'mode' hybrid (with 'mode' "
                          "network set 'scale_source' network: the network's own metres)")
    try:
        ground = ground_scale_from_params(p, T_base_cam) if scale_source == "ground" else None
        scale_window = int(p["scale_window"])
        if scale_window < 1:
            raise ConfigError(f"scale_window must be at least 1, got {scale_window}")
    except ConfigError as exc:
        raise ConfigError(f"{node}: parameters 'camera_pose'/'camera_height_m'/'ground_max_tilt_deg'/"
                          f"'ground_max_lateral_m'/'ground_topview'/'ground_topview_cell_m'/"
                          f"'ground_topview_pitch_frames'/'ground_topview_pitch_reference_frames'/"
                          f"'ground_topview_pitch_deadband_deg'/'scale_window': "
                          f"{exc}") from exc
    if p["relative_scale"] and (scale_source != "ground" or scale_window != 1):
        raise ConfigError(f"{node}: parameter 'relative_scale' fuses the ground lengths: it needs 'scale_source' "
                          f"ground and 'scale_window' 1 (got {scale_source}, {scale_window})")
    return scale_source, ground, scale_window


def build_odometry(p: dict[str, Any], camera: PinholeCamera | None = None, node: str = "odometry_node"):
    """VisualOdometry from odometry_node's parameters (``mode: hybrid`` needs ``camera``)."""
    p = validate(node, p)
    from deep_vision.estimators.odometry import VisualOdometry

    mode = p["mode"]
    if mode == "hybrid" and camera is None:
        raise ConfigError(f"{node}: parameter 'mode' is hybrid, which needs the camera intrinsics (camera_info)")
    scale_source, ground, scale_window = scale_settings(p, node=node)
    tracker = None
    if p["descriptor"] != "lk":
        if p["geometry"] != "features":
            raise ConfigError(f"{node}: parameter 'descriptor' ({p['descriptor']}) applies to geometry 'features', "
                              f"not {p['geometry']!r}")
        from deep_vision.estimators.two_view import DescriptorMatcher

        patch = _patch_descriptor(p, node) if p["descriptor"] == "learned" else None
        tracker = DescriptorMatcher(max_corners=800, width=int(p["track_width"]), refine=bool(p["refine_geometry"]),
                                    descriptor=p["descriptor"], patch=patch)
    path = ""
    try:
        path = _model_path(p, "vo")
        return VisualOdometry.from_model(
            path, backend=p["backend"], threads=_threads(p), camera=camera, mode=mode,
            scale_source=scale_source, ground=ground, scale_window=scale_window,
            network_fallback=bool(p["use_network"]), relative_scale=bool(p["relative_scale"]),
            acceleration_std_mps2=float(p["acceleration_std_mps2"]),
            trans_rel=float(p["trans_noise_rel"]), trans_abs=float(p["trans_noise_abs"]),
            rot_rel=float(p["rot_noise_rel"]), rot_abs=float(p["rot_noise_abs"]),
            geometry=p["geometry"], track_width=int(p["track_width"]),
            refine_geometry=bool(p["refine_geometry"]),
            prior_window=int(p["prior_window"]),
            prior_max_disagreement_deg=float(p["prior_max_disagreement_deg"]), tracker=tracker)
    except DeepVisionError as exc:
        raise ConfigError(f"{node}: parameter 'model_path' ({path or 'default'}): {exc}") from exc


POSE_GRAPH_KEYS = ("keyframe_distance_m", "keyframe_angle_deg", "loop_max_distance_m", "loop_max_rotation_deg",
                   "loop_max_chi2", "loop_kernel")


def build_pose_graph(p: dict[str, Any], node: str = "pose_graph_node"):
    """PoseGraph from pose_graph_node's parameters (the keys in ``POSE_GRAPH_KEYS``)."""
    p = validate(node, p)
    from deep_vision.estimators.pose_graph import PoseGraph

    kwargs = {k: p[k] for k in POSE_GRAPH_KEYS if k in p}
    try:
        return PoseGraph(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{node}: {exc}") from exc


