"""The ``deep-vision`` command."""
