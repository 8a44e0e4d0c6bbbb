"""Named configurations: every simulation's ``preset(name, **overrides)`` is this one lookup."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def choose(presets: Mapping[str, T], name: str, **overrides: Any) -> T:
    """A copy of preset ``name`` with top-level fields replaced; an unknown name lists the known ones."""
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
    return dataclasses.replace(presets[name], **overrides)
