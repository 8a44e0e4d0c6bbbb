"""Stage: the ``text`` column Unicode-normalised, as every later stage reads it (:mod:`hygiene.normalize`)."""
from __future__ import annotations

from hygiene.batch import Batch
from hygiene.normalize import normalize_text
from hygiene.stages.base import Stage


class Normalize(Stage):
    """``text`` normalised: NFKC, zero-width characters removed, one kind of line ending (the record written out
    keeps the text as it came)."""

    name = "normalize"

    def process(self, batch: Batch) -> dict[str, list]:
        return {**batch, "text": [normalize_text(t) for t in batch["text"]]}
