"""Configuration merging shared by the network definitions (glue-factory's ``default_conf`` style)."""

from __future__ import annotations

import copy
from typing import Any

from deep_vision.errors import ConfigError


def merge_conf(name: str, default_conf: dict[str, Any], presets: dict[str, dict[str, Any]],
               conf: dict[str, Any] | None) -> dict[str, Any]:
    """``conf`` over ``default_conf``; keys left at None are filled from ``presets[conf["preset"]]``.

    Raises:
        ConfigError: an unknown key (named) or an unknown preset.
    """
    conf = dict(conf or {})
    unknown = sorted(set(conf) - set(default_conf))
    if unknown:
        raise ConfigError(f"{name}: unknown conf key(s) {unknown}; known: {sorted(default_conf)}")
    merged = {**copy.deepcopy(default_conf), **conf}
    if merged["preset"] not in presets:
        raise ConfigError(f"{name}: unknown preset {merged['preset']!r}; choose one of {sorted(presets)}")
    for key, value in presets[merged["preset"]].items():
        if merged[key] is None:
            merged[key] = copy.deepcopy(value)
    return merged
