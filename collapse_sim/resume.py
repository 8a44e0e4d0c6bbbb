"""What lets a simulation stop and resume: tensors written atomically, a refusal to resume a
directory that another configuration wrote, and a one-line error naming any of its files that is damaged.

A generation is finished when its record (``gen.json`` or the like) exists: the simulations write
its tensors first and its record last, so an interrupted generation is redone, never half-read.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from hygiene.atomic import atomic_open
from hygiene.errors import UserInputError, one_line

#: what reading a damaged file raises: safetensors', JSON's (a ValueError), numpy's and the file system's errors,
#: and a stored value of the wrong type or shape
_DAMAGE = (SafetensorError, OSError, ValueError, TypeError, EOFError, KeyError, zipfile.BadZipFile)
#: what to do about a damaged file of a run's state
FIX = "delete it or use another --out"


@contextmanager
def reading(path: str | Path, fix: str = FIX) -> Iterator[None]:
    """Read a run's own file ``path`` inside this block: a damaged one is a one-line
    :class:`UserInputError` naming it and ``fix``, not a traceback from deep in a parser."""
    try:
        yield
    except UserInputError:
        raise
    except _DAMAGE as exc:
        raise UserInputError(f"{path}: unreadable ({one_line(exc)}); {fix}") from exc


def read_record(path: str | Path, *keys: str, fix: str = FIX) -> dict[str, Any]:
    """The JSON object a run stored at ``path`` (run.json, gen.json, ...), holding ``keys``; else a
    :class:`UserInputError` naming the file."""
    with reading(path, fix):
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(record, dict):
        raise UserInputError(f"{path}: not a JSON object; {fix}")
    _require(path, record, keys, fix)
    return record


def _require(path: str | Path, found: Mapping[str, Any], keys: Iterable[str], fix: str = FIX) -> None:
    """A :class:`UserInputError` naming ``path`` when ``found`` (what it held) lacks one of ``keys``."""
    missing = [k for k in keys if k not in found]
    if missing:
        raise UserInputError(f"{path}: no {', '.join(map(repr, missing))} in it; {fix}")


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write ``tensors`` as one safetensors file, atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(save({k: v.contiguous() for k, v in tensors.items()}))


def load_tensors(path: str | Path, *keys: str, fix: str = FIX) -> dict[str, torch.Tensor]:
    """The tensors of a run's safetensors file (on the CPU), holding ``keys``; a damaged file is a
    :class:`UserInputError` naming it and ``fix``."""
    with reading(path, fix):
        tensors = load_file(str(path))
    _require(path, tensors, keys, fix)
    return tensors


def redo(record: str | Path) -> str:
    """The fix for a damaged file of a finished generation: the generation counts as finished while its
    ``record`` exists, so deleting the record (not the file) makes the next run redo it."""
    return f"delete {record} to redo that generation, or use another --out"


def _drop(config: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        config = config.get(key)
        if not isinstance(config, dict):
            return
    config.pop(leaf, None)


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted paths of the values that differ between two JSON values (a whole list counts as one)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new)) for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if old != new else []


def config_changes(before: Mapping[str, Any], now: Mapping[str, Any], may_change: Iterable[str] = ()) -> list[str]:
    """The dotted keys whose values differ between two configurations (as JSON), e.g. ``vae.epochs``,
    leaving out the dotted paths in ``may_change`` (e.g. ``"generations"``, ``"train.threads"``)."""
    old, new = json.loads(json.dumps(before)), json.loads(json.dumps(now))
    for c in (old, new):
        for path in may_change:
            _drop(c, path)
    return _differences(old, new)


def tensor_digest(*tensors: torch.Tensor | np.ndarray) -> str:
    """SHA-256 of the tensors' values (the human text a run reads, as tokens): what a resumed run must find
    again, whatever the files' names or times."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(np.ascontiguousarray(t.numpy() if isinstance(t, torch.Tensor) else t).tobytes())
    return h.hexdigest()


def check_same_data(out: str | Path, digest: str, what: str) -> None:
    """Refuse to resume ``out`` when its ``run.json`` records other human text (``data_sha256``) than
    ``digest``: its saved generations were trained and measured on that text. ``what`` names the files."""
    path = Path(out) / "run.json"
    before = read_record(path).get("data_sha256") if path.is_file() else None
    if before is not None and before != digest:
        raise ValueError(f"{out} holds a run on other human text than {what} hold now; use another output "
                         "directory (--out)")


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
