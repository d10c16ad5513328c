"""Fuzz figure (issue #29 item 6): malformed messages through the nodes themselves, seeded.

For each node (``HomographyNode``, ``OdometryNode``, ``PlaceRecognitionNode``,
``PoseGraphNode``) a seeded generator builds a stream of messages (rosbags
objects of ``deep_vision.io.rosmsg.typestore()``): valid camera frames of a view
panning round a synthetic texture (so the stages keep state and places come
back), interleaved with malformed and unusual ones (``IMAGE_CLASSES`` and the
side message classes below).

The node is the shipped class, built in its own rclpy Context by
``deep_vision.nodes.harness.NodeHarness`` as the tests build it (parameter
overrides in ``NODE_CLASSES``; the odometry node gets a randomly initialised
DeepVO exported as ``tests/conftest.py`` does, unless ``--vo-model`` names one).
Each message is serialised to CDR and given to the callback of the node's own
subscription of its topic, as rclpy's executor gives a raw subscription its
bytes: the node's deserialisation, its FrameQueue (``on_arrival``, ``admit``,
the handler on the queue's worker thread, drained after each message so that
nothing is dropped), its stage and its publishers all run; nothing of the
node's glue is copied here. Nothing spins: the publishers have no subscribers
and the 1 Hz diagnostics timer is called once at the end.

A crash is an exception out of a subscription callback (rclpy's executor
would raise it out of ``spin``) or one the FrameQueue caught and counted as
``errors``. Each message's outcome is read from the node's own counters
(``node.diag.counts()``, what /diagnostics publishes): the counter of
``OUTCOMES`` that moved (``bad_image``, ``frames_between_keyframes`` →
``between_keyframes``, ``bad_camera_info``, ``gps_no_fix``, ``bad_odometry``,
``frames_out`` → ``odometry``, ``bad_loop_closure``), else the kind's default
(``processed``, ``camera_info``, ``gps``, ``loops``; an odometry message that
moved neither is ``unaccounted``); two that moved are joined with ``+``. Each
class lists the outcomes that count it correctly (``expect``).

Usage (repository root):
    .venv/bin/python bench/fuzz.py [--messages 10000] [--seed 0] [--nodes homography,odometry,place,pose_graph]
        [--out bench/results/fuzz-2026-12-06] [--vo-model PATH] [--before DIR_OR_JSON ...]
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import os
import platform
import random
import shlex
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# DDS stays on this machine, in a domain of its own (as tests/conftest.py): set before anything imports rclpy.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(50, 99)))

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "fuzz-2026-12-06"
NODES = ("homography", "odometry", "place", "pose_graph")

T0 = 1_700_000_000_000_000_000  # ns
DT = 100_000_000  # 10 Hz
SIZES = [(160, 120), (128, 96), (96, 72), (64, 48), (160, 90), (33, 17)]  # valid frames (w, h); 160x120 most
TINY = [(1, 1), (2, 3), (3, 2), (2, 2), (5, 7)]
THIN = [(1, 120), (160, 1), (1024, 1), (1, 768), (640, 2)]
UNKNOWN_ENCODINGS = ["", "MONO8", "mono 8", "rgb16", "bgr16", "yuv422", "yuv422_yuy2", "8UC1", "8UC3", "16SC1",
                     "32FC3", "64FC1", "nv21", "jpeg", "bayer_rggb16", "rgb8\x00", "\u00dfgr8", "x" * 300]
INTENSITY = ["mono8", "mono16", "16UC1", "rgb8", "bgr8", "rgba8", "bgra8", "bayer_rggb8", "bayer_bggr8",
             "bayer_gbrg8", "bayer_grbg8"]
PLAIN = ["mono8", "mono8", "rgb8", "rgb8", "bgr8", "mono16"]  # the interleaved valid frames


# ============================================================================ messages
def _types() -> Any:
    from deep_vision.io.rosmsg import typestore

    return typestore().types


def _time(sec: int, nanosec: int) -> Any:
    return _types()["builtin_interfaces/msg/Time"](sec=int(sec), nanosec=int(nanosec))


def _header(stamp: int | tuple[int, int], frame_id: str) -> Any:
    sec, nanosec = stamp if isinstance(stamp, tuple) else divmod(int(stamp), 1_000_000_000)
    return _types()["std_msgs/msg/Header"](stamp=_time(sec, nanosec), frame_id=frame_id)


def image(height: int, width: int, encoding: str, is_bigendian: int, step: int, data: np.ndarray,
          stamp: int | tuple[int, int], frame_id: str = "camera") -> Any:
    """A sensor_msgs/Image with exactly these fields (nothing checked)."""
    return _types()["sensor_msgs/msg/Image"](header=_header(stamp, frame_id), height=int(height), width=int(width),
                                             encoding=encoding, is_bigendian=int(is_bigendian), step=int(step),
                                             data=np.ascontiguousarray(data, dtype=np.uint8).reshape(-1))


def describe_image(msg: Any) -> str:
    s = msg.header.stamp
    return (f"Image encoding={msg.encoding[:40]!r}{'...' if len(msg.encoding) > 40 else ''} width={msg.width} "
            f"height={msg.height} step={msg.step} is_bigendian={msg.is_bigendian} data={len(msg.data)} bytes "
            f"stamp=({s.sec}, {s.nanosec}) frame_id={msg.header.frame_id[:20]!r}")


def bayer(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """[H x W] mosaic of ``rgb`` for a ROS Bayer pattern ("rggb": first row R G, second G B)."""
    channel = {"r": 0, "g": 1, "b": 2}
    out = np.empty(rgb.shape[:2], np.uint8)
    for k, (dy, dx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        out[dy::2, dx::2] = rgb[dy::2, dx::2, channel[pattern[k]]]
    return out


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """Pixels of ``rgb`` [H x W x 3] uint8 in an intensity ``encoding`` (array for numpy_to_image_fields)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.shape[0] and rgb.shape[1] else rgb[..., 0]
    if encoding == "mono8":
        return grey
    if encoding in ("mono16", "16UC1"):
        return grey.astype(np.uint16) * 257
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return rgb[..., ::-1]
    if encoding in ("rgba8", "bgra8"):
        c = rgb if encoding == "rgba8" else rgb[..., ::-1]
        return np.dstack([c, np.full(rgb.shape[:2], 255, np.uint8)])
    if encoding.startswith("bayer_"):
        return bayer(rgb, encoding[len("bayer_"):-1])
    raise ValueError(encoding)


def pixel_bytes(encoding: str) -> int:
    from deep_vision.io.image import ENCODINGS

    info = ENCODINGS.get(encoding)
    return 1 if info is None else info.channels * info.dtype.itemsize


@dataclass
class Case:
    kind: str  # image | camera_info | gps | odometry | loop_closures
    cls: str
    msg: Any
    expect: frozenset[str]
    repro: str = ""


@dataclass
class Scene:
    """A textured plane seen by a camera panning round a circle (``period`` frames a lap), 10 Hz."""

    rng: np.random.Generator
    period: int = 300
    texture: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        h, w = 480, 640
        base = np.zeros((h, w, 3), np.float32)
        for scale in (4, 16, 64):
            noise = self.rng.random((h // scale + 1, w // scale + 1, 3)).astype(np.float32)
            base += cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
        tex = np.clip(base / 3.0 * 255, 0, 255).astype(np.uint8)
        for _ in range(150):  # corners for ORB and the optical flow
            x, y = self.rng.integers(0, w), self.rng.integers(0, h)
            colour = tuple(int(c) for c in self.rng.integers(0, 256, 3))
            cv2.rectangle(tex, (int(x), int(y)), (int(x + self.rng.integers(4, 40)), int(y + self.rng.integers(4, 40))),
                          colour, -1)
        self.texture = tex

    def centre(self, k: int) -> tuple[float, float]:
        a = 2 * math.pi * k / self.period
        return 320 + 100 * math.cos(a), 240 + 80 * math.sin(a)

    def view(self, k: int, size: tuple[int, int]) -> np.ndarray:
        """[h x w x 3] RGB of frame ``k`` (the texture wraps round for views larger than it)."""
        w, h = size
        cx, cy = self.centre(k)
        xs = (np.arange(w) + int(cx - w / 2)) % self.texture.shape[1]
        ys = (np.arange(h) + int(cy - h / 2)) % self.texture.shape[0]
        return np.ascontiguousarray(self.texture[np.ix_(ys, xs)])


# ---------------------------------------------------------------------------- image stream
class ImageStream:
    """Camera frames: the current size and stamp clock, and one builder per class."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.scene = Scene(rng)
        self.k = 0  # frame index along the path
        self.stamp = T0
        self.size = SIZES[0]
        self.size_left = 0  # frames left at a changed size

    def _next_stamp(self) -> int:
        self.stamp += DT
        return self.stamp

    def _advance(self) -> None:
        self.k += 1
        if self.size_left:
            self.size_left -= 1
            if not self.size_left:
                self.size = SIZES[0]

    def frame(self, encoding: str | None = None, size: tuple[int, int] | None = None, *, big_endian: bool = False,
              padding: int = 0, stamp: int | tuple[int, int] | None = None, frame_id: str = "camera",
              bigendian_flag: int | None = None) -> Any:
        """A valid frame: the scene's next view in ``encoding``."""
        from deep_vision.io.image import numpy_to_image_fields

        encoding = encoding or PLAIN[int(self.rng.integers(len(PLAIN)))]
        f = numpy_to_image_fields(encode(self.scene.view(self.k, size or self.size), encoding), encoding,
                                  big_endian=big_endian, row_padding=padding)
        self._advance()
        stamp = self._next_stamp() if stamp is None else stamp
        flag = f.is_bigendian if bigendian_flag is None else bigendian_flag
        return image(f.height, f.width, f.encoding, flag, f.step, f.data, stamp, frame_id)

    def pick(self, seq: list) -> Any:
        return seq[int(self.rng.integers(len(seq)))]

    # -------------------------------------------------------------- valid, unusual (decoded and processed)
    def valid(self) -> Any:
        return self.frame()

    def valid_encoding(self) -> Any:
        return self.frame(self.pick(INTENSITY))

    def valid_bigendian_16bit(self) -> Any:
        return self.frame(self.pick(["mono16", "16UC1"]), big_endian=True)

    def valid_bigendian_flag_8bit(self) -> Any:
        return self.frame(self.pick(["mono8", "rgb8", "bgra8", "bayer_grbg8"]), bigendian_flag=int(self.pick([1, 2, 255])))

    def valid_padded_step(self) -> Any:  # step larger than a row, odd too (1, 3, 7 bytes)
        return self.frame(self.pick(INTENSITY), padding=int(self.pick([1, 2, 3, 7, 64])))

    def valid_tiny(self) -> Any:
        return self.frame(self.pick(INTENSITY), self.pick(TINY))

    def valid_thin(self) -> Any:
        return self.frame(self.pick(INTENSITY), self.pick(THIN))

    def size_change(self) -> Any:
        self.size, self.size_left = self.pick(SIZES[1:]), int(self.rng.integers(3, 30))
        return self.frame()

    def stamp_backwards(self) -> Any:
        self.stamp -= int(self.rng.integers(5, 120)) * 1_000_000_000
        return self.frame(stamp=self.stamp)

    def stamp_repeated(self) -> Any:
        return self.frame(stamp=self.stamp)

    def stamp_jump_forward(self) -> Any:
        self.stamp += int(self.rng.integers(2, 3600)) * 1_000_000_000
        return self.frame(stamp=self.stamp)

    def stamp_zero(self) -> Any:
        return self.frame(stamp=(0, 0))

    def stamp_negative(self) -> Any:  # int32 seconds before the epoch
        return self.frame(stamp=(-int(self.rng.integers(1, 2**31 - 1)), 0))

    def stamp_nanosec_overflow(self) -> Any:  # nanosec >= 1e9 (uint32 allows it)
        sec = self.stamp // 1_000_000_000 + 1
        return self.frame(stamp=(sec, int(self.rng.integers(1_000_000_000, 2**32))))

    def frame_id_odd(self) -> Any:
        return self.frame(frame_id=self.pick(["", "/camera", "caméra", "x" * 1000, "a b\tc"]))

    # -------------------------------------------------------------- malformed (counted as bad_image)
    def _bytes(self, n: int) -> np.ndarray:
        return self.rng.integers(0, 256, max(int(n), 0), dtype=np.uint8)

    def _raw(self, width: int, height: int, encoding: str, step: int | None = None, data_len: int | None = None,
             is_bigendian: int = 0) -> Any:
        step = width * pixel_bytes(encoding) if step is None else step
        data_len = step * height if data_len is None else data_len
        return image(height, width, encoding, is_bigendian, step, self._bytes(data_len), self._next_stamp())

    def unknown_encoding(self) -> Any:
        w, h = self.size
        return self._raw(w, h, self.pick(UNKNOWN_ENCODINGS))

    def float_32FC1(self) -> Any:  # not an intensity image: NaN / inf / ordinary depths alike
        w, h = self.size
        values = np.array([np.nan, np.inf, -np.inf, 0.0, 1.5, -3.0, 1e38, np.float32(1e-45)], np.float32)
        depth = values[self.rng.integers(0, len(values), (h, w))]
        big = bool(self.rng.integers(2))
        data = depth.astype(">f4" if big else "<f4").view(np.uint8)
        return image(h, w, "32FC1", int(big), w * 4, data, self._next_stamp())

    def zero_width(self) -> Any:
        return self._raw(0, self.size[1], self.pick(INTENSITY), step=int(self.pick([0, 160])))

    def zero_height(self) -> Any:
        return self._raw(self.size[0], 0, self.pick(INTENSITY))

    def zero_size(self) -> Any:
        return image(0, 0, self.pick(INTENSITY), 0, 0, self._bytes(int(self.pick([0, 0, 7]))), self._next_stamp())

    def huge_width(self) -> Any:
        enc, w = self.pick(INTENSITY), int(self.pick([2**32 - 1, 2**31, 1_000_000]))
        step = int(self.pick([0, 160, 2**32 - 1]))
        return self._raw(w, self.size[1], enc, step=step, data_len=self.size[0] * self.size[1])

    def huge_height(self) -> Any:
        enc, h = self.pick(INTENSITY), int(self.pick([2**32 - 1, 2**31, 1_000_000]))
        return self._raw(self.size[0], h, enc, data_len=self.size[0] * self.size[1] * pixel_bytes(enc))

    def wrong_width(self) -> Any:  # width ± 1 with step to match it, data of the real size
        enc, (w, h) = self.pick(INTENSITY), self.size
        claimed = w + int(self.pick([-1, 1]))
        return self._raw(claimed, h, enc, step=claimed * pixel_bytes(enc), data_len=w * h * pixel_bytes(enc))

    def wrong_height(self) -> Any:
        enc, (w, h) = self.pick(INTENSITY), self.size
        return self._raw(w, h + int(self.pick([-1, 1, 100])), enc, data_len=w * h * pixel_bytes(enc))

    def step_too_small(self) -> Any:
        enc, (w, h) = self.pick(INTENSITY), self.size
        row = w * pixel_bytes(enc)
        step = int(self.pick([0, row - 1, row // 2]))
        return self._raw(w, h, enc, step=step, data_len=row * h)

    def step_too_large(self) -> Any:  # step beyond the row (odd too) but data for the tight rows
        enc, (w, h) = self.pick(INTENSITY), self.size
        row = w * pixel_bytes(enc)
        return self._raw(w, h, enc, step=row + int(self.pick([1, 3, row])), data_len=row * h)

    def data_truncated(self) -> Any:
        enc, (w, h) = self.pick(INTENSITY), self.size
        n = w * h * pixel_bytes(enc)
        return self._raw(w, h, enc, data_len=n - int(self.pick([1, w * pixel_bytes(enc), n // 2, n - 1])),
                         is_bigendian=int(self.rng.integers(2)))

    def data_empty(self) -> Any:
        enc, (w, h) = self.pick(INTENSITY), self.size
        return self._raw(w, h, enc, data_len=0)

    def data_too_long(self) -> Any:
        enc, (w, h) = self.pick(INTENSITY), self.size
        n = w * h * pixel_bytes(enc)
        return self._raw(w, h, enc, data_len=n + int(self.pick([1, w * pixel_bytes(enc), n])))


PROCESSED = frozenset({"processed"})
BAD_IMAGE = frozenset({"bad_image"})
#: image class → malformed (counted as bad_image) or not (decoded and given to the stage)
IMAGE_CLASSES: dict[str, bool] = {
    "valid_encoding": False, "valid_bigendian_16bit": False, "valid_bigendian_flag_8bit": False,
    "valid_padded_step": False, "valid_tiny": False, "valid_thin": False, "size_change": False,
    "stamp_backwards": False, "stamp_repeated": False, "stamp_jump_forward": False, "stamp_zero": False,
    "stamp_negative": False, "stamp_nanosec_overflow": False, "frame_id_odd": False,
    "unknown_encoding": True, "float_32FC1": True, "zero_width": True, "zero_height": True, "zero_size": True,
    "huge_width": True, "huge_height": True, "wrong_width": True, "wrong_height": True, "step_too_small": True,
    "step_too_large": True, "data_truncated": True, "data_empty": True, "data_too_long": True,
}


def image_case(images: ImageStream, cls: str, between_ok: bool) -> Case:
    msg = getattr(images, cls)()
    malformed = IMAGE_CLASSES.get(cls, False)
    expect = BAD_IMAGE if malformed else PROCESSED | ({"between_keyframes"} if between_ok else set())
    return Case("image", cls, msg, frozenset(expect), describe_image(msg))


# ---------------------------------------------------------------------------- camera info, GPS
CAMERA_INFO_CLASSES: dict[str, frozenset[str]] = {
    "camera_info": frozenset({"camera_info"}),
    "camera_info_other_size": frozenset({"camera_info"}),
    "camera_info_extreme_k": frozenset({"camera_info"}),
    "camera_info_distortion_length": frozenset({"camera_info"}),
    "camera_info_distortion_wrong_length": frozenset({"bad_camera_info"}),
    "camera_info_distortion_model": frozenset({"camera_info"}),
    "camera_info_distortion_nonfinite": frozenset({"bad_camera_info"}),
    "camera_info_k_nan": frozenset({"bad_camera_info"}),
    "camera_info_k_inf": frozenset({"bad_camera_info"}),
    "camera_info_k_zero": frozenset({"bad_camera_info"}),
    "camera_info_f_negative": frozenset({"bad_camera_info"}),
    "camera_info_size_zero": frozenset({"bad_camera_info"}),
}


def camera_info_case(images: ImageStream, cls: str) -> Case:
    rng = images.rng
    w, h = images.size
    size = images.pick(SIZES) if cls == "camera_info_other_size" else (w, h)
    K = np.array([[0.9 * size[0], 0, size[0] / 2], [0, 0.9 * size[0], size[1] / 2], [0, 0, 1]], float)
    model, d = "plumb_bob", np.array([-0.05, 0.01, 0.0, 0.0, 0.0])
    if cls == "camera_info_extreme_k":
        K[0, 0] = K[1, 1] = float(images.pick([1e-9, 1e12]))
        K[0, 2] = float(images.pick([-1e6, 1e6, K[0, 2]]))
    elif cls == "camera_info_distortion_length":  # the counts OpenCV takes (none: no distortion)
        d = rng.normal(0, 0.05, int(images.pick([0, 4, 5, 8, 12, 14])))
    elif cls == "camera_info_distortion_wrong_length":
        d = rng.normal(0, 0.05, int(images.pick([1, 2, 3, 6, 7, 9, 50])))
    elif cls == "camera_info_distortion_model":  # unknown models: coefficients ignored
        model = images.pick(["", "equidistant", "rational_polynomial", "fisheye_x", "PLUMB_BOB"])
        d = rng.normal(0, 0.05, int(images.pick([4, 5, 8])) if model in ("", "equidistant", "rational_polynomial")
                       else int(images.pick([0, 3, 7])))
    elif cls == "camera_info_distortion_nonfinite":
        model = images.pick(["plumb_bob", "rational_polynomial", "equidistant"])
        d = rng.normal(0, 0.05, 8 if model == "rational_polynomial" else 5 if model == "plumb_bob" else 4)
        d[int(rng.integers(len(d)))] = images.pick([np.nan, np.inf, -np.inf])
    elif cls == "camera_info_k_nan":
        K.flat[int(images.pick([0, 2, 4, 5, 8]))] = np.nan
    elif cls == "camera_info_k_inf":
        K.flat[int(images.pick([0, 2, 4, 5]))] = images.pick([np.inf, -np.inf])
    elif cls == "camera_info_k_zero":
        K[:] = 0.0
    elif cls == "camera_info_f_negative":
        i = int(images.pick([0, 1]))
        K[i, i] = -K[i, i]
    elif cls == "camera_info_size_zero":
        size = images.pick([(0, h), (w, 0), (0, 0)])
    types = _types()
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    msg = types["sensor_msgs/msg/CameraInfo"](
        header=_header(images.stamp, "camera"), height=int(size[1]), width=int(size[0]), distortion_model=model,
        d=np.asarray(d, np.float64), k=K.reshape(9), r=np.eye(3).reshape(9),
        p=np.hstack([K, np.zeros((3, 1))]).reshape(12), binning_x=0, binning_y=0, roi=roi)
    repro = (f"CameraInfo {size[0]}x{size[1]} K={np.array2string(K.reshape(9), precision=3)} "
             f"model={model!r} d={np.array2string(np.asarray(d), precision=3)}")
    return Case("camera_info", cls, msg, CAMERA_INFO_CLASSES[cls], repro)


GPS_CLASSES: dict[str, frozenset[str]] = {
    "gps": frozenset({"gps"}),
    "gps_nan_altitude": frozenset({"gps"}),
    "gps_range_edge": frozenset({"gps"}),
    "gps_out_of_range": frozenset({"gps_no_fix"}),
    "gps_status_odd": frozenset({"gps"}),
    "gps_stamp_backwards": frozenset({"gps"}),
    "gps_nan_position": frozenset({"gps_no_fix"}),
    "gps_inf_position": frozenset({"gps_no_fix"}),
    "gps_no_fix": frozenset({"gps_no_fix"}),
}
LAT0, LON0 = 51.7520, -1.2577  # metres of the texture: 0.1 m per pixel


def gps_case(images: ImageStream, cls: str) -> Case:
    x, y = images.scene.centre(images.k)
    lat = LAT0 + y * 0.1 / 111_111.0
    lon = LON0 + x * 0.1 / (111_111.0 * math.cos(math.radians(LAT0)))
    alt, status, stamp = 70.0, 0, images.stamp + DT
    if cls == "gps_nan_altitude":
        alt = float(images.pick([np.nan, np.inf, -np.inf]))
    elif cls == "gps_out_of_range":
        lat, lon = images.pick([(91.0, lon), (-1000.0, lon), (lat, 540.0), (lat, -180.5), (1e300, -1e300)])
    elif cls == "gps_range_edge":
        lat, lon = images.pick([(90.0, 180.0), (-90.0, -180.0), (lat, 180.0), (-90.0, lon)])
    elif cls == "gps_status_odd":
        status = int(images.pick([1, 2, -2, 127, -128]))
    elif cls == "gps_stamp_backwards":
        stamp = images.stamp - int(images.rng.integers(1, 600)) * 1_000_000_000
    elif cls == "gps_nan_position":
        lat, lon = images.pick([(np.nan, lon), (lat, np.nan), (np.nan, np.nan)])
    elif cls == "gps_inf_position":
        lat, lon = images.pick([(np.inf, lon), (lat, -np.inf)])
    elif cls == "gps_no_fix":
        status = -1
    types = _types()
    msg = types["sensor_msgs/msg/NavSatFix"](
        header=_header(stamp, "gps"), status=types["sensor_msgs/msg/NavSatStatus"](status=status, service=1),
        latitude=float(lat), longitude=float(lon), altitude=float(alt),
        position_covariance=np.diag([4.0, 4.0, 16.0]).reshape(9), position_covariance_type=2)
    repro = f"NavSatFix status={status} lat={lat!r} lon={lon!r} alt={alt!r} stamp={stamp}"
    return Case("gps", cls, msg, GPS_CLASSES[cls], repro)


# ---------------------------------------------------------------------------- odometry, loop closures
ODOMETRY_CLASSES: dict[str, frozenset[str]] = {
    "odometry_restart": frozenset({"odometry"}),
    "odometry_stamp_backwards": frozenset({"odometry", "bad_odometry"}),
    "odometry_stamp_repeated": frozenset({"odometry", "bad_odometry"}),
    "odometry_quaternion_not_unit": frozenset({"odometry", "bad_odometry"}),
    "odometry_covariance_odd": frozenset({"odometry", "bad_odometry"}),
    "odometry_position_huge": frozenset({"odometry", "bad_odometry"}),
    "odometry_frame_odd": frozenset({"odometry"}),
    "odometry_nan_position": frozenset({"bad_odometry"}),
    "odometry_inf_position": frozenset({"bad_odometry"}),
    "odometry_nan_quaternion": frozenset({"bad_odometry"}),
    "odometry_zero_quaternion": frozenset({"bad_odometry"}),
    "odometry_nan_covariance": frozenset({"bad_odometry"}),
    "odometry_inf_covariance": frozenset({"bad_odometry"}),
}
LOOP_CLASSES: dict[str, frozenset[str]] = {
    "loops": frozenset({"loops"}),
    "loops_empty": frozenset({"loops"}),
    "loops_many": frozenset({"loops"}),
    "loops_unverified_nan": frozenset({"loops"}),
    "loops_covariance_odd": frozenset({"loops", "bad_loop_closure"}),  # a variance not positive: skipped
    "loops_translation_odd": frozenset({"loops"}),
    "loops_quaternion_not_unit": frozenset({"loops"}),
    "loops_stamp_unknown": frozenset({"loops"}),
    "loops_stamp_future": frozenset({"loops"}),
    "loops_match_not_before": frozenset({"loops"}),
    "loops_nan_position": frozenset({"bad_loop_closure"}),
    "loops_inf_position": frozenset({"bad_loop_closure"}),
    "loops_nan_quaternion": frozenset({"bad_loop_closure"}),
    "loops_zero_quaternion": frozenset({"bad_loop_closure"}),
}


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _quat(R: np.ndarray) -> np.ndarray:
    from deep_vision.geometry.transforms import quaternion_from_rotation

    return np.asarray(quaternion_from_rotation(R), float)


class GraphStream:
    """Odometry of a base driving laps of a 20 m circle at 10 Hz, and the loop closures between laps."""

    period = 628

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.k = 0
        self.stamp = T0
        self.origin = np.eye(4)  # world pose of the current trajectory's odom frame
        self.start_k = 0
        self.sent: list[tuple[int, int]] = []  # (stamp, k) of the current epoch's odometry

    def world(self, k: int) -> np.ndarray:
        a = 2 * math.pi * k / self.period
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = _rz(a), [20 * math.sin(a), 20 * (1 - math.cos(a)), 0.0]
        return T

    def pick(self, seq: list) -> Any:
        return seq[int(self.rng.integers(len(seq)))]

    def _odometry_msg(self, T: np.ndarray, cov: np.ndarray, stamp: int, quat: np.ndarray | None = None,
                      frame_id: str = "odom", child: str = "base_link") -> Any:
        types = _types()
        q = _quat(T[:3, :3]) if quat is None else quat
        pose = types["geometry_msgs/msg/Pose"](
            position=types["geometry_msgs/msg/Point"](x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
            orientation=types["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                                              w=float(q[3])))
        v = types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
        return types["nav_msgs/msg/Odometry"](
            header=_header(stamp, frame_id), child_frame_id=child,
            pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.asarray(cov, float).reshape(36)),
            twist=types["geometry_msgs/msg/TwistWithCovariance"](
                twist=types["geometry_msgs/msg/Twist"](linear=v, angular=v), covariance=np.zeros(36)))

    def odometry(self, cls: str = "odometry") -> Case:
        self.k += 1
        stamp = self.stamp = self.stamp + DT
        if cls == "odometry_restart":
            self.origin, self.start_k = self.world(self.k), self.k
        elif cls == "odometry_stamp_backwards":
            stamp = self.stamp = self.stamp - int(self.rng.integers(5, 300)) * 1_000_000_000
        elif cls == "odometry_stamp_repeated":
            stamp = self.stamp = self.stamp - DT
        T = np.linalg.inv(self.origin) @ self.world(self.k)
        n = self.k - self.start_k
        cov = np.diag([0.01] * 3 + [1e-4] * 3) * n
        quat, frame_id, child = None, "odom", "base_link"
        if cls == "odometry_quaternion_not_unit":
            quat = _quat(T[:3, :3]) * float(self.pick([0.51, 0.7, 3.0, 1e6]))
        elif cls == "odometry_covariance_odd":
            cov = self.pick([-cov, np.zeros((6, 6)), np.full((6, 6), 1e300), np.triu(np.ones((6, 6))),
                             np.diag([1e-300] * 6), np.diag([0.01] * 3 + [-1.0] * 3)])
        elif cls == "odometry_position_huge":
            T = T.copy()
            T[:3, 3] = self.pick([[1e300, 0, 0], [1e15, -1e15, 1e15], [0, 0, -1e308]])
        elif cls == "odometry_frame_odd":
            frame_id, child = self.pick([("", ""), ("map", "base_link"), ("odom", "x" * 500)])
        elif cls in ("odometry_nan_position", "odometry_inf_position"):
            T = T.copy()
            T[int(self.rng.integers(3)), 3] = np.nan if "nan" in cls else self.pick([np.inf, -np.inf])
        elif cls == "odometry_nan_quaternion":
            quat = _quat(T[:3, :3])
            quat[int(self.rng.integers(4))] = np.nan
        elif cls == "odometry_zero_quaternion":
            quat = self.pick([np.zeros(4), np.full(4, 1e-3), np.array([0.1, 0.1, 0.1, 0.1])])
        elif cls == "odometry_nan_covariance":
            cov = cov.copy()
            cov.flat[int(self.rng.integers(36))] = np.nan
        elif cls == "odometry_inf_covariance":
            cov = cov.copy()
            cov.flat[int(self.rng.integers(36))] = self.pick([np.inf, -np.inf])
        if cls in ("odometry_stamp_backwards",):
            self.sent = []
        if cls not in ODOMETRY_CLASSES or not ODOMETRY_CLASSES[cls] <= {"bad_odometry"}:
            self.sent.append((stamp, self.k))
        msg = self._odometry_msg(T, cov, stamp, quat, frame_id, child)
        q = quat if quat is not None else _quat(T[:3, :3])
        repro = (f"Odometry stamp={stamp} frame={frame_id[:20]!r}/{child[:20]!r} position={T[:3, 3].tolist()} "
                 f"quaternion={np.asarray(q).tolist()} covariance diag={np.diag(cov).tolist()}")
        return Case("odometry", cls, msg, ODOMETRY_CLASSES.get(cls, frozenset({"odometry"})), repro)

    # -------------------------------------------------------------- loop closures
    def _candidate(self, query: tuple[int, int], match: tuple[int, int], verified: bool = True,
                   has_pose: bool = True, T: np.ndarray | None = None, quat: np.ndarray | None = None,
                   cov: np.ndarray | None = None) -> Any:
        types = _types()
        if T is None:  # T_query_match between the base_link frames
            T = np.linalg.inv(self.world(query[1])) @ self.world(match[1])
        q = _quat(T[:3, :3]) if quat is None else quat
        pose = types["geometry_msgs/msg/Pose"](
            position=types["geometry_msgs/msg/Point"](x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
            orientation=types["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                                              w=float(q[3])))
        cov = np.diag([0.04, 0.04, 0.04, 1e-4, 1e-4, 1e-4]) if cov is None else cov

        def s(ns: int) -> Any:
            return _time(*divmod(int(ns), 1_000_000_000)) if ns >= 0 else _time(-1, 0)
        return types["deep_vision_msgs/msg/LoopClosure"](
            query_stamp=s(query[0]), match_stamp=s(match[0]), query_id=int(query[1]), match_id=int(match[1]),
            query_session=0, match_session=0,
            similarity=float(self.rng.random()), verified=bool(verified), inliers=int(self.rng.integers(0, 300)),
            has_relative_pose=bool(has_pose), metric_translation=True, frame_id="base_link",
            relative_pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.asarray(cov, float).reshape(36)))

    def loops(self, cls: str = "loops") -> Case:
        """A LoopClosureArray for the newest odometry frame: the same place one lap earlier (when driven)."""
        if not self.sent:
            query, earlier = (self.stamp, self.k), []
        else:
            query = self.sent[-1]
            earlier = [s for s in self.sent if s[1] <= query[1] - self.period + 5 and s[0] < query[0]]
        match = min(earlier, key=lambda s: abs(query[1] - self.period - s[1])) if earlier else \
            (self.sent[0] if self.sent else query)
        first: list[Any] = []
        if cls in ("loops_nan_position", "loops_inf_position", "loops_nan_quaternion", "loops_zero_quaternion",
                   "loops_translation_odd", "loops_quaternion_not_unit", "loops_covariance_odd",
                   "loops_unverified_nan"):
            T = np.linalg.inv(self.world(query[1])) @ self.world(match[1])
            quat, cov = _quat(T[:3, :3]), None
            if cls in ("loops_nan_position", "loops_inf_position", "loops_unverified_nan"):
                T = T.copy()
                T[int(self.rng.integers(3)), 3] = self.pick([np.inf, -np.inf]) if "inf" in cls else np.nan
            elif cls == "loops_nan_quaternion":
                quat = quat.copy()
                quat[int(self.rng.integers(4))] = np.nan
            elif cls == "loops_zero_quaternion":
                quat = np.zeros(4)
            elif cls == "loops_translation_odd":
                T = T.copy()
                T[:3, 3] = self.pick([[0.0, 0.0, 0.0], [1e308, 1e308, 0.0], [1e-12, 0, 0], [1e200, -1e200, 1e200]])
            elif cls == "loops_quaternion_not_unit":
                quat = quat * float(self.pick([0.51, 7.0, 1e10]))
            elif cls == "loops_covariance_odd":
                cov = self.pick([np.full((6, 6), np.nan), -np.eye(6), np.zeros((6, 6)), np.full((6, 6), 1e300),
                                 np.diag([np.inf] * 6), np.diag([1.0] * 3 + [1e-300] * 3)])
            first = [self._candidate(query, match, verified=cls != "loops_unverified_nan", T=T, quat=quat, cov=cov)]
        elif cls == "loops_stamp_unknown":
            first = [self._candidate((query[0] + 12_345, query[1]), (match[0] - 777_777_777, match[1]))]
        elif cls == "loops_stamp_future":
            first = [self._candidate((query[0] + int(self.rng.integers(1, 20)) * DT, query[1]), match)]
        elif cls == "loops_match_not_before":
            first = [self._candidate(match, query) if self.pick([0, 1]) else self._candidate(query, query)]
        others = [self._candidate(query, match, verified=False), self._candidate(query, match, has_pose=False)]
        if cls == "loops_many":
            others += [self._candidate(query, self.pick(self.sent) if self.sent else match) for _ in range(50)]
        if cls != "loops_empty" and not first:
            first = [self._candidate(query, match)]
        candidates = [] if cls == "loops_empty" else first + others
        types = _types()
        msg = types["deep_vision_msgs/msg/LoopClosureArray"](header=_header(max(query[0], 0), "camera"),
                                                             candidates=candidates)
        c = candidates[0] if candidates else None
        repro = "LoopClosureArray with no candidate" if c is None else (
            f"LoopClosureArray of {len(candidates)}; first: query=({c.query_stamp.sec}, {c.query_stamp.nanosec}) "
            f"match=({c.match_stamp.sec}, {c.match_stamp.nanosec}) verified={c.verified} "
            f"has_relative_pose={c.has_relative_pose} position=({c.relative_pose.pose.position.x}, "
            f"{c.relative_pose.pose.position.y}, {c.relative_pose.pose.position.z}) orientation=("
            f"{c.relative_pose.pose.orientation.x}, {c.relative_pose.pose.orientation.y}, "
            f"{c.relative_pose.pose.orientation.z}, {c.relative_pose.pose.orientation.w}) covariance diag="
            f"{np.diag(np.asarray(c.relative_pose.covariance).reshape(6, 6)).tolist()}")
        return Case("loop_closures", cls, msg, LOOP_CLASSES[cls], repro)


# ---------------------------------------------------------------------------- the streams
def _schedule(rng: np.random.Generator, classes: list[str]) -> Iterator[str]:
    """Every class once per round, in a fresh order each round."""
    while True:
        for i in rng.permutation(len(classes)):
            yield classes[int(i)]


def homography_stream(rng: np.random.Generator) -> Iterator[Case]:
    images = ImageStream(rng)
    odd = _schedule(rng, list(IMAGE_CLASSES))
    while True:  # valid frames between the others, so that pairs keep forming
        yield image_case(images, "valid", False)
        yield image_case(images, next(odd), False)


def odometry_stream(rng: np.random.Generator) -> Iterator[Case]:
    """Frames (the first ones before any camera info: network mode until then) and camera infos."""
    images = ImageStream(rng)
    odd = _schedule(rng, list(IMAGE_CLASSES) + list(CAMERA_INFO_CLASSES) + ["camera_info"] * 4)
    for _ in range(5):
        yield image_case(images, "valid", False)
    while True:
        yield image_case(images, "valid", False)
        cls = next(odd)
        yield camera_info_case(images, cls) if cls in CAMERA_INFO_CLASSES else image_case(images, cls, False)


def place_stream(rng: np.random.Generator) -> Iterator[Case]:
    """Frames, camera infos and GPS fixes (a good fix before most frames)."""
    images = ImageStream(rng)
    odd = _schedule(rng, list(IMAGE_CLASSES) + list(CAMERA_INFO_CLASSES) + list(GPS_CLASSES) + ["camera_info"] * 3)
    yield camera_info_case(images, "camera_info")
    while True:
        yield gps_case(images, "gps")
        yield image_case(images, "valid", True)
        cls = next(odd)
        if cls in CAMERA_INFO_CLASSES:
            yield camera_info_case(images, cls)
        elif cls in GPS_CLASSES:
            yield gps_case(images, cls)
        else:
            yield image_case(images, cls, True)


def pose_graph_stream(rng: np.random.Generator) -> Iterator[Case]:
    graph = GraphStream(rng)
    odd = _schedule(rng, list(ODOMETRY_CLASSES) + list(LOOP_CLASSES) + ["loops"] * 8)
    yield graph.odometry("odometry_restart")  # identity, zero covariance: a trajectory's first frame
    while True:
        yield graph.odometry()
        cls = next(odd)
        yield graph.odometry(cls) if cls in ODOMETRY_CLASSES else graph.loops(cls)


def stream(node: str, seed: int) -> Iterator[Case]:
    """``node``'s seeded stream."""
    rng = np.random.default_rng([seed, NODES.index(node)])
    return {"homography": homography_stream, "odometry": odometry_stream, "place": place_stream,
            "pose_graph": pose_graph_stream}[node](rng)


# ============================================================================ the nodes
#: node → (module in deep_vision.nodes, class, parameter overrides); every other parameter keeps its declared
#: default, which is what config/perception.yaml holds (a test keeps them equal)
NODE_CLASSES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "homography": ("homography_node", "HomographyNode", {"backend": "onnxruntime", "threads": 1}),
    # hybrid with the ground scale (as the one-system test): camera infos switch it from the network mode
    "odometry": ("odometry_node", "OdometryNode",
                 {"backend": "onnxruntime", "threads": 1, "mode": "hybrid", "scale_source": "ground"}),
    "place": ("place_recognition_node", "PlaceRecognitionNode", {"descriptor": "sad"}),
    "pose_graph": ("pose_graph_node", "PoseGraphNode", {}),
}
#: message kind → (the topic the nodes subscribe it on, its type)
TOPICS: dict[str, tuple[str, str]] = {
    "image": ("/image", "sensor_msgs/msg/Image"), "camera_info": ("/camera_info", "sensor_msgs/msg/CameraInfo"),
    "gps": ("/gps/fix", "sensor_msgs/msg/NavSatFix"), "odometry": ("/odometry", "nav_msgs/msg/Odometry"),
    "loop_closures": ("/loop_closures", "deep_vision_msgs/msg/LoopClosureArray")}
#: message kind → ([(node counter, outcome when it moved)], outcome when none did)
OUTCOMES: dict[str, tuple[list[tuple[str, str]], str]] = {
    "image": ([("bad_image", "bad_image"), ("frames_between_keyframes", "between_keyframes")], "processed"),
    "camera_info": ([("bad_camera_info", "bad_camera_info")], "camera_info"),
    "gps": ([("gps_no_fix", "gps_no_fix")], "gps"),
    "odometry": ([("bad_odometry", "bad_odometry"), ("frames_out", "odometry")], "unaccounted"),
    "loop_closures": ([("bad_loop_closure", "bad_loop_closure")], "loops"),
}
DRAIN_TIMEOUT_S = 120.0  # one frame; a longer one is a hang, not a slow frame


def random_vo_model(folder: Path) -> Path:
    """A randomly initialised DeepVO exported with its card into ``folder``, as tests/conftest.py's
    ``random_vo_model`` (the odometry node's start-up path; what the network says is beside the point here)."""
    from deep_vision.inference.export import export_onnx
    from deep_vision.models.deepvo import DeepVO

    model = DeepVO().eval()
    spec = model.input_spec()
    path = Path(folder) / "vo.onnx"
    export_onnx(model, model.example_inputs(), path, output_names=["motion", "h1", "c1"], random_trials=1,
                card_fields={"model_class": "deepvo", "model_config": model.conf, "inputs": spec["inputs"],
                             "outputs": spec["outputs"]})
    return path


class NodeUnderTest:
    """One shipped node in its own rclpy Context (:class:`~deep_vision.nodes.harness.NodeHarness`), fed through
    its own subscriptions' callbacks; ``errors`` keeps what its FrameQueue caught (the queue still logs it)."""

    def __init__(self, name: str, vo_model: Path | None = None) -> None:
        from deep_vision.nodes.harness import NodeHarness
        from rclpy.parameter import Parameter

        module, cls_name, overrides = NODE_CLASSES[name]
        if name == "odometry":
            overrides = {**overrides, "model_path": str(vo_model)}
        cls = getattr(importlib.import_module(f"deep_vision.nodes.{module}"), cls_name)
        self.name = name
        self.harness = NodeHarness(f"fuzz_{name}")
        try:
            self.node = self.harness.add_node(lambda context: cls(
                context=context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()]))
        except BaseException:
            self.harness.shutdown()
            raise
        self.subs = {sub.topic_name: sub for sub in self.node.subscriptions}
        self.errors: list[Exception] = []
        self.frames = getattr(self.node, "frames", None)
        if self.frames is not None:
            logged = self.frames.on_error

            def on_error(exc: Exception) -> None:
                self.errors.append(exc)
                if logged is not None:
                    logged(exc)

            self.frames.on_error = on_error

    def feed(self, kind: str, raw: bytes) -> tuple[Counter[str], Exception | None]:
        """Give ``raw`` (CDR) to the node's subscription of ``kind``'s topic as rclpy's executor does, wait for
        its frame queue; the node's counters that moved, and the exception that crashed the message (if one)."""
        before, caught = self.node.diag.counts(), len(self.errors)
        escaped = None
        try:
            self.subs[TOPICS[kind][0]].callback(raw)
        except Exception as exc:  # noqa: BLE001 - out of a callback: rclpy's spin would raise it
            escaped = exc
        if self.frames is not None and not self.frames.drain(DRAIN_TIMEOUT_S):
            raise TimeoutError(f"{self.name}: a frame still unprocessed after {DRAIN_TIMEOUT_S:.0f} s")
        moved = self.node.diag.counts() - before
        if escaped is None and self.errors[caught:]:
            escaped = self.errors[caught]
        elif escaped is None and moved.get("errors"):
            escaped = RuntimeError("the frame queue counted an error without passing it to on_error")
        return moved, escaped

    def close(self) -> None:
        self.harness.shutdown()


def outcome_of(kind: str, moved: Counter[str]) -> str:
    """The message's outcome: the kind's counters that moved (``+``-joined), else its default."""
    counters, default = OUTCOMES[kind]
    return "+".join(name for counter, name in counters if moved.get(counter)) or default


# ============================================================================ running
@dataclass
class NodeResult:
    node: str
    messages: int = 0
    wall_s: float = 0.0  # the messages, the node's start-up excluded
    build_s: float = 0.0
    by_kind: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)
    classes: dict[str, dict[str, Any]] = field(default_factory=dict)  # class → {malformed, sent, outcomes}
    crashes: list[dict[str, Any]] = field(default_factory=list)
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    unserialisable: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def malformed(self) -> int:
        return sum(c["sent"] for c in self.classes.values() if c["malformed"])

    def to_json(self) -> dict[str, Any]:
        """The figures; crashes grouped by place and error (with the first of each in full), 20 of them listed."""
        return {"node": self.node, "messages": self.messages, "wall_s": round(self.wall_s, 2),
                "build_s": round(self.build_s, 2), "by_kind": dict(self.by_kind), "outcomes": dict(self.outcomes),
                "malformed": self.malformed, "crash_count": len(self.crashes),
                "crash_groups": crash_groups(self.crashes), "crashes": self.crashes[:20],
                "unexpected": self.unexpected[:50], "unexpected_count": len(self.unexpected),
                "unserialisable": self.unserialisable[:20], "unserialisable_count": len(self.unserialisable),
                "counters": self.counters, "published": self.published, "checks": self.checks,
                "classes": self.classes}


def crash_groups(crashes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Crashes by (place, first line of the error): count, classes, the first one."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in crashes:
        name, _, message = c["error"].partition(": ")
        line = next((x.strip() for x in message.splitlines() if x.strip()), "")  # GTSAM's start with a newline
        groups.setdefault((c["where"], f"{name}: {line}"[:140]), []).append(c)
    return [{"where": where, "error": error, "count": len(cs), "classes": dict(Counter(c["class"] for c in cs)),
             "first": cs[0]} for (where, error), cs in groups.items()]


def crash_record(index: int, case: Case, exc: BaseException) -> dict[str, Any]:
    """Where (the innermost deep_vision frame), what and the message that did it."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = next((f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno} {f.name}"
                  for f in reversed(tb) if "deep_vision" in f.filename),
                 f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?")
    return {"index": index, "kind": case.kind, "class": case.cls, "repro": case.repro,
            "error": f"{type(exc).__name__}: {str(exc)[:300]}", "where": where,
            "traceback": traceback.format_exception(exc)[-6:]}


MALFORMED_OUTCOMES = {"bad_image", "bad_camera_info", "gps_no_fix", "bad_odometry", "bad_loop_closure"}


def run_node(node: str, messages: int, seed: int = 0, progress: bool = True,
             vo_model: Path | None = None) -> NodeResult:
    """Feed ``messages`` messages of ``node``'s seeded stream to the shipped node (``vo_model``: the odometry
    node's network)."""
    from deep_vision.io.rosmsg import typestore

    store = typestore()
    result = NodeResult(node)
    t0 = time.perf_counter()
    target = NodeUnderTest(node, vo_model)
    result.build_s = time.perf_counter() - t0
    try:
        gen = stream(node, seed)
        candidates = 0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=messages, desc=f"{node:>10}", unit="msg", file=sys.stderr, mininterval=1.0)
        t0 = time.perf_counter()
        for i in range(messages):
            case = next(gen)
            try:  # what a publisher puts on the wire: a message that cannot be serialised never reaches a node
                raw = bytes(store.serialize_cdr(case.msg, TOPICS[case.kind][1]))
            except Exception as exc:  # noqa: BLE001 - reported, not sent
                outcome = "unserialisable"
                result.unserialisable.append({"index": i, "class": case.cls, "repro": case.repro,
                                              "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            else:
                moved, exc = target.feed(case.kind, raw)
                if exc is not None:
                    outcome = "crash"
                    result.crashes.append(crash_record(i, case, exc))
                else:
                    outcome = outcome_of(case.kind, moved)
                result.by_kind[case.kind] += 1
                if case.kind == "loop_closures":
                    candidates += len(case.msg.candidates)
            result.outcomes[outcome] += 1
            c = result.classes.setdefault(case.cls, {"kind": case.kind, "expect": sorted(case.expect),
                                                     "malformed": case.expect <= MALFORMED_OUTCOMES, "sent": 0,
                                                     "outcomes": Counter()})
            c["sent"] += 1
            c["outcomes"][outcome] += 1
            if outcome not in case.expect and outcome not in ("crash", "unserialisable"):
                result.unexpected.append({"index": i, "class": case.cls, "outcome": outcome,
                                          "expect": sorted(case.expect), "repro": case.repro})
            if bar is not None:
                bar.update(1)
                if result.crashes:
                    bar.set_postfix(crashes=len(result.crashes), refresh=False)
        result.wall_s = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        target.node.diag.publish()  # the 1 Hz timer's callback, once: /diagnostics with the final counters
        result.counters = dict(sorted(target.node.diag.counts().items()))
        result.published = dict(sorted(target.node.out.sent.items()))
    finally:
        target.close()
    result.messages = messages
    for c in result.classes.values():
        c["outcomes"] = dict(c["outcomes"])
    result.checks = checks(result, candidates)
    return result


def checks(r: NodeResult, candidates: int) -> dict[str, Any]:
    """The accounting: every message sent moved the node's counters it should, once, and they add up."""
    c, o = r.counters, r.outcomes
    out: dict[str, Any] = {"crashes": len(r.crashes), "unexpected": len(r.unexpected),
                           "unserialisable": len(r.unserialisable),
                           "no frame dropped; errors == frames crashed": not c.get("dropped_frames") and
                           c.get("errors", 0) == sum(1 for x in r.crashes if x["kind"] == "image")}
    frames = r.by_kind.get("image", 0)
    if frames:
        between = o.get("between_keyframes", 0)
        out["images: frames_in == processed + bad_image + between_keyframes + crashed == images sent"] = (
            c.get("frames_in", 0) == o.get("processed", 0) + c.get("bad_image", 0) + between
            + c.get("errors", 0) == frames)
        if r.node == "place":
            out["place: frames_between_keyframes == between_keyframes"] = (
                c.get("frames_between_keyframes", 0) == between)
        elif r.node == "odometry":
            out["odometry: frames_out == processed"] = c.get("frames_out", 0) == o.get("processed", 0)
    if r.by_kind.get("camera_info"):
        out["camera infos: bad_camera_info counted"] = c.get("bad_camera_info", 0) == o.get("bad_camera_info", 0)
    if r.by_kind.get("gps"):
        out["gps: gps_no_fix counted"] = c.get("gps_no_fix", 0) == o.get("gps_no_fix", 0)
    if r.node == "pose_graph":
        out["odometry: frames_in == odometry + bad_odometry"] = (
            c.get("frames_in", 0) == o.get("odometry", 0) + c.get("bad_odometry", 0) == r.by_kind.get("odometry", 0))
        accounted = sum(c.get(k, 0) for k in ("loops_unverified", "loops_without_pose", "loops_beyond_per_keyframe",
                                              "bad_loop_closure", "loops_received", "pending_dropped",
                                              "pending_loops"))
        out["loop candidates: sent == unverified + without_pose + beyond_per_keyframe + bad + received + "
            "dropped + pending"] = accounted == candidates
        out["loop candidates sent"] = candidates
    return out


def ok(r: NodeResult) -> bool:
    return not r.crashes and not r.unexpected and all(v for v in r.checks.values() if isinstance(v, bool))


# ============================================================================ report
HARNESS = "the shipped nodes, fed through their subscriptions' callbacks"


def _machine() -> dict[str, Any]:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count()}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return info


def crash_summary(nodes: list[dict[str, Any]]) -> list[str]:
    """One line per distinct crash (node, place, error) of a results.json's ``nodes``: count, first message."""
    lines = []
    for n in nodes:
        for g in n["crash_groups"]:
            first = g["first"]
            classes = Counter(g["classes"])
            lines.append(f"- {n['node']}: {g['count']} x `{g['error']}` at {g['where']} (classes: "
                         + ", ".join(f"{k} {v}" for k, v in classes.most_common(4))
                         + f"); first #{first['index']} {first['class']}: {first['repro'][:200]}")
    return lines


def earlier_run(path: Path, out: Path) -> list[str]:
    """A README section on an earlier run (a results.json, or a folder holding one): its note, command, crashes."""
    path = path / "results.json" if path.is_dir() else path
    prior = json.loads(path.read_text())
    harness = prior.get("harness", "earlier harness: mirrors of the nodes' callbacks, since replaced by the nodes")
    try:
        shown = path.resolve().relative_to(out.resolve())
    except ValueError:
        shown = path
    return ["", f"## Before the fixes ({harness})", "",
            f"`{shown}`, on the code before the fixes (commit 80377a6 has them), same streams: "
            + ", ".join(f"{n['node']} {n['crash_count']} crashes, {n.get('unexpected_count', 0)} unexpected"
                        for n in prior["nodes"]) + ".", "", *([prior["note"], ""] if prior.get("note") else []),
            "```", prior["command"], "```", "", *(crash_summary(prior["nodes"]) or ["No crash."])]


def write_report(results: list[NodeResult], out: Path, command: str, seed: int, note: str = "",
                 before: list[Path] | None = None, vo_model: str = "") -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = {"date": datetime.date.today().isoformat(), "command": command, "seed": seed, "harness": HARNESS,
            "machine": _machine(), "note": note, "nodes": [r.to_json() for r in results]}
    (out / "results.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    lines = [
        "# Fuzz: malformed messages through the nodes themselves",
        "",
        (f"Produced by the command below (seed {seed}; {data['machine'].get('cpu', '?')}, "
         f"{data['machine'].get('cores')} cores, shared). Issue #29 item 6. Script: `bench/fuzz.py` (its docstring "
         "says how the nodes are driven); raw figures: `results.json`."),
        "",
        "```",
        command,
        "```",
        "",
        ("Each node (the shipped class, in its own rclpy Context) gets a seeded stream: valid frames of a view "
         "panning round a synthetic texture (so the stages keep state and places come back) interleaved with every "
         "malformed and unusual class below. Each message is serialised to CDR and given to the callback of the "
         "node's own subscription, as rclpy does; the node's frame queue is drained after each message (no drops). "
         "A crash is an exception out of a callback or one the frame queue counted as `errors`. Outcomes are read "
         "from the node's own counters (`node.diag.counts()`, what /diagnostics publishes)."),
        "",
        ("Parameters: the declared defaults (config/perception.yaml) but "
         + "; ".join(f"{r.node}: " + (", ".join(f"{k} {v}" for k, v in NODE_CLASSES[r.node][2].items()) or "none")
                     for r in results)
         + (f"; the odometry node's model_path: {vo_model or 'a random DeepVO exported as tests/conftest.py does'}."
            if any(r.node == "odometry" for r in results) else ".")),
        "",
        *([note, ""] if note else []),
        ("| node | messages | taken | counted bad (counter: n) | other outcomes | crashes | unexpected | "
         "checks | wall s (start-up) |"),
        "|---|---:|---:|---|---|---:|---:|---|---:|",
    ]
    for r in results:
        taken = sum(r.outcomes.get(k, 0) for k in ("processed", "camera_info", "gps", "odometry", "loops"))
        bad = ", ".join(f"{k}: {r.outcomes[k]}" for k in sorted(MALFORMED_OUTCOMES) if r.outcomes.get(k))
        other = ", ".join(f"{k}: {v}" for k, v in sorted(r.outcomes.items())
                          if k not in MALFORMED_OUTCOMES and k != "crash")
        passed = all(v for v in r.checks.values() if isinstance(v, bool))
        lines.append(f"| {r.node} | {r.messages} | {taken} | {bad} | {other} | {len(r.crashes)} | "
                     f"{len(r.unexpected)} | {'all hold' if passed else 'FAIL'} | {r.wall_s:.1f} ({r.build_s:.1f}) |")
    lines += ["", ("The node's counters at the end (NodeDiagnostics.counts(): what /diagnostics publishes) and "
                   "what it published (Outputs.sent):"), ""]
    for r in results:
        lines.append(f"- **{r.node}**: " + ", ".join(f"{k} {v}" for k, v in r.counters.items() if v)
                     + "; published " + (", ".join(f"{k} {v}" for k, v in r.published.items()) or "nothing"))
    if any(r.unserialisable for r in results):
        lines += ["", "Not sent (rosbags cannot serialise them, so no publisher could): "
                  + ", ".join(f"{r.node} {len(r.unserialisable)}" for r in results if r.unserialisable) + "."]
    lines += ["", "## Classes", "", "| node | class | malformed | sent | outcomes |", "|---|---|---|---:|---|"]
    for r in results:
        for name, c in sorted(r.classes.items(), key=lambda kv: (not kv[1]["malformed"], kv[0])):
            lines.append(f"| {r.node} | {name} | {'yes' if c['malformed'] else ''} | {c['sent']} | "
                         + ", ".join(f"{k} {v}" for k, v in sorted(c["outcomes"].items())) + " |")
    lines += ["", "## Crashes", ""]
    lines += crash_summary([r.to_json() for r in results]) or ["None."]
    for path in before or []:
        lines += earlier_run(path, out)
    lines += ["", "## Checks", ""]
    for r in results:
        for k, v in r.checks.items():
            lines.append(f"- {r.node}: {k}: {v}")
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages per node")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nodes", default=",".join(NODES))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--vo-model", default=None,
                        help="the odometry node's model_path (default: a random DeepVO exported to a temp folder)")
    parser.add_argument("--note", default="", help="a paragraph for the README (e.g. which code ran)")
    parser.add_argument("--before", action="append", default=[],
                        help="an earlier run's results.json (or its folder), summarised in the README; repeatable")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.ERROR)  # the stages warn on every reset: thousands of lines
    nodes = args.nodes.split(",")
    results = []
    with tempfile.TemporaryDirectory(prefix="fuzz_vo_") as tmp:
        vo_model = Path(args.vo_model) if args.vo_model else random_vo_model(Path(tmp)) if "odometry" in nodes \
            else None
        for node in nodes:
            r = run_node(node, args.messages, args.seed, vo_model=vo_model)
            results.append(r)
            print(f"{node}: {r.messages} messages, outcomes {dict(r.outcomes)}, {len(r.crashes)} crashes, "
                  f"{len(r.unexpected)} unexpected, {r.wall_s:.1f} s (+{r.build_s:.1f} s start-up)", flush=True)
            for c in r.crashes[:5]:
                print(f"  crash #{c['index']} {c['class']}: {c['error']} at {c['where']}", flush=True)
    command = shlex.join(["python", "bench/fuzz.py", *(argv if argv is not None else sys.argv[1:])])
    write_report(results, Path(args.out), command, args.seed, args.note, [Path(p) for p in args.before],
                 args.vo_model or "")
    print(f"wrote {Path(args.out) / 'README.md'} and results.json")
    return 0 if all(ok(r) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
