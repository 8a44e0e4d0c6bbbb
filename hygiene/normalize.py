"""Unicode normalisation applied before hashing, deduplication, quality checks and scoring.

Two texts that a reader sees as the same should hash the same: NFKC folds
compatibility forms (full-width letters, ligatures, non-breaking spaces),
invisible format characters that scrapers and evasion tricks insert (zero-width
space and joiners, the BOM, soft hyphens, bidirectional marks: Unicode category
``Cf``) are removed, and Windows/old-Mac line endings become ``\\n``.

The detector goes one step further (:func:`normalize_for_detection`): NFKC leaves
homoglyphs alone, so a text with Latin letters swapped for their Cyrillic or Greek
look-alikes ("а" U+0430 for "a") reads the same to a person and tokenises into
nonsense for a language model. Those letters are mapped back to Latin with the
Unicode confusables table (``confusable-homoglyphs``), unless the text is written in
Cyrillic or Greek itself (:func:`fold_homoglyphs`), and runs of whitespace of
any kind become one space (layout is not authorship).
"""
from __future__ import annotations

import functools
import re
import sys
import unicodedata

#: Zero-width space/non-joiner/joiner, word joiner, and the BOM / zero-width no-break space.
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
#: Scripts whose letters are folded to Latin look-alikes before detection.
HOMOGLYPH_SCRIPTS = ("CYRILLIC", "GREEK")


def _char_class(codes: list[int]) -> str:
    """A regex character class of ``codes`` (ascending) written as ranges: ``re`` scans a few ranges
    several times faster than ``str.translate`` looks every character up in a table."""
    runs: list[list[int]] = []
    for c in codes:
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return "[" + "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in runs) + "]"


_FORMAT_RE = re.compile(_char_class([c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]))
_LINE_ENDINGS = re.compile(r"\r\n?|[\u2028\u2029\x85]")
#: a surrogate code point standing alone in a Python string (a pair decodes to one character): what a JSON
#: ``\ud800`` escape gives, valid JSON but not Unicode text, so no UTF-8 encoder, tokenizer or Arrow takes it
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def without_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, the replacement character: valid Unicode."""
    return text if text.isascii() else _LONE_SURROGATE.sub("\ufffd", text)


def normalize_text(text: str) -> str:
    """NFKC-normalise ``text``, drop invisible format characters, turn every line ending into ``\\n`` and a lone
    surrogate into U+FFFD.

    ASCII text is its own NFKC form and holds no format character: only its line endings change.
    """
    if text.isascii():
        return _LINE_ENDINGS.sub("\n", text) if "\r" in text else text
    # format characters go before NFKC, so that what they kept apart composes now, not on a second pass
    text = _FORMAT_RE.sub("", _LINE_ENDINGS.sub("\n", without_lone_surrogates(text)))
    return _FORMAT_RE.sub("", unicodedata.normalize("NFKC", text))


@functools.lru_cache(maxsize=1)
def confusables_table() -> dict[int, str]:
    """``str.translate`` table from Cyrillic and Greek letters to the Latin letters they are confusable with.

    Built once from the Unicode confusables data that ``confusable-homoglyphs`` ships; only
    single-letter Latin look-alikes are used (``"а" -> "a"``, ``"Ѕ" -> "S"``), so no letter becomes
    a digit or a symbol.
    """
    from confusable_homoglyphs import confusables

    table: dict[int, str] = {}
    for code in range(0x0370, 0x0530):  # the Greek and Cyrillic blocks
        ch = chr(code)
        name = unicodedata.name(ch, "")
        if not name.startswith(HOMOGLYPH_SCRIPTS) or not ch.isalpha():
            continue
        for found in confusables.is_confusable(ch, greedy=True, preferred_aliases=["latin"]) or ():
            latin = [h["c"] for h in found["homoglyphs"]
                     if len(h["c"]) == 1 and h["c"].isascii() and h["c"].isalpha()]
            if latin:  # a look-alike of the same case first; an upper-case "l" is "I" (Unicode's skeleton of
                # "I", Greek "Ι" and Cyrillic "І" alike is "l", but the text meant the capital)
                pick = next((c for c in latin if c.isupper() == ch.isupper()), latin[0])
                table[code] = "I" if pick == "l" and ch.isupper() else pick
                break
    for code, latin in list(table.items()):  # the table applies after NFKC: map what NFKC makes of a letter too
        image = unicodedata.normalize("NFKC", chr(code))  # ("ϲ" becomes "ς", "Ϲ" becomes "Σ")
        if len(image) == 1 and image != chr(code) and not image.isascii():
            table.setdefault(ord(image), latin)
    return table


#: the share of a text's letters, Cyrillic or Greek with no Latin look-alike, from which it is read as written in
#: those scripts and left unfolded (Russian and Greek prose: about half; a disguised English text: none)
OWN_SCRIPT_SHARE = 0.25
_LETTER_RE = re.compile(r"[^\W\d_]")


@functools.lru_cache(maxsize=1)
def _own_script_letter_re() -> re.Pattern[str]:
    """A Cyrillic or Greek letter that is not a look-alike of a Latin one."""
    table = confusables_table()
    return re.compile(_char_class([c for c in range(0x0370, 0x0530) if chr(c).isalpha() and c not in table
                                   and unicodedata.name(chr(c), "").startswith(HOMOGLYPH_SCRIPTS)]))


#: characters that show nothing or a blank and that no writer needs to say anything, but that a tokenizer reads:
#: control characters (tab and line ends are whitespace anyway), variation selectors, the combining grapheme
#: joiner; and blanks that stand in for a space (Hangul fillers, the braille blank)
_INVISIBLE_RE = re.compile(_char_class(sorted(
    [c for c in [*range(0x20), *range(0x7F, 0xA0)] if not chr(c).isspace()]  # whitespace ones split words
    + [0x034F, *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)])))
_BLANK_RE = re.compile("[\u115f\u1160\u3164\uffa0\u2800]")


def normalize_for_detection(text: str) -> str:
    """What the detector scores: :func:`normalize_text`, invisible characters dropped and blanks made spaces,
    homoglyphs folded to Latin (then composed again: a folded letter may take a combining accent), whitespace
    runs as one space."""
    text = normalize_text(text)
    if not text.isascii() or _INVISIBLE_RE.search(text):
        text = _BLANK_RE.sub(" ", _INVISIBLE_RE.sub("", text))
        if not text.isascii():
            text = unicodedata.normalize("NFC", fold_homoglyphs(text))
    return " ".join(text.split())


def fold_homoglyphs(text: str) -> str:
    """``text`` with the Cyrillic and Greek look-alikes of Latin letters folded to Latin, unless at least
    :data:`OWN_SCRIPT_SHARE` of its letters are Cyrillic or Greek letters with no Latin look-alike ("ж", "λ"):
    such a text is written in that script, not disguised, so Russian or Greek stays itself. A disguise cannot
    reach that share without a reader seeing it; a Greek word quoted in English text is folded with the rest."""
    own = _own_script_letter_re().findall(text)
    if own and len(own) >= OWN_SCRIPT_SHARE * len(_LETTER_RE.findall(text)):
        return text
    return text.translate(confusables_table())
