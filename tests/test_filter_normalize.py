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


def test_ascii_text_takes_the_short_path_to_the_same_result():
    """ASCII text skips NFKC and the format-character table: the result is what the full path gives."""
    import random
    import unicodedata

    from hygiene.normalize import _FORMAT_TABLE, normalize_text

    rng = random.Random(0)
    for _ in range(200):
        text = "".join(rng.choice("ab Z9.,;\t\r\n\x0b\x0c\x1f~") for _ in range(rng.randint(0, 40)))
        full = unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n")).translate(_FORMAT_TABLE)
        assert normalize_text(text) == full
