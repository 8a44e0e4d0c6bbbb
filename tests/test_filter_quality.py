"""Gopher heuristics: each check fires on a text built to fail it; repetition metrics against direct counts."""
from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from hygiene.config import QualityConfig
from hygiene.quality import TOKEN_PATTERN, datatrove_tokenizer, quality_reasons, quality_scores
from hygiene.stages import QualityFilter

CLEAN = (
    "The river runs past the old mill and under the stone bridge. Children play on its banks in summer, "
    "and fishermen wait there with their rods from dawn until the light fades. In winter the water is "
    "high and fast, so the village keeps a boat ready by the church. Most people have lived here all "
    "their lives, and they know which paths flood first. Visitors come to see the mill wheel, which "
    "still turns, and to eat at the inn that stands beside the square."
)


def _reason(text: str, **overrides) -> str | None:
    config = QualityConfig(**overrides)
    return quality_reasons(quality_scores([text], config), config)[0]


def test_clean_prose_passes() -> None:
    assert _reason(CLEAN) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("the cat and the dog", "too_few_words"),
        (CLEAN.replace(" ", " a b c d "), "short_words"),
        (" ".join(["internationalisation", "characteristically", "the", "of"] * 30), "long_words"),
        (CLEAN + " #tag" * 20, "hash_ratio"),
        ("\n".join(f"Remember {i} those wonderful evenings beside the harbour ..." for i in range(30)),
         "ellipsis_ratio"),
        ("\n".join(f"- the point {i} of the plan with care and thought" for i in range(30)), "bullet_lines"),
        (CLEAN.replace(". ", " 1 2 3 4 5 6 7 8 9 10 11 12 . "), "non_alpha_words"),
        (CLEAN.lower().replace("the ", "").replace("and ", "").replace("of ", "").replace("to ", "")
         .replace("with ", "").replace("have ", "").replace("that ", ""), "few_stop_words"),
        ("\n\n".join([CLEAN] + ["Same paragraph of text, again and again, with the words."] * 5), "dup_para_frac"),
    ],
)
def test_each_check_fires(text: str, reason: str) -> None:
    assert _reason(text) == reason


def test_long_sentences_is_off_by_default_and_counts_every_kind_of_sentence_end() -> None:
    rng = np.random.default_rng(0)
    vocab = ["cheap", "best", "free", "top", "buy", "hotel", "loans", "deals", "london", "paris", "online",
             "shipping", "casino", "quotes", "review", "price", "flights", "insurance", "discount", "offers"]
    spam = " ".join(rng.choice(vocab, 120))  # keyword spam: no stop, no line break
    on = {"max_words_per_sentence": 80, "min_stop_words": None, "max_top_ngram_char_frac": {},
          "max_dup_ngram_char_frac": {}}
    assert _reason(spam, **on) == "long_sentences"
    assert _reason(spam, **{**on, "max_words_per_sentence": None}) is None  # off unless asked for
    assert QualityConfig().max_words_per_sentence is None
    assert _reason(CLEAN, max_words_per_sentence=80) is None
    # the same words split by line breaks, by semicolons, or by stops without a space ("end.Next") pass
    words = spam.split()
    for sep in ("\n", "; ", ".Then "):
        chunked = sep.join(" ".join(words[i:i + 20]) for i in range(0, len(words), 20))
        assert _reason(chunked, **on) is None, sep
    scores = quality_scores(["One two three. Four five six! Seven eight nine?\nTen eleven: twelve"],
                            QualityConfig(max_words_per_sentence=80))
    assert scores["words_per_sentence"][0] == 12 / 5
    assert np.isnan(quality_scores([CLEAN])["words_per_sentence"][0])  # not counted while the check is off


def test_checks_can_be_switched_off_and_thresholds_moved() -> None:
    short = "the cat and the dog"
    assert _reason(short, min_words=None) == "top_2gram"  # the next failing check
    assert _reason(short, min_words=None, max_top_ngram_char_frac={}, max_dup_ngram_char_frac={}) is None
    assert _reason(CLEAN, min_words=1000) == "too_few_words"


def _dup_ngram_chars(tokens: list[str], n: int) -> int:
    """Characters of tokens covered by an n-gram occurrence that repeats an earlier one (the union)."""
    seen, covered = set(), np.zeros(len(tokens), bool)
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i : i + n])
        if gram in seen:
            covered[i : i + n] = True
        seen.add(gram)
    return sum(len(t) for t, c in zip(tokens, covered) if c)


def test_ngram_metrics_match_direct_counts_across_a_batch() -> None:
    rng = np.random.default_rng(3)
    vocab = ["alpha", "be", "c", "delta", "the", "of", ",", ".", "it's", "1.5"]
    texts = [" ".join(rng.choice(vocab, int(k))) for k in (0, 3, 12, 40, 200)]
    texts.append(texts[-1])  # identical docs in one batch must not see each other's n-grams
    scores = quality_scores(texts)
    for d, text in enumerate(texts):
        tokens = re.findall(TOKEN_PATTERN, text)
        chars = max(len(text), 1)
        for n in (2, 3, 4):
            grams = [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
            top = len(Counter(grams).most_common(1)[0][0]) * Counter(grams).most_common(1)[0][1] if grams else 0
            assert scores[f"top_{n}gram_char_frac"][d] == pytest.approx(top / chars)
        for n in range(5, 11):
            assert scores[f"dup_{n}gram_char_frac"][d] == pytest.approx(_dup_ngram_chars(tokens, n) / chars)


def test_stage_scores_only_undecided_rows_and_keeps_earlier_rejections() -> None:
    batch = {"text": [CLEAN, "too short", CLEAN], "stage": [None, None, "exact_dedup"], "reason": [None, None, "dup"]}
    out = QualityFilter()(batch)
    assert out["stage"] == [None, "quality", "exact_dedup"]
    assert out["reason"][1] == "too_few_words"
    assert out["quality_words"][2] is None and out["quality_words"][0] > 50


def test_agrees_with_datatrove_gopher_on_built_texts() -> None:
    filters = pytest.importorskip("datatrove.pipeline.filters")
    from datatrove.data import Document
    tok = datatrove_tokenizer()  # datatrove's English default needs spaCy; compare the heuristics
    quality, repetition = filters.GopherQualityFilter(language=tok), filters.GopherRepetitionFilter(language=tok)
    texts = [CLEAN, "the cat and the dog", CLEAN + " #tag" * 20, "\n\n".join([CLEAN] * 3),
             "\n".join(f"- the point {i} of the plan with care" for i in range(30))]
    ours = [r is None for r in quality_reasons(quality_scores(texts))]
    theirs = [quality.filter(Document(text=t, id="x")) is True and repetition.filter(Document(text=t, id="x")) is True
              for t in texts]
    assert ours == theirs == [True, False, False, False, False]
