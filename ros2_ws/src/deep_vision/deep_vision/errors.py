"""The package's exception hierarchy: one base, one subclass per kind of fault.

The CLI turns any :class:`DeepVisionError` into one log line and exit code 1.
"""


class DeepVisionError(Exception):
    """Base class of every error deep_vision raises on purpose."""


class ConfigError(DeepVisionError, ValueError):
    """A configuration value or key is wrong (the message names it)."""


class ImageEncodingError(DeepVisionError, ValueError):
    """An image message cannot be converted: unknown encoding, bad size or step, truncated data."""


class BagError(DeepVisionError):
    """A rosbag2 cannot be read or written as asked (missing topic, bad folder, ...)."""


class DatasetError(DeepVisionError):
    """A dataset folder or file is missing or not in the expected format."""


class ModelError(DeepVisionError):
    """A model file, checkpoint, model card or engine is missing, broken or inconsistent (the message names it)."""


class BackendUnavailableError(DeepVisionError):
    """An inference backend was asked for but cannot run here (the message says what is missing)."""
