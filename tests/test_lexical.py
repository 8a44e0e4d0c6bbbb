"""Detection normalisation, the lexical n-gram model and the evasion attacks it is measured against."""
from __future__ import annotations

import random

import numpy as np
import pytest

from hygiene.detector_eval import attack, family_of, variant_of
from hygiene.lexical import LexicalConfig, LexicalModel, drop_first_sentence, fit_out_of_fold
from hygiene.normalize import confusables_table, normalize_for_detection, normalize_text

TEXT = "Certainly! Here is a short answer. The experiment compared two optimisers over five seeds."


def test_homoglyphs_fold_to_latin_and_invisible_characters_go():
    disguised = "Тhе ехреrimеnt соmраrеd twо орtimisеrs"  # Cyrillic letters in Latin words
    assert disguised != "The experiment compared two optimisers"
    assert normalize_text(disguised) == disguised  # NFKC alone leaves homoglyphs
    assert normalize_for_detection(disguised) == "The experiment compared two optimisers"
    assert normalize_for_detection("a\u00adb\u200ec\u2066d \u2003 e\n\nf") == "abcd e f"  # format chars, odd spaces
    assert all(len(v) == 1 and v.isascii() and v.isalpha() for v in confusables_table().values())


@pytest.mark.parametrize("kind", ["homoglyph", "zero-width", "whitespace"])
def test_cheap_attacks_are_undone_by_normalisation(kind):
    rng = random.Random(0)
    hit = attack(TEXT * 3, kind, rng, rate=0.5)
    assert hit != TEXT * 3
    assert normalize_for_detection(hit) == normalize_for_detection(TEXT * 3)


def test_typo_attack_changes_words_not_their_count():
    hit = attack(TEXT * 5, "typo", random.Random(1), rate=0.9)
    assert hit != TEXT * 5 and len(hit.split()) == len((TEXT * 5).split()) and sorted(hit) == sorted(TEXT * 5)


def test_drop_first_sentence():
    assert drop_first_sentence(TEXT) == "Here is a short answer. The experiment compared two optimisers over five seeds."
    assert drop_first_sentence("No end mark at all") == "No end mark at all"


def test_generator_families_and_variants():
    assert family_of("gpt-4o-2024-05-13") == "GPT-4" and family_of("text-davinci-003") == "GPT-3.5"
    assert family_of("claude-instant-1.2:dipper-paraphrase") == "Claude" and family_of("qwen2-72b-instruct") is None
    assert variant_of("gpt-4") == "plain" and variant_of("gpt-4:polish-human-sentences") == "polish"
    assert variant_of("x:back-translation-en-zh-en") == "back-translation"
    assert variant_of("x:prompt-sico-human-style") == "evasive prompt"
    assert variant_of("x:complete-human-prefix") == "human prefix"


def _register_corpus(n: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Two registers that share every word but differ in which stock phrases they prefer."""
    rng = random.Random(seed)
    words = "data model result study method value system paper figure table".split()
    machine = ["it is important to note", "in conclusion", "overall", "delve into"]
    human = ["honestly", "i reckon", "anyway", "tbh"]
    texts, y = [], []
    for i in range(n):
        label = i % 2
        body = " ".join(rng.choice(words) for _ in range(12))
        phrase = rng.choice(machine if label else human)
        texts.append(f"Opening line {i}. {body} {phrase} {body}.")
        y.append(label)
    return texts, np.array(y), np.arange(n) // 2


def test_lexical_model_learns_a_register_and_round_trips_as_arrays():
    texts, y, groups = _register_corpus(200, seed=0)
    cfg = LexicalConfig(n_features=2**12, folds=4)
    oof, full = fit_out_of_fold(texts, y, groups, cfg)
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(y, oof) > 0.95  # held-out folds: the stock phrases carry over
    model = LexicalModel(cfg).fit(texts, y)
    np.testing.assert_allclose(full.decision_function(texts), model.decision_function(texts))
    back = LexicalModel.from_arrays(cfg, model.to_arrays())
    np.testing.assert_array_equal(back.decision_function(texts), model.decision_function(texts))
    with pytest.raises(ValueError, match="shape"):
        LexicalModel.from_arrays(LexicalConfig(n_features=2**10), model.to_arrays())


def test_out_of_fold_scores_do_not_see_their_own_text():
    """Random labels: in-sample scores memorise them, out-of-fold scores cannot."""
    texts, _, groups = _register_corpus(200, seed=1)
    y = np.random.default_rng(0).integers(0, 2, len(texts))
    cfg = LexicalConfig(n_features=2**12, folds=4)
    from sklearn.metrics import roc_auc_score
    in_sample = roc_auc_score(y, LexicalModel(cfg).fit(texts, y).decision_function(texts))
    oof = roc_auc_score(y, fit_out_of_fold(texts, y, groups, cfg)[0])
    assert in_sample > 0.9 and abs(oof - 0.5) < 0.15


def test_ablation_table_reports_each_variant_measured():
    """The card's table shows each variant's own figures (worst attack, most-flagged source), not another's."""
    from hygiene.detector_eval import ablation_table

    def variant(auroc: float, drop: float, flagged: dict) -> dict:
        s = {"auroc": auroc, "tpr_at_1pct_fpr": auroc / 2}
        return {"detect-chat": s, "variants": {"plain": s}, "corpus": s, "detect-dev": s, "human_flagged": flagged,
                "probes": {"clean": s, "typo": {**s, "auroc_drop": drop}, "homoglyph": {**s, "auroc_drop": drop / 2},
                           "first-sentence-removed": {**s, "auroc_drop": 0.01}},
                "leave-one-source-out": {"_summary": {"mean_auroc": 0.91, "min_auroc": 0.82}}}

    table = ablation_table({"threshold": 0.9, "all features": variant(0.97, 0.04, {"web": 0.002, "books": 0.008}),
                            "lexical n-grams": variant(0.9, 0.2, {"web": 0.03})})
    rows = table.strip().splitlines()
    assert len(rows) == 4 and rows[2].startswith("| all features | 0.970 | 0.485 | 0.910 / 0.820")
    assert "+0.040" in rows[2] and "0.8% (books)" in rows[2]
    assert rows[3].startswith("| lexical n-grams | 0.900") and "+0.200" in rows[3] and "| nan |" in rows[3]
