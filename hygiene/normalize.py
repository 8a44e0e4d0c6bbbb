"""Unicode normalisation applied before hashing, deduplication, quality checks and scoring.

Two texts that a reader sees as the same should hash the same: NFKC folds
compatibility forms (full-width letters, ligatures, non-breaking spaces),
zero-width characters that scrapers and watermarking tricks insert are removed,
and Windows/old-Mac line endings become ``\\n``. The detector scores the same
normalised text so that invisible characters cannot shift its verdict.
"""
from __future__ import annotations

import re
import unicodedata

#: Zero-width space/non-joiner/joiner, word joiner, and the BOM / zero-width no-break space.
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"

_ZERO_WIDTH_TABLE = str.maketrans("", "", ZERO_WIDTH)
_LINE_ENDINGS = re.compile(r"\r\n?|[\u2028\u2029\x85]")


def normalize_text(text: str) -> str:
    """NFKC-normalise ``text``, drop zero-width characters and turn every line ending into ``\\n``."""
    text = _LINE_ENDINGS.sub("\n", text)
    text = unicodedata.normalize("NFKC", text)
    return text.translate(_ZERO_WIDTH_TABLE)


def normalize_batch(batch: dict[str, list]) -> dict[str, list]:
    """Batch stage: add the ``norm`` column, the normalised form of ``text``."""
    return {**batch, "norm": [normalize_text(t) for t in batch["text"]]}
