"""The built-in synthetic camera world: a car driving a closed route through textured planes."""

from deep_vision.synthetic.config import SyntheticWorldConfig
from deep_vision.synthetic.sequence import Revisit, SyntheticSequence, intrinsics

__all__ = ["Revisit", "SyntheticSequence", "SyntheticWorldConfig", "intrinsics"]
