"""Misspelt copies of training rows: the edits, the sample, and the recipe key."""
from __future__ import annotations

import random

import pytest

from hygiene.errors import UserInputError
from hygiene.labelled import LabelledText
from hygiene.recipe import load_recipe
from hygiene.typing_noise import TypoCopies, misspell, typo_copies

TEXT = ("Certainly! Here are several thoughtful considerations regarding the proposal, "
        "including budgets, timelines and the expected outcomes for each stakeholder involved.")


def test_misspell_edits_each_long_word_at_most_once_and_leaves_short_words():
    rng = random.Random(0)
    for rate in (0.0, 0.3, 1.0):
        out = misspell(TEXT, rate, rng)
        before, after = TEXT.split(" "), out.split(" ")
        assert len(before) == len(after)
        changed = [(a, b) for a, b in zip(before, after) if a != b]
        assert all(len(a) >= 4 and abs(len(a) - len(b)) <= 1 for a, b in changed)
        if rate == 0.0:
            assert out == TEXT
        if rate == 1.0:  # every word of four letters or more edited (a swap of two equal letters aside)
            assert len(changed) >= 0.8 * sum(len(w) >= 4 for w in before)


def test_misspell_rate_is_the_share_of_long_words_edited():
    words = " ".join(["detector"] * 4000)
    out = misspell(words, 0.1, random.Random(1)).split(" ")
    share = sum(w != "detector" for w in out) / len(out)
    # binomial standard error at n=4000 is 0.005; a swap or double of the same letter can leave a word as it was
    assert 0.07 < share < 0.115


def test_typo_copies_keep_label_and_group_and_are_seeded():
    rows = [LabelledText(f"{TEXT} number {i}", i % 2, group=f"g{i // 3}", domain="web") for i in range(200)]
    config = TypoCopies(share=0.25, max_rate=0.5)
    copies = typo_copies(rows, config, seed=0)
    assert len(copies) == 50
    originals = {r.group: r for r in rows}
    by_text = {r.text.rsplit(" ", 1)[-1]: r for r in rows}  # the row number survives: short words stay
    for c in copies:
        source = by_text[c.text.rsplit(" ", 1)[-1]]
        assert (c.label, c.group, c.domain) == (source.label, source.group, source.domain)
        assert c.group in originals
    # a copy drawn at rate r is left as it was with chance (1 - r)^14 (14 long words): 13% on average here
    assert sum(c.text != by_text[c.text.rsplit(" ", 1)[-1]].text for c in copies) >= 35
    assert [c.text for c in copies] == [c.text for c in typo_copies(rows, config, seed=0)]
    assert [c.text for c in copies] != [c.text for c in typo_copies(rows, config, seed=1)]
    assert typo_copies(rows, TypoCopies(), seed=0) == []


@pytest.mark.parametrize("body, match", [("share: 1.5", "typo_copies.share must be a fraction in"),
                                         ("max_rate: 0", "typo_copies.max_rate must be in"),
                                         ("rate: 0.1", "unknown key 'typo_copies.rate'")])
def test_bad_typo_copies_settings_name_the_recipe_file(tmp_path, body, match):
    bad = tmp_path / "r.yaml"
    bad.write_text(f"typo_copies:\n  {body}\n")
    with pytest.raises(UserInputError, match=r"r.yaml: " + match):
        load_recipe(bad)


def test_the_cascade_band_is_fitted_without_the_misspelt_copies():
    """Copies teach the classifier; the band's bound holds per real data set, so they take no part in it."""
    import numpy as np

    from hygiene.detector_eval import _Matrix, fit_band
    from hygiene.recipe import TYPO_PART, RecipeData

    rows = [LabelledText(f"text {i}", i % 2, group=f"g{i}") for i in range(12)]
    parts = ["detect_chat"] * 6 + ["corpus"] * 3 + [TYPO_PART] * 3
    seen = {}

    class Det:
        class lexical_:
            @staticmethod
            def decision_function(texts):
                return np.zeros(len(texts))

        def split(self, y, groups):
            return np.arange(0), np.arange(len(y))  # every row in the calibration share

        def fit_cascade(self, X, sources):
            seen["rows"], seen["sources"] = len(X), list(sources)

    data = RecipeData(rows, [], {}, {}, train_parts=parts, threshold_parts=["wikitext"] * 2)
    train = _Matrix(rows, np.zeros((12, 3)))
    threshold = _Matrix(rows[:2], np.zeros((2, 3)))
    threshold.lexical = np.zeros(2)
    fit_band(Det(), data, train, [r.group for r in rows], threshold)
    assert seen["rows"] == 11 and TYPO_PART not in seen["sources"]
    assert seen["sources"] == ["detect_chat"] * 6 + ["corpus"] * 3 + ["wikitext"] * 2
