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
