"""The whole pipeline without ROS: estimators built from the nodes' parameters, run over a bag, measured.

``deep-vision evaluate BAG`` and ``deep-vision demo`` use it; the nodes build
their estimators with :mod:`deep_vision.pipeline.build` too.
"""

from deep_vision.params import load_params
from deep_vision.pipeline.run import MODES, STAGES, Pipeline, PipelineOutputs

__all__ = ["MODES", "STAGES", "Pipeline", "PipelineOutputs", "load_params"]
