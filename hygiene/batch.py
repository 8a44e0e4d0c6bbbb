"""The batch every filter stage reads and returns: a ``dict`` of equal-length columns.

Columns the pipeline relies on:

- ``text``: the text as read; ``norm``: its normalised form (when that stage runs);
- ``n``: the document's ordinal in the run (cluster ids refer to it);
- ``stage`` / ``reason``: ``None`` while a document is kept, else the first stage that
  rejected it and why; each stage adds its own score columns.

Stages are pure functions of the batch (or callables holding an index), so the same
stage runs in a loop, in ``datasets.map(batched=True)`` or in Ray ``map_batches``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

Batch = Mapping[str, Sequence]


def texts(batch: Batch) -> Sequence[str]:
    """The text column a stage reads: normalised text when the normalise stage ran."""
    return batch["norm"] if "norm" in batch else batch["text"]


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
