"""Gopher quality and repetition heuristics (Rae et al. 2021, appendix A) over a batch of texts, and one
rule of this project's for text that is not prose: words per sentence (keyword spam runs on without a
stop or a line break; off in both profiles).

Word-level statistics are computed for the whole batch at once: tokens get integer
ids, n-grams become 64-bit polynomial hashes over those ids (the document index
mixed in), and ``np.unique`` counts them, so the cost is a few array passes per
n rather than a Python loop per n-gram. Lines and paragraphs use set sizes.

Tokens (``TOKEN_PATTERN``) are words, which keep inner apostrophes, periods and
commas ("don't", "1,250.5"), or runs of other non-space characters, so punctuation
is split off as spaCy does for datatrove's implementation; "words" in the length
checks are the tokens that are not punctuation. Splitting "it's" or "1.5" into
three tokens would count two non-alphabetic "words" each and fail the
alphabetic-words check on ordinary news prose.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from hygiene.config import QualityConfig

#: a word (letters/digits, with inner apostrophes, periods or commas: "don't", "1,250.5", "U.S")
#: or a run of other non-space characters (punctuation, split off as spaCy does)
WORD_PATTERN = r"\w+(?:['\u2019.,]\w+)*"
TOKEN_PATTERN = WORD_PATTERN + r"|[^\w\s]+"
_TOKEN = re.compile(TOKEN_PATTERN)
_WORD = re.compile(WORD_PATTERN)
_NO_LETTER_WORD = re.compile(r"(?<!\S)[\d_'\u2019.,]+(?!\S)")  # in the space-joined words: those without a letter
_PARAGRAPH = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")
#: where a sentence ends: a line break, or . ! ? ; : (a run counts once) before whitespace, a closing quote or
#: bracket, a capital letter (a missing space: "balanced.The") or the end of the text
_SENTENCE_END = re.compile(r"[.!?;:]+(?=[\s\"'\u201d\u2019)\]A-Z]|$)|\n")
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial n-gram hash (wraps mod 2^64)


@dataclass(frozen=True)
class QualityScores:
    """Per-document Gopher statistics of a batch, one array per metric (name -> values)."""

    values: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]


def _word_count_ok(n_words: int, config: QualityConfig) -> bool:
    """Whether a word count passes Gopher's length checks."""
    return (config.min_words is None or n_words >= config.min_words) and (
        config.max_words is None or n_words <= config.max_words)


def _duplicates(parts: list[str]) -> tuple[int, int]:
    """(number of repeated elements, characters in them) beyond each element's first occurrence."""
    unique = set(parts)
    return len(parts) - len(unique), sum(map(len, parts)) - sum(map(len, unique))


def quality_scores(texts: Sequence[str], config: QualityConfig | None = None, complete: bool = True) -> QualityScores:
    """Every Gopher statistic of each text (the checks then compare them to thresholds), and words per
    sentence when that check is on (NaN otherwise: it passes).

    With ``complete=False`` a text outside the word-count bounds (e.g. a 20 MB page) gets
    only its word count; every other statistic is NaN (it fails already).
    """
    config = config or QualityConfig()
    n_docs = len(texts)
    stop = {w.lower() for w in config.stop_words}
    token_lists: list[list[str]] = []
    cols = {k: np.zeros(n_docs) for k in (
        "words", "mean_word_length", "hash_ratio", "ellipsis_ratio", "bullet_lines", "ellipsis_lines",
        "alpha_words", "stop_words", "dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac",
        "words_per_sentence")}
    per_sentence = config.max_words_per_sentence is not None
    if not per_sentence:
        cols["words_per_sentence"][:] = np.nan  # not computed: the check is off
    n_tokens = np.zeros(n_docs, np.int64)
    chars = np.array([max(len(t), 1) for t in texts], dtype=float)
    for d, text in enumerate(texts):
        words = _WORD.findall(text)
        n_words = len(words)
        cols["words"][d] = n_words
        if not complete and not _word_count_ok(n_words, config):  # e.g. a 20 MB page: skip the rest
            for name in cols:
                cols[name][d] = np.nan if name != "words" else n_words
            token_lists.append([])
            continue
        tokens = _TOKEN.findall(text)
        n_tok = len(tokens)
        n_tokens[d] = n_tok
        cols["mean_word_length"][d] = sum(map(len, words)) / n_words if n_words else 0.0
        denom = max(n_tok, 1)
        cols["hash_ratio"][d] = text.count("#") / denom
        cols["ellipsis_ratio"][d] = (text.count("...") + text.count("\u2026")) / denom
        no_letter = len(_NO_LETTER_WORD.findall(" ".join(words)))
        cols["alpha_words"][d] = (n_words - no_letter) / n_tok if n_tok else 0.0
        cols["stop_words"][d] = len(stop.intersection(map(str.lower, words)))
        lines = text.splitlines() or [""]
        stripped = list(map(str.strip, lines))
        cols["bullet_lines"][d] = sum(s.startswith(("\u2022", "-")) for s in stripped) / len(lines)
        cols["ellipsis_lines"][d] = sum(s.endswith(("...", "\u2026")) for s in stripped) / len(lines)
        if per_sentence:  # off by default, and about 8% of this loop's time: counted only when checked
            sentences = sum(1 for part in _SENTENCE_END.split(text) if _WORD.search(part))
            cols["words_per_sentence"][d] = n_words / max(sentences, 1)
        paragraphs = _PARAGRAPH.split(text.strip())
        dup, dup_chars = _duplicates(paragraphs)
        cols["dup_para_frac"][d], cols["dup_para_char_frac"][d] = dup / len(paragraphs), dup_chars / chars[d]
        lines = _LINES.split(text)
        dup, dup_chars = _duplicates(lines)
        cols["dup_line_frac"][d], cols["dup_line_char_frac"][d] = dup / len(lines), dup_chars / chars[d]
        token_lists.append(tokens)
    todo = np.arange(n_docs)
    if not complete:
        todo = np.flatnonzero([_word_count_ok(int(n), config) for n in cols["words"]])
    vocab: dict[str, int] = {}
    next_id = itertools.count()  # distinct tokens get distinct ids (not dense: it also advances on repeats)
    ids = np.fromiter((i for d in todo for i in map(vocab.setdefault, token_lists[d], next_id)), np.int64,
                      int(n_tokens[todo].sum()))
    lens = np.fromiter((n for d in todo for n in map(len, token_lists[d])), np.int64, len(ids))
    for name, values in _ngram_scores(ids, lens, n_tokens[todo], chars[todo], config).items():
        cols[name] = np.full(n_docs, np.nan)
        cols[name][todo] = values
    return QualityScores(cols)


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like ``np.unique(keys, return_index, return_inverse, return_counts)`` minus the values,
    with an unstable sort (first occurrences recovered by a min over each group): about twice as fast.
    """
    if len(keys) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    order = np.argsort(keys)
    ordered = keys[order]
    boundary = np.empty(len(keys), bool)
    boundary[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=boundary[1:])
    starts = np.flatnonzero(boundary)
    inverse = np.empty(len(keys), np.int64)
    inverse[order] = np.cumsum(boundary) - 1
    counts = np.diff(np.append(starts, len(keys)))
    return np.minimum.reduceat(order, starts), inverse, counts


def _ngram_scores(ids: np.ndarray, lens: np.ndarray, n_tokens: np.ndarray, chars: np.ndarray,
                  config: QualityConfig) -> dict[str, np.ndarray]:
    """Top n-gram and duplicated n-gram character fractions for every document of the batch at once."""
    n_docs = len(n_tokens)
    total = len(ids)
    doc = np.repeat(np.arange(n_docs), n_tokens)
    start = np.concatenate([[0], np.cumsum(n_tokens)])
    pos_in_doc = np.arange(total) - start[doc]
    csum = np.concatenate([[0], np.cumsum(lens)])
    out: dict[str, np.ndarray] = {}
    ns = sorted(set(config.max_top_ngram_char_frac) | set(config.max_dup_ngram_char_frac))
    h = (doc.astype(np.uint64) + np.uint64(1)) * _MULT
    for n in range(1, max(ns, default=0) + 1):
        # h[i] hashes (doc, token i .. i+n-1); valid where the n-gram stays inside its document
        h = h[: total - n + 1] * _MULT + (ids[n - 1 :].astype(np.uint64) + np.uint64(1))
        if n not in ns:
            continue
        valid = np.flatnonzero(pos_in_doc[: total - n + 1] <= n_tokens[doc[: total - n + 1]] - n)
        keys, gdoc = h[valid], doc[valid]
        first, inverse, counts = _groups(keys)
        if n in config.max_top_ngram_char_frac:
            cnt = counts[inverse]
            top = np.zeros(n_docs, np.int64)
            np.maximum.at(top, gdoc, cnt)
            # the first n-gram reaching the top count, as Counter.most_common(1) picks it
            at_top = np.flatnonzero(cnt == top[gdoc])
            first_pos = np.full(n_docs, total, np.int64)
            np.minimum.at(first_pos, gdoc[at_top], valid[at_top])
            has = first_pos < total
            span = np.zeros(n_docs)
            fp = first_pos[has]
            span[has] = csum[fp + n] - csum[fp] + (n - 1)  # characters of the n-gram joined by spaces
            out[f"top_{n}gram_char_frac"] = top * span / chars
        if n in config.max_dup_ngram_char_frac:
            repeat = valid[first[inverse] != np.arange(len(valid))]  # occurrences after the first
            cover = np.zeros(total + 1, np.int64)
            np.add.at(cover, repeat, 1)
            np.add.at(cover, repeat + n, -1)
            covered = np.cumsum(cover[:total]) > 0
            dup_chars = np.bincount(doc[covered], weights=lens[covered], minlength=n_docs)
            out[f"dup_{n}gram_char_frac"] = dup_chars / chars
    return out


def checks(config: QualityConfig) -> list[tuple[str, str, str, float]]:
    """(reason, metric, direction, threshold) in Gopher's order, then ``long_sentences``; checks set to None
    are left out."""
    c = config
    rules = [
        ("too_few_words", "words", "min", c.min_words),
        ("too_many_words", "words", "max", c.max_words),
        ("short_words", "mean_word_length", "min", c.min_mean_word_length),
        ("long_words", "mean_word_length", "max", c.max_mean_word_length),
        ("hash_ratio", "hash_ratio", "max", c.max_symbol_word_ratio),
        ("ellipsis_ratio", "ellipsis_ratio", "max", c.max_symbol_word_ratio),
        ("bullet_lines", "bullet_lines", "max", c.max_bullet_lines_ratio),
        ("ellipsis_lines", "ellipsis_lines", "max", c.max_ellipsis_lines_ratio),
        ("non_alpha_words", "alpha_words", "min", c.min_alpha_words_ratio),
        ("few_stop_words", "stop_words", "min", c.min_stop_words),
        ("dup_para_frac", "dup_para_frac", "max", c.max_dup_para_frac),
        ("dup_para_char_frac", "dup_para_char_frac", "max", c.max_dup_para_char_frac),
        ("dup_line_frac", "dup_line_frac", "max", c.max_dup_line_frac),
        ("dup_line_char_frac", "dup_line_char_frac", "max", c.max_dup_line_char_frac),
    ]
    rules += [(f"top_{n}gram", f"top_{n}gram_char_frac", "max", t) for n, t in sorted(c.max_top_ngram_char_frac.items())]
    rules += [(f"dup_{n}gram", f"dup_{n}gram_char_frac", "max", t) for n, t in sorted(c.max_dup_ngram_char_frac.items())]
    rules.append(("long_sentences", "words_per_sentence", "max", c.max_words_per_sentence))
    return [rule for rule in rules if rule[3] is not None]


def quality_failures(scores: QualityScores, config: QualityConfig | None = None) -> list[list[str]]:
    """Every failed check of each document, in Gopher's order (empty: passes all; NaN or absent metrics pass)."""
    config = config or QualityConfig()
    failed: list[list[str]] = [[] for _ in range(len(scores["words"]))]
    for name, metric, direction, threshold in checks(config):
        if metric not in scores.values:
            continue
        v = scores[metric]
        for d in np.flatnonzero(v < threshold if direction == "min" else v > threshold):
            failed[d].append(name)
    return failed


def quality_reasons(scores: QualityScores, config: QualityConfig | None = None) -> list[str | None]:
    """The first failed Gopher check of each document (``None``: passes all; NaN or absent metrics pass)."""
    return [f[0] if f else None for f in quality_failures(scores, config)]


def datatrove_tokenizer():  # -> datatrove.utils.word_tokenizers.WordTokenizer (an optional dependency)
    """These rules' tokens (``TOKEN_PATTERN``) as a datatrove ``WordTokenizer``, one sentence per text, so
    datatrove's Gopher filters can be checked against these rules on the same words: the heuristics
    compared, not two tokenisers. Needs datatrove."""
    from datatrove.utils.word_tokenizers import WordTokenizer

    class RegexTokenizer(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            return _TOKEN.findall(text)

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    return RegexTokenizer()
