"""The batch every filter stage reads and returns: a ``dict`` of equal-length columns, and the
one place a record becomes a row of it (:class:`BatchBuilder`).

Columns the pipeline relies on:

- ``text``: the text a stage reads: as read, and normalised once the normalize stage has run (the
  record written out keeps the text as it came);
- ``n``: the document's ordinal in the run (cluster ids refer to it);
- ``stage`` / ``reason``: ``None`` while a document is kept, else the first stage that
  rejected it and why; each stage adds its own score columns.

A record's id is its ``id_field`` value when one is named, else where it came from:
``<shard>:<line>`` for a file, its position for records held in memory.

Stages are functions of the batch (or hold an index or a model), so the same stage
runs in a loop, in ``datasets.map(batched=True)`` or in Ray ``map_batches``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from hygiene.normalize import without_lone_surrogates

Batch = Mapping[str, Sequence]


def has_score(value: Any) -> bool:
    """Whether a score column's value says something: not ``None`` and not NaN (which is no JSON value)."""
    return value is not None and not (isinstance(value, (float, np.floating)) and np.isnan(value))


def active_rows(batch: Batch, annotate_only: bool = False) -> np.ndarray:
    """Indices of the rows a stage must score: all of them when annotating, else the undecided ones."""
    stage = batch.get("stage")
    if stage is None or annotate_only:
        return np.arange(len(batch["text"]))
    return np.array([i for i, s in enumerate(stage) if s is None], dtype=np.int64)


def decisions(batch: Batch) -> tuple[list, list]:
    """Copies of the batch's ``stage`` and ``reason`` columns (all ``None`` if absent)."""
    n = len(batch["text"])
    return list(batch.get("stage", [None] * n)), list(batch.get("reason", [None] * n))


def check_record(record: Any, text_field: str, id_field: str | None,
                 where: str) -> tuple[str | None, str | None, str | None]:
    """``(text, id, None)`` for a record the filter can use, else ``(None, None, error)``.

    ``where`` is the id when no ``id_field`` is named. A plain string is a record of its own text. A lone
    surrogate in the text (a JSON ``\\ud800`` escape) reaches the stages as U+FFFD; the record keeps it.
    """
    if isinstance(record, str):
        text = record
    elif not isinstance(record, Mapping):
        return None, None, f"record is {type(record).__name__}, not a mapping"
    elif text_field not in record:
        return None, None, f"missing text field {text_field!r}"
    elif not isinstance(record[text_field], str):
        return None, None, f"text field {text_field!r} is {type(record[text_field]).__name__}, not a string"
    else:
        text = record[text_field]
    text = without_lone_surrogates(text)
    if id_field is None:
        return text, where, None
    rid, error = _record_id(record, id_field)
    return (None, None, error) if error is not None else (text, rid, None)


def _record_id(record: Any, id_field: str) -> tuple[str | None, str | None]:
    """``(id, None)`` for a record whose ``id_field`` is a string or integer, else ``(None, why not)``."""
    if not isinstance(record, Mapping) or id_field not in record:
        return None, f"missing id field {id_field!r}"
    value = record[id_field]
    if value is None:
        return None, f"id field {id_field!r} is null"
    if isinstance(value, bool) or not isinstance(value, (str, int)):  # an id must read back as what it was
        return None, f"id field {id_field!r} is {type(value).__name__}, not a string or integer"
    return str(value), None


def record_id(record: Any, id_field: str | None, where: str) -> str:
    """The id a record's decision carries: its ``id_field`` where that is usable (also when its text is
    not), else ``where`` (its position)."""
    rid = _record_id(record, id_field)[0] if id_field is not None else None
    return where if rid is None else rid


def _empty() -> dict[str, list]:
    return {"id": [], "n": [], "text": []}


@dataclass
class BatchBuilder:
    """Collects usable records as batch rows (``id``, ``n``, ``text``), numbering them from ``next_n``."""

    text_field: str = "text"
    id_field: str | None = None
    next_n: int = 0
    batch: dict[str, list] = field(default_factory=_empty)

    def add(self, record: Any, where: str) -> str | None:
        """Append ``record`` as a row; or say why it cannot be filtered (no row added)."""
        text, rid, error = check_record(record, self.text_field, self.id_field, where)
        if error is not None:
            return error
        self.batch["id"].append(rid)
        self.batch["n"].append(self.next_n)
        self.batch["text"].append(text)
        self.next_n += 1
        return None

    def take(self) -> dict[str, list]:
        """The rows collected so far; the builder starts a new batch."""
        batch, self.batch = self.batch, _empty()
        return batch
