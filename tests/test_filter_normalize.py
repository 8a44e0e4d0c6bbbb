"""Unicode normalisation used before hashing and scoring."""
from __future__ import annotations

from hygiene.normalize import ZERO_WIDTH, normalize_text


def test_invisible_and_compatibility_forms_collapse_to_one_text() -> None:
    plain = "The file is ready.\nfine"
    disguised = "\ufeffThe\u200b file\u2060 is re\u200cady\u200d.\r\n\ufb01ne"  # BOM, zero-widths, CRLF, ligature
    assert normalize_text(disguised) == plain


def test_full_width_and_nbsp_fold_and_line_endings_unify() -> None:
    assert normalize_text("\uff21\uff22\u00a0c\rd\r\ne\u2028f") == "AB c\nd\ne\nf"
    assert not set(normalize_text("x" + ZERO_WIDTH + "y")) & set(ZERO_WIDTH)


def test_idempotent() -> None:
    s = "Caf\u0065\u0301 \u2163 \u200b\r\n"
    assert normalize_text(normalize_text(s)) == normalize_text(s)


def _reference(text: str) -> str:
    """The definition, written out: line endings to \\n, NFKC, then every character of category Cf dropped."""
    import re
    import unicodedata

    text = unicodedata.normalize("NFKC", re.sub(r"\r\n?|[\u2028\u2029\x85]", "\n", text))
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def test_fast_paths_give_the_definition() -> None:
    """ASCII text skips NFKC and the format-character scan, other text takes one regex scan: both give
    what the definition gives, on random strings mixing line endings, format characters and
    compatibility forms."""
    import random

    rng = random.Random(0)
    ascii_chars = "ab Z9.,;\t\r\n\x0b\x0c\x1f~"
    other = ascii_chars + "\u200b\u200d\ufeff\u00ad\u202e\u2060\U000e0001\u2028\u2029\x85\uff21\ufb01\u00a0\u00e9e\u0301\u0430"
    for chars in (ascii_chars, other):
        for _ in range(300):
            text = "".join(rng.choice(chars) for _ in range(rng.randint(0, 40)))
            assert normalize_text(text) == _reference(text), repr(text)
