"""What lets a simulation stop and resume: tensors written atomically, and a refusal to resume a
directory that another configuration wrote.

A generation is finished when its record (``gen.json`` or the like) exists: the simulations write
its tensors first and its record last, so an interrupted generation is redone, never half-read.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors.torch import load_file, save

from hygiene.atomic import atomic_open


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write ``tensors`` as one safetensors file, atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(save({k: v.contiguous() for k, v in tensors.items()}))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (on the CPU)."""
    return load_file(str(path))


def _drop(config: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        config = config.get(key)
        if not isinstance(config, dict):
            return
    config.pop(leaf, None)


def config_changes(before: Mapping[str, Any], now: Mapping[str, Any], may_change: Iterable[str] = ()) -> list[str]:
    """The top-level keys whose values differ between two configurations (as JSON), leaving out the
    dotted paths in ``may_change`` (e.g. ``"generations"``, ``"train.threads"``)."""
    old, new = json.loads(json.dumps(before)), json.loads(json.dumps(now))
    for c in (old, new):
        for path in may_change:
            _drop(c, path)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def check_resumable(before: Mapping[str, Any] | None, now: Mapping[str, Any], where: str | Path,
                    may_change: Iterable[str] = ()) -> None:
    """Refuse to resume ``where`` when the configuration it was written with (``before``; None: a fresh
    directory) differs from ``now`` outside ``may_change``: a ``ValueError`` naming the keys."""
    if before is None:
        return
    diff = config_changes(before, now, may_change)
    if diff:
        raise ValueError(f"{where} holds a run with a different configuration ({', '.join(diff)}); "
                         "use another output directory (--out)")
