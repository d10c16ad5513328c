"""ROS-free estimators the nodes wrap: numpy images and stamps in, plain dataclasses out."""

from deep_vision.estimators.homography import HomographyEstimator, HomographyResult

__all__ = ["HomographyEstimator", "HomographyResult"]
