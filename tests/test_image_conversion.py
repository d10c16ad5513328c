"""sensor_msgs/Image <-> numpy: every encoding, padding, endianness and every error case."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deep_vision.errors import ImageEncodingError
from deep_vision.io.image import (
    ENCODINGS,
    as_grey,
    ImageFields,
    check_image_message,
    image_to_numpy,
    message_to_mono8,
    message_to_rgb8,
    numpy_to_image_fields,
    to_mono8,
    to_rgb8,
)

RNG = np.random.default_rng(0)


def sample(encoding: str, h: int = 7, w: int = 11) -> np.ndarray:
    info = ENCODINGS[encoding]
    shape = (h, w) if info.channels == 1 else (h, w, info.channels)
    if info.dtype == np.float32:
        return RNG.normal(size=shape).astype(np.float32)
    return RNG.integers(0, np.iinfo(info.dtype).max, size=shape, endpoint=True).astype(info.dtype)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("padding", [0, 5])
def test_round_trip(encoding, big_endian, padding):
    array = sample(encoding)
    fields = numpy_to_image_fields(array, encoding, big_endian=big_endian, row_padding=padding)
    itemsize = ENCODINGS[encoding].dtype.itemsize
    assert fields.step == array.shape[1] * ENCODINGS[encoding].channels * itemsize + padding
    assert fields.data.size == fields.step * fields.height
    assert fields.is_bigendian == int(big_endian and itemsize > 1)
    back = image_to_numpy(fields)
    assert back.dtype == array.dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert back.flags.c_contiguous


def test_big_endian_bytes_are_big_endian():
    fields = numpy_to_image_fields(np.array([[0x0102]], np.uint16), "mono16", big_endian=True)
    assert bytes(fields.data) == b"\x01\x02"
    fields = numpy_to_image_fields(np.array([[0x0102]], np.uint16), "16UC1", big_endian=False)
    assert bytes(fields.data) == b"\x02\x01"
    fields = numpy_to_image_fields(np.array([[0x0102]], np.uint16), "mono16")  # little-endian unless asked
    assert bytes(fields.data) == b"\x02\x01" and fields.is_bigendian == 0


def test_result_does_not_alias_message_buffer():
    fields = numpy_to_image_fields(sample("mono8"), "mono8")
    out = image_to_numpy(fields)
    fields.data[:] = 0
    assert out.any()


def test_accepts_bytes_and_array_module_buffers():
    import array as pyarray

    img = sample("rgb8")
    f = numpy_to_image_fields(img, "rgb8")
    for data in (bytes(f.data), bytearray(f.data), pyarray.array("B", bytes(f.data)), list(bytes(f.data))):
        np.testing.assert_array_equal(image_to_numpy(f._replace(data=data)), img)


def fields(encoding="mono8", h=4, w=6, step=None, n=None, big=0):
    info = ENCODINGS.get(encoding, ENCODINGS["mono8"])
    step = w * info.channels * info.dtype.itemsize if step is None else step
    n = step * h if n is None else n
    return ImageFields(h, w, encoding, big, step, np.zeros(n, np.uint8))


@pytest.mark.parametrize(
    "bad, words",
    [
        (fields(encoding="yuv422"), ["unsupported", "yuv422"]),
        (fields(encoding="bayer_rggb16"), ["unsupported", "bayer_rggb16"]),
        (fields(n=4 * 6 - 1), ["mono8", "6x4", "expected 24", "got 23", "truncated"]),
        (fields(n=0), ["truncated", "got 0"]),
        (fields(n=4 * 6 + 3), ["expected 24", "got 27"]),
        (fields(step=5), ["step 5", "smaller than one row", "6 bytes"]),
        (fields(encoding="rgb8", step=17), ["rgb8", "step 17", "18 bytes"]),
        (fields(encoding="mono16", step=11), ["mono16", "12 bytes"]),
        (fields(h=0, n=0), ["empty", "6x0"]),
        (fields(w=0, step=0, n=0), ["empty", "0x4"]),
    ],
)
def test_errors_name_encoding_and_sizes(bad, words):
    with pytest.raises(ImageEncodingError) as info:
        image_to_numpy(bad)
    for word in words:
        assert word in str(info.value)
    with pytest.raises(ImageEncodingError) as checked:  # the check without decoding says the same
        check_image_message(bad)
    assert str(checked.value) == str(info.value)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_check_without_decoding_agrees_with_the_decoders(encoding):
    msg = numpy_to_image_fields(sample(encoding), encoding)
    if encoding == "32FC1":
        with pytest.raises(ImageEncodingError, match="not an intensity image"):
            check_image_message(msg)
        with pytest.raises(ImageEncodingError, match="not an intensity image"):
            message_to_mono8(msg)
    else:
        check_image_message(msg)
        message_to_mono8(msg), message_to_rgb8(msg)


def test_error_type_is_value_error_too():
    assert issubclass(ImageEncodingError, ValueError)


@pytest.mark.parametrize(
    "array, encoding, words",
    [
        (np.zeros((4, 5, 3), np.uint8), "mono8", ["mono8", "[H x W]", "[4, 5, 3]"]),
        (np.zeros((4, 5), np.uint8), "rgb8", ["rgb8", "x 3"]),
        (np.zeros((4, 5), np.float64), "32FC1", ["float32", "float64"]),
        (np.zeros((4, 5), np.uint8), "mono16", ["uint16", "uint8"]),
        (np.zeros((4, 5), np.uint8), "nv12", ["unsupported"]),
        (np.zeros((0, 5), np.uint8), "mono8", ["empty"]),
        (np.zeros((5, 0), np.uint8), "mono8", ["empty"]),
        (np.zeros((4, 5, 4), np.uint8), "rgb8", ["rgb8", "x 3", "[4, 5, 4]"]),
    ],
)
def test_writer_errors(array, encoding, words):
    with pytest.raises(ImageEncodingError) as info:
        numpy_to_image_fields(array, encoding)
    for word in words:
        assert word in str(info.value)


# ---- Bayer: ROS pattern names versus OpenCV's, checked on a flat-coloured mosaic ----
PATTERNS = {  # colour of the 2x2 cell: (row 0 col 0, row 0 col 1, row 1 col 0, row 1 col 1)
    "bayer_rggb8": "RGGB",
    "bayer_bggr8": "BGGR",
    "bayer_gbrg8": "GBRG",
    "bayer_grbg8": "GRBG",
}


def mosaic(rgb: tuple[int, int, int], pattern: str, h: int = 16, w: int = 16) -> np.ndarray:
    index = {"R": 0, "G": 1, "B": 2}
    out = np.zeros((h, w), np.uint8)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        out[dy::2, dx::2] = rgb[index[pattern[k]]]
    return out


@pytest.mark.parametrize("encoding", sorted(PATTERNS))
def test_bayer_demosaic_recovers_flat_colour(encoding):
    colour = (200, 90, 30)
    raw = mosaic(colour, PATTERNS[encoding])
    msg = numpy_to_image_fields(raw, encoding)
    rgb = message_to_rgb8(msg)
    assert rgb.shape == (16, 16, 3)
    centre = rgb[4:12, 4:12].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(centre, colour, atol=2)
    # Bayer stays Bayer when decoded raw.
    np.testing.assert_array_equal(image_to_numpy(msg), raw)


def test_colour_orders_agree():
    rgb = sample("rgb8")
    variants = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
        "bgra8": np.dstack([rgb[..., ::-1], np.zeros(rgb.shape[:2], np.uint8)]),
    }
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    for encoding, array in variants.items():
        np.testing.assert_array_equal(to_rgb8(array, encoding), rgb)
        np.testing.assert_array_equal(to_mono8(array, encoding), grey)


def test_sixteen_bit_to_mono8_keeps_high_byte():
    a = np.array([[0, 255, 256, 65535]], np.uint16)
    for encoding in ("mono16", "16UC1"):
        np.testing.assert_array_equal(to_mono8(a, encoding), [[0, 0, 1, 255]])
        msg = numpy_to_image_fields(a, encoding, big_endian=True)
        np.testing.assert_array_equal(message_to_mono8(msg), [[0, 0, 1, 255]])


def test_float_image_is_not_intensity():
    with pytest.raises(ImageEncodingError, match="32FC1 is not an intensity image"):
        to_mono8(np.zeros((2, 2), np.float32), "32FC1")


def test_rosbags_message_round_trip():
    from deep_vision.io import rosmsg

    img = sample("bgr8")
    msg = rosmsg.image_msg(numpy_to_image_fields(img, "bgr8", row_padding=3), 5, "cam")
    raw = rosmsg.typestore().serialize_cdr(msg, "sensor_msgs/msg/Image")
    back = rosmsg.typestore().deserialize_cdr(raw, "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(image_to_numpy(back), img)


def test_rclpy_message_round_trip():
    from conftest import require_ros

    require_ros()
    from sensor_msgs.msg import Image

    for encoding in ("mono16", "rgb8", "bayer_grbg8", "32FC1"):
        img = sample(encoding)
        f = numpy_to_image_fields(img, encoding, big_endian=True, row_padding=2)
        msg = Image(height=f.height, width=f.width, encoding=f.encoding, is_bigendian=f.is_bigendian,
                    step=f.step, data=f.data.tobytes())
        np.testing.assert_array_equal(image_to_numpy(msg), img)


def test_as_grey_takes_every_grey_and_rgb_layout():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(as_grey(grey), grey)
    np.testing.assert_array_equal(as_grey(grey[..., None]), grey)  # [H x W x 1], e.g. a mono8 message decoded
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 1] = 200  # pure green: luma 0.587 * 200
    np.testing.assert_array_equal(as_grey(rgb), np.full((3, 4), 117, np.uint8))
    with pytest.raises(ImageEncodingError, match=r"got shape \[3, 4, 2\]"):
        as_grey(np.zeros((3, 4, 2), np.uint8))
    with pytest.raises(ImageEncodingError, match="expected uint8 pixels, got float32"):
        as_grey(grey.astype(np.float32))


def test_one_pixel_wide_and_high_images_decode():
    for shape in [(5, 1), (1, 5), (1, 1)]:
        image = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
        np.testing.assert_array_equal(image_to_numpy(numpy_to_image_fields(image, "mono8")), image)


@pytest.mark.parametrize("encoding, order", [("bgra8", [2, 1, 0, 3]), ("rgba8", [0, 1, 2, 3]),
                                             ("bgr8", [2, 1, 0]), ("rgb8", [0, 1, 2])])
def test_colour_messages_laid_out_by_hand(encoding, order):
    """Bytes as a camera driver writes them (REP 118 layouts): B G R A, R G B A, ... per pixel, step = width ×
    channels; decoded to the right colour."""
    rgba = np.array([200, 100, 30, 255], np.uint8)
    h, w = 3, 5
    pixel = rgba[order]
    data = np.tile(pixel, h * w)
    fields = ImageFields(h, w, encoding, 0, w * len(order), data)
    np.testing.assert_array_equal(message_to_rgb8(fields), np.broadcast_to(rgba[:3], (h, w, 3)))


def test_negative_row_padding_is_refused():
    with pytest.raises(ValueError, match="row_padding must be >= 0, got -1"):
        numpy_to_image_fields(np.zeros((2, 3), np.uint8), "mono8", row_padding=-1)
