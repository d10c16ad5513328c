"""ROS-free estimators the nodes wrap: numpy images and stamps in, plain dataclasses out."""

from deep_vision.estimators.homography import HomographyEstimator, HomographyResult
from deep_vision.estimators.loop_closure import (
    GeometricVerifier,
    KeyframeDatabase,
    KeyframeGate,
    KeyframeSelector,
    LoopCandidate,
    LoopClosureDetector,
    QueryResult,
)
from deep_vision.estimators.odometry import OdometryResult, VisualOdometry
from deep_vision.estimators.patch import PatchDescriptor
from deep_vision.estimators.place import LocalMap, PlaceRecognizer, SpatialReranker

__all__ = ["GeometricVerifier", "HomographyEstimator", "HomographyResult", "KeyframeDatabase", "KeyframeGate",
           "KeyframeSelector", "LocalMap", "LoopCandidate", "LoopClosureDetector", "OdometryResult",
           "PatchDescriptor", "PlaceRecognizer", "QueryResult", "SpatialReranker", "VisualOdometry"]
