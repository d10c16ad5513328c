"""I/O: image encodings ↔ numpy, rosbag2 read/write (rosbags), dataset readers."""

from deep_vision.io.image import (
    ENCODINGS,
    ImageFields,
    image_to_numpy,
    message_to_mono8,
    message_to_rgb8,
    numpy_to_image_fields,
    to_mono8,
    to_rgb8,
)

__all__ = [
    "ENCODINGS",
    "ImageFields",
    "image_to_numpy",
    "message_to_mono8",
    "message_to_rgb8",
    "numpy_to_image_fields",
    "to_mono8",
    "to_rgb8",
]
