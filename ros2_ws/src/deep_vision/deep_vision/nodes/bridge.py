"""Convert between rosbags messages and rclpy messages through their common CDR bytes.

Both libraries serialize the same CDR, so any type known to both converts
exactly, whatever its fields, without per-type code.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any

from rclpy.serialization import deserialize_message, serialize_message

from deep_vision.errors import DeepVisionError
from deep_vision.io.rosmsg import typestore


@lru_cache(maxsize=None)
def rclpy_type(msgtype: str) -> Any:
    """The rclpy message class of ``pkg/msg/Name`` (raises with the package named if missing)."""
    try:
        pkg, kind, name = msgtype.split("/")
    except ValueError:
        raise DeepVisionError(f"message type must look like pkg/msg/Name, got {msgtype!r}") from None
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise DeepVisionError(f"ROS message type {msgtype} is not available in this environment: {exc}") from exc


def type_name(msg_or_cls: Any) -> str:
    """``pkg/msg/Name`` of an rclpy message instance or class."""
    cls = msg_or_cls if isinstance(msg_or_cls, type) else type(msg_or_cls)
    pkg = cls.__module__.split(".")[0]
    return f"{pkg}/msg/{cls.__name__}"


def cdr_to_rclpy(data: bytes | memoryview, msgtype: str) -> Any:
    return deserialize_message(bytes(data), rclpy_type(msgtype))


def rosbags_to_rclpy(msg: Any, msgtype: str) -> Any:
    return cdr_to_rclpy(typestore().serialize_cdr(msg, msgtype), msgtype)


def rclpy_to_rosbags(msg: Any) -> Any:
    return typestore().deserialize_cdr(serialize_message(msg), type_name(msg))
