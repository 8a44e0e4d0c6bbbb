"""Stage: drop a document whose normalised text equals an earlier one's (the first occurrence is kept)."""
from __future__ import annotations

from hygiene.config import ExactDedupConfig
from hygiene.dedup import HashIndex, text_key
from hygiene.stages.base import KeyedDedup


class ExactDedup(KeyedDedup):
    """One key per document, the 64-bit hash of its text; adds ``exact_duplicate_of``, the first copy's ``n``."""

    name = "exact_dedup"
    reason = "duplicate"
    columns = {"exact_duplicate_of": int}
    key_scheme = "blake2b-64"

    def __init__(self, config: ExactDedupConfig | None = None, index: HashIndex | None = None) -> None:
        super().__init__(index)
        self.config = config or ExactDedupConfig()

    def keys(self, texts: list[str]) -> list[list[int] | None]:
        return [[k] for k in text_key(texts).tolist()]

    def mark(self, n: int, earliest: int) -> int | None:
        return earliest if earliest != n else None
