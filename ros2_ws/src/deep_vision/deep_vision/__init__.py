"""deep_vision: learned perception for ROS 2.

Layers (dependencies point downward): ``geometry`` → ``models`` → ``inference``
→ ``estimators``; ``io``, ``synthetic`` and ``eval`` beside them; ``nodes``
(the only layer that imports rclpy) and ``cli`` on top. Importing this package
or any layer but ``nodes`` never imports rclpy.
"""

from deep_vision.errors import DeepVisionError

__version__ = "0.1.0"
__all__ = ["DeepVisionError", "__version__"]
