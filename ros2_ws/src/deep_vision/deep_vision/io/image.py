"""``sensor_msgs/Image`` ↔ numpy, for rclpy and rosbags messages alike.

Reading takes any object with the Image fields (``height``, ``width``,
``encoding``, ``is_bigendian``, ``step``, ``data``): an rclpy message, a rosbags
message or a :class:`ImageFields`. Row padding (``step`` larger than a row) is
dropped and big-endian data converted to native order. Every malformed input
raises :class:`~deep_vision.errors.ImageEncodingError` naming the encoding and
the sizes involved.

cv_bridge is deliberately not used even when importable: its results differ
(``passthrough`` keeps padding-dependent strides, conversions return BGR, its
errors are ``CvBridgeError``), and the nodes must behave the same with and
without a ROS install. The tests pin this module's behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np

from deep_vision.errors import ImageEncodingError


@dataclass(frozen=True)
class EncodingInfo:
    dtype: np.dtype
    channels: int
    bayer_code: int | None = None  # OpenCV demosaicing code to RGB


# OpenCV names Bayer patterns after the second row's first two pixels, so ROS's
# bayer_rggb8 (first row R G) is OpenCV's "BG" pattern (as in cv_bridge).
ENCODINGS: dict[str, EncodingInfo] = {
    "mono8": EncodingInfo(np.dtype(np.uint8), 1),
    "mono16": EncodingInfo(np.dtype(np.uint16), 1),
    "rgb8": EncodingInfo(np.dtype(np.uint8), 3),
    "bgr8": EncodingInfo(np.dtype(np.uint8), 3),
    "rgba8": EncodingInfo(np.dtype(np.uint8), 4),
    "bgra8": EncodingInfo(np.dtype(np.uint8), 4),
    "bayer_rggb8": EncodingInfo(np.dtype(np.uint8), 1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": EncodingInfo(np.dtype(np.uint8), 1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": EncodingInfo(np.dtype(np.uint8), 1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": EncodingInfo(np.dtype(np.uint8), 1, cv2.COLOR_BayerGB2RGB),
    "16UC1": EncodingInfo(np.dtype(np.uint16), 1),
    "32FC1": EncodingInfo(np.dtype(np.float32), 1),
}

# Encodings that carry intensity (usable as a camera image by the estimators).
INTENSITY_ENCODINGS = frozenset(ENCODINGS) - {"32FC1"}


class ImageFields(NamedTuple):
    """The payload fields of a ``sensor_msgs/Image`` (no header)."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: np.ndarray  # uint8 [step * height]


def encoding_info(encoding: str) -> EncodingInfo:
    """The dtype and channel count of a supported encoding."""
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ImageEncodingError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}"
        ) from None


def _data_bytes(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.view(np.uint8).reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    # rclpy gives array.array('B') (buffer protocol); a list of ints also works.
    try:
        return np.frombuffer(memoryview(data), dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8)


def _checked_rows(msg: Any) -> tuple[np.ndarray, EncodingInfo]:
    """([height x row bytes] view of the message's pixel bytes, padding cut off; the encoding's info), after
    checking the encoding, size, step and length. Nothing is copied."""
    encoding = str(msg.encoding)
    info = encoding_info(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * info.channels * info.dtype.itemsize
    if height <= 0 or width <= 0:
        raise ImageEncodingError(f"empty {encoding} image: {width}x{height}")
    if step < row_bytes:
        raise ImageEncodingError(
            f"{encoding} image {width}x{height}: step {step} is smaller than one row ({row_bytes} bytes)"
        )
    data = _data_bytes(msg.data)
    if data.size != step * height:
        raise ImageEncodingError(
            f"{encoding} image {width}x{height} (step {step}): expected {step * height} bytes of data, "
            f"got {data.size}" + (" (truncated)" if data.size < step * height else "")
        )
    return data.reshape(height, step)[:, :row_bytes], info


def check_image_message(msg: Any) -> None:
    """Raise :class:`ImageEncodingError` for a message :func:`message_to_mono8` / :func:`message_to_rgb8`
    would refuse, without decoding it: for a node that looks at some frames only (keyframes) and still
    counts the malformed ones among those it skips."""
    _checked_rows(msg)
    if str(msg.encoding) not in INTENSITY_ENCODINGS:
        raise ImageEncodingError(f"{msg.encoding} is not an intensity image")


def image_to_numpy(msg: Any) -> np.ndarray:
    """Pixels of an Image message as a native-endian array, [H x W] or [H x W x C].

    The result is a fresh, C-contiguous copy: the message buffer may be reused.

    Raises:
        ImageEncodingError: unknown encoding, empty image, ``step`` smaller than a
            row, or ``data`` whose length is not ``step * height``.
    """
    rows, info = _checked_rows(msg)
    height, width = int(msg.height), int(msg.width)
    dtype = info.dtype
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    pixels = np.ascontiguousarray(rows).view(dtype).astype(info.dtype.newbyteorder("="), copy=False)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    return np.array(pixels.reshape(shape), copy=True, order="C")


def numpy_to_image_fields(
    array: np.ndarray, encoding: str, *, big_endian: bool = False, row_padding: int = 0
) -> ImageFields:
    """Image message fields for ``array`` in ``encoding``.

    Args:
        array: [H x W] or [H x W x C] pixels of the encoding's dtype and channel count.
        encoding: a supported encoding (see :data:`ENCODINGS`).
        big_endian: write multi-byte pixels big-endian (``is_bigendian = 1``).
        row_padding: extra bytes at the end of each row (``step`` larger than a row).
    """
    info = encoding_info(encoding)
    array = np.asarray(array)
    expected = (info.channels,) if info.channels > 1 else ()
    if array.ndim != 2 + len(expected) or array.shape[2:] != expected:
        raise ImageEncodingError(
            f"{encoding} needs an array of shape [H x W{' x %d' % info.channels if info.channels > 1 else ''}], "
            f"got {list(array.shape)}"
        )
    if array.dtype != info.dtype:
        raise ImageEncodingError(f"{encoding} needs dtype {info.dtype}, got {array.dtype}")
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ImageEncodingError(f"empty {encoding} image: {width}x{height}")
    if row_padding < 0:
        raise ValueError(f"row_padding must be >= 0, got {row_padding}")
    dtype = info.dtype.newbyteorder(">" if big_endian else "<") if info.dtype.itemsize > 1 else info.dtype
    rows = np.ascontiguousarray(array, dtype=dtype).view(np.uint8).reshape(height, -1)
    if row_padding:
        rows = np.hstack([rows, np.zeros((height, row_padding), np.uint8)])
    return ImageFields(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(bool(big_endian) and info.dtype.itemsize > 1),
        step=rows.shape[1],
        data=rows.reshape(-1),
    )


def to_rgb8(array: np.ndarray, encoding: str) -> np.ndarray:
    """[H x W x 3] uint8 RGB of a decoded image (Bayer demosaiced, 16-bit scaled down)."""
    info = encoding_info(encoding)
    if encoding not in INTENSITY_ENCODINGS:
        raise ImageEncodingError(f"{encoding} is not an intensity image")
    if info.bayer_code is not None:
        return cv2.cvtColor(array, info.bayer_code)
    if encoding == "rgb8":
        return array
    if encoding == "bgr8":
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if encoding == "rgba8":
        return cv2.cvtColor(array, cv2.COLOR_RGBA2RGB)
    if encoding == "bgra8":
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(to_mono8(array, encoding), cv2.COLOR_GRAY2RGB)


def to_mono8(array: np.ndarray, encoding: str) -> np.ndarray:
    """[H x W] uint8 grey of a decoded image (ITU-R BT.601 luma, 16-bit keeps the high byte)."""
    info = encoding_info(encoding)
    if encoding not in INTENSITY_ENCODINGS:
        raise ImageEncodingError(f"{encoding} is not an intensity image")
    if encoding == "mono8":
        return array
    if encoding in ("mono16", "16UC1"):
        return (array >> 8).astype(np.uint8)
    if info.bayer_code is not None:
        return cv2.cvtColor(cv2.cvtColor(array, info.bayer_code), cv2.COLOR_RGB2GRAY)
    code = {
        "rgb8": cv2.COLOR_RGB2GRAY,
        "bgr8": cv2.COLOR_BGR2GRAY,
        "rgba8": cv2.COLOR_RGBA2GRAY,
        "bgra8": cv2.COLOR_BGRA2GRAY,
    }[encoding]
    return cv2.cvtColor(array, code)


def message_to_mono8(msg: Any) -> np.ndarray:
    """Decode an Image message straight to [H x W] uint8 grey."""
    return to_mono8(image_to_numpy(msg), str(msg.encoding))


def message_to_rgb8(msg: Any) -> np.ndarray:
    """Decode an Image message straight to [H x W x 3] uint8 RGB."""
    return to_rgb8(image_to_numpy(msg), str(msg.encoding))


def as_grey(image: np.ndarray) -> np.ndarray:
    """[H x W] uint8 grey of a decoded grey ([H x W] or [H x W x 1]) or RGB ([H x W x 3]) uint8 image."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ImageEncodingError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[..., 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ImageEncodingError(f"expected an [H x W] grey or [H x W x 3] RGB image, got shape {list(image.shape)}")
