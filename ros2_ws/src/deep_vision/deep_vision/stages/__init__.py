"""One ROS-free stage per node: all per-stream state, plain dataclasses in and out.

The nodes (``deep_vision.nodes``) and the evaluation (``deep_vision.pipeline``)
drive the very same stage objects and turn their outputs into messages with
the very same functions (:mod:`deep_vision.stages.messages`), so an
evaluation's output bag holds what the nodes publish.

- :mod:`~deep_vision.stages.inputs`: messages → :class:`Frame`, :class:`CameraInfo`,
  :class:`GpsFix`, :class:`OdometryIn`, :class:`LoopClosuresIn` (rosbags or rclpy objects alike).
- :class:`HomographyStage`, :class:`OdometryStage`, :class:`PlaceStage`, :class:`PoseGraphStage`.
"""

from deep_vision.io.rosmsg import StaticTransforms
from deep_vision.stages.homography import HomographyStage
from deep_vision.stages.inputs import CameraInfo, Frame, GpsFix, LoopClosuresIn, OdometryIn
from deep_vision.stages.odometry import OdometryStage
from deep_vision.stages.place import PlaceStage
from deep_vision.stages.pose_graph import PoseGraphStage

__all__ = ["CameraInfo", "Frame", "GpsFix", "HomographyStage", "LoopClosuresIn", "OdometryIn", "OdometryStage",
           "PlaceStage", "PoseGraphStage", "StaticTransforms"]
