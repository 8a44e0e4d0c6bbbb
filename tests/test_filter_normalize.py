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
    """The definition, written out: line endings to \\n, every character of category Cf dropped, NFKC, and
    Cf dropped again (what the format characters held apart composes in the one pass)."""
    import re
    import unicodedata

    def drop(t: str) -> str:
        return "".join(c for c in t if unicodedata.category(c) != "Cf")

    return drop(unicodedata.normalize("NFKC", drop(re.sub(r"\r\n?|[\u2028\u2029\x85]", "\n", text))))


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


def test_both_normalisations_are_idempotent_on_random_text() -> None:
    """A second pass changes nothing: marks that a removed character or a folded letter kept apart compose in
    the first pass (``"caf\u0435\u0301"``, a Cyrillic "е" and an accent, is "café" at once)."""
    import random

    from hygiene.normalize import normalize_for_detection

    rng = random.Random(0)
    pool = [chr(c) for c in [*range(0x20, 0x7F), *range(0x300, 0x370), *range(0x370, 0x530)]]
    pool += ["\u200b", "\u200d", "\u00ad", "\ufe0f", "\u034f", "\u3164", "\x00", "\x07", "\r"]
    for _ in range(20_000):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(1, 8)))
        assert normalize_text(normalize_text(text)) == normalize_text(text), repr(text)
        once = normalize_for_detection(text)
        assert normalize_for_detection(once) == once, repr(text)
    assert normalize_for_detection("caf\u0435\u0301") == "caf\u00e9"


def test_detection_drops_what_shows_nothing_and_folds_look_alikes_to_their_case() -> None:
    from hygiene.normalize import normalize_for_detection

    plain = "I think the machine wrote this"
    hidden = "I\ufe0f th\u034fink\x00 the\u3164machine\x07 wrote\u2800this"
    assert normalize_for_detection(hidden) == plain
    assert normalize_for_detection("\u0399 think \u0406 \u04c0") == "I think I I"  # Greek, Cyrillic capitals: I
    assert normalize_for_detection("ab\u03f2d \u03f9at") == "abcd Cat"  # NFKC makes these sigmas first


def test_text_in_cyrillic_or_greek_stays_itself_and_a_disguise_is_still_folded() -> None:
    """Folding is for English text in disguise: Russian or Greek prose is scored as written, while an English
    text with every look-alike swapped (none of its letters a Cyrillic or Greek one without a Latin twin) is
    folded back as before, however many letters it swaps."""
    import random

    from hygiene.detector_eval import attack
    from hygiene.normalize import normalize_for_detection

    russian = "Вчера вечером мы с братом долго гуляли по набережной, и нам не хотелось домой."
    greek = "Χθες το βράδυ περπατήσαμε στην παραλία και μιλήσαμε για το παλιό σπίτι."
    for text in (russian, greek):
        assert normalize_for_detection(text) == text
    english = "The experiment compared two optimisers over five seeds and reported every run. " * 3
    for rate in (0.3, 1.0):
        assert normalize_for_detection(attack(english, "homoglyph", random.Random(0), rate=rate)) == english.strip()
    # the share decides: one own-script letter among three letters keeps the look-alikes, among five folds them
    assert normalize_for_detection("\u0436\u043e\u043e") == "\u0436\u043e\u043e"  # "жоо"
    assert normalize_for_detection("\u0436\u043e\u043e\u043e\u043e") == "\u0436oooo"
