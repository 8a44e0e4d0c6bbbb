"""Stage: the ``norm`` column, the Unicode-normalised text every later stage reads (:mod:`hygiene.normalize`)."""
from __future__ import annotations

from hygiene.batch import Batch
from hygiene.normalize import normalize_text
from hygiene.stages.base import Stage


class Normalize(Stage):
    """Add ``norm``: NFKC, zero-width characters removed, one kind of line ending."""

    name = "normalize"

    def process(self, batch: Batch) -> dict[str, list]:
        return {**batch, "norm": [normalize_text(t) for t in batch["text"]]}
