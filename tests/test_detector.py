"""Detector: pickle-free classifiers, calibration to a target FPR, persistence and its refusals."""
from __future__ import annotations

import functools
import hashlib
import json
import re

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

import hygiene
from hygiene.classifier import ClassifierConfig, fit_classifier
from hygiene.detector import Detector, DetectorConfig, DetectorError, load_detector, threshold_for_fpr
from hygiene.evaluation import bootstrap_auroc, evaluate_scores, roc_summary, tpr_at_fpr
from hygiene.features import FeatureConfig
from hygiene.scoring import ScoringConfig
from tiny_lm import tiny_lms

#: the synthetic-feature tests need no hidden-state columns (hundreds of them would only slow them down)
SCORES_ONLY = FeatureConfig(scoring=ScoringConfig())


@functools.cache
def n_features() -> int:
    """Columns of a scores-only detector; this loads the shipped reference LM, so on first use, not at collection."""
    return len(Detector(DetectorConfig(features=SCORES_ONLY)).feature_names)


def _synthetic(n: int, seed: int, shift: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Human rows ~ N(0, I); machine rows shifted on the first three features; 2% NaN."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, n_features()))
    X[:, :3] += shift * y[:, None]
    X[rng.random(X.shape) < 0.02] = np.nan
    return X, y


@pytest.mark.slow
def test_hgb_arrays_reproduce_scikit_learn_exactly():
    X, y = _synthetic(3000, seed=1)
    cfg = ClassifierConfig(kind="hgb", seed=3)
    ours = fit_classifier(X, y, cfg)
    ref = HistGradientBoostingClassifier(max_iter=cfg.max_iter, early_stopping=True, random_state=3).fit(X, y)
    Xt, _ = _synthetic(1000, seed=2)
    np.testing.assert_allclose(ours.decision_function(Xt), ref.decision_function(Xt), rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", ["hgb", "logistic"])
def test_calibration_reaches_target_fpr_and_probabilities_are_calibrated(kind):
    target = 0.01
    det = Detector(DetectorConfig(features=SCORES_ONLY, classifier=ClassifierConfig(kind=kind, max_iter=60),
                                  target_fpr=target))
    X, y = _synthetic(8000, seed=0)
    det.fit_features(X, y)
    # threshold on 20,000 fresh human rows, FPR on 30,000 more: sd of the measured FPR ~ 0.0009
    Xh, _ = _synthetic(20_000, seed=5, shift=0.0)
    det.calibrate_features(Xh)
    assert det.metrics_["calibration"]["human_flagged"] <= target
    Xf, _ = _synthetic(30_000, seed=6, shift=0.0)
    fpr = np.mean(det.predict_proba_features(Xf)[:, 1] > det.threshold_)
    assert 0.007 <= fpr <= 0.013
    # Platt scaling: among fresh rows given P(machine) in a bin, that share is machine
    Xe, ye = _synthetic(20_000, seed=7)
    p = det.predict_proba_features(Xe)[:, 1]
    for lo in (0.1, 0.3, 0.5, 0.7):
        sel = (p >= lo) & (p < lo + 0.2)
        assert abs(ye[sel].mean() - p[sel].mean()) < 0.05


def test_per_domain_threshold_holds_the_target_for_every_domain():
    det = Detector(DetectorConfig(features=SCORES_ONLY, classifier=ClassifierConfig(kind="logistic")))
    det.fit_features(*_synthetic(4000, seed=0))
    a, _ = _synthetic(2000, seed=8, shift=0.0)
    b, _ = _synthetic(500, seed=9, shift=0.0)
    b[:, :3] += 0.7  # a source of human text that looks more machine-like than the rest
    Xh, domains = np.vstack([a, b]), ["a"] * 2000 + ["b"] * 500
    det.calibrate_features(Xh, target_fpr=0.01)
    assert np.mean(det.predict_proba_features(b)[:, 1] > det.threshold_) > 0.02  # pooled: b pays for a
    det.calibrate_features(Xh, target_fpr=0.01, domains=domains)
    by_domain = det.metrics_["calibration"]["human_flagged_by_domain"]
    assert set(by_domain) == {"a", "b"} and max(by_domain.values()) <= 0.01
    assert np.mean(det.predict_proba_features(b)[:, 1] > det.threshold_) <= 0.01


def test_one_class_of_labels_is_refused_before_any_text_is_scored(monkeypatch: pytest.MonkeyPatch) -> None:
    det = Detector(DetectorConfig(features=FeatureConfig(lm="unused", scoring=ScoringConfig())))

    def no_scoring(*args, **kwargs):
        raise AssertionError("featurized before the labels were checked")

    monkeypatch.setattr(det, "base_features", no_scoring)
    with pytest.raises(DetectorError, match="needs both human and machine texts"):
        det.fit(["a text", "another"], ["human", "human"])


def test_threshold_for_fpr_counts_allowed_false_positives():
    p = np.linspace(0, 1, 1000)
    t = threshold_for_fpr(p, 0.01)
    assert np.sum(p > t) == 10
    assert threshold_for_fpr(p[:50], 0.01) == p[49]  # 0 allowed: nothing above the maximum


def test_tpr_at_fpr_matches_counting():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(1000), np.ones(1000)].astype(int)
    s = np.r_[rng.normal(size=1000), rng.normal(2, 1, 1000)]
    t = np.sort(s[y == 0])[-11]  # 10 human scores above t: FPR 1%
    assert tpr_at_fpr(y, s, 0.01) == pytest.approx(np.mean(s[y == 1] > t))
    summary = roc_summary(y, s)
    assert 0.9 < summary["auroc"] < 0.95  # Phi(2 / sqrt 2) = 0.921
    # a machine-only stratum is scored against all the human rows
    strata = {"generation": [None] * 1000 + ["1"] * 500 + ["2"] * 500}
    res = evaluate_scores({"s": s}, y, strata)
    assert res["by_generation"]["1"]["s"]["n_human"] == 1000
    assert res["by_generation"]["2"]["s"]["n_machine"] == 500


def test_bootstrap_auroc_spread_matches_hanley_mcneil():
    """The resampled AUROCs centre on the AUROC, with the spread of Hanley & McNeil's (1982) standard error;
    each resample is the AUROC of its rows (ties counted half, as scikit-learn does)."""
    rng = np.random.default_rng(0)
    n0, n1 = 150, 100
    y = np.r_[np.zeros(n0), np.ones(n1)].astype(int)
    s = np.round(np.r_[rng.normal(size=n0), rng.normal(1, 1, n1)], 1)  # rounded: ties
    a = roc_summary(y, s)["auroc"]
    boots = bootstrap_auroc(y, s, n=2000, seed=1)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n0 * n1))
    assert abs(boots.mean() - a) < 0.1 * se
    assert 0.85 < boots.std() / se < 1.15
    assert np.array_equal(boots, bootstrap_auroc(y, s, n=2000, seed=1))  # seeded
    one = np.random.default_rng(3)
    h, m = s[y == 0][one.integers(0, n0, (1, n0))][0], s[y == 1][one.integers(0, n1, (1, n1))][0]
    expect = roc_summary(np.r_[np.zeros(n0), np.ones(n1)].astype(int), np.r_[h, m])["auroc"]
    assert bootstrap_auroc(y, s, n=1, seed=3)[0] == pytest.approx(expect)
    with pytest.raises(ValueError, match="human and machine"):
        bootstrap_auroc(np.ones(5, dtype=int), np.arange(5.0))


@pytest.fixture(scope="module")
def tiny_corpus():
    """Machine text sampled from a tiny LM and human-like text it did not write (shuffled words)."""
    (lm,) = tiny_lms(1, seed=21)
    torch.manual_seed(0)
    prompt = torch.full((120, 1), lm.tokenizer.eos_token_id)
    out = lm.model.generate(prompt, do_sample=True, max_new_tokens=40, min_new_tokens=40,
                            pad_token_id=lm.tokenizer.eos_token_id)
    machine = lm.tokenizer.batch_decode(out[:, 1:], skip_special_tokens=True)
    rng = np.random.default_rng(0)
    words = "the of a model text human data we it was on in and to tails forget collapse best times".split()
    human = [" ".join(rng.choice(words, 25)) for _ in range(120)]
    return lm, human + machine, np.r_[np.zeros(120), np.ones(120)].astype(int)


def test_fit_save_load_round_trip(tmp_path, tiny_corpus):
    lm, texts, y = tiny_corpus
    cfg = DetectorConfig(features=FeatureConfig(lm="tiny"), classifier=ClassifierConfig(kind="logistic"))
    det = Detector(cfg, models={"tiny": lm}).fit(texts, y, groups=np.arange(len(y)) // 2)
    assert det.metrics_["calibration"]["auroc"] > 0.9
    det.save(tmp_path / "det")
    back = load_detector(tmp_path / "det", models={"tiny": lm})
    np.testing.assert_array_equal(back.predict_proba(texts), det.predict_proba(texts))
    assert back.threshold_ == det.threshold_ and back.feature_names == det.feature_names
    assert back.predict(texts).shape == (len(texts),)


@pytest.fixture()
def saved(tmp_path):
    X, y = _synthetic(1000, seed=0)
    return Detector(DetectorConfig(features=SCORES_ONLY)).fit_features(X, y).save(tmp_path / "det")


def test_not_a_detector_directory_is_refused(tmp_path, saved):
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(DetectorError, match="not a detector directory"):
        load_detector(tmp_path / "file.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DetectorError, match="manifest.json is missing"):
        load_detector(tmp_path / "empty")
    with pytest.raises(DetectorError, match="not a detector directory"):
        load_detector(tmp_path / "nowhere")


def test_pickle_files_are_refused(saved):
    (saved / "classifier.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(DetectorError, match="pickle"):
        load_detector(saved)


def test_tampered_files_are_refused(saved):
    header = json.loads((saved / "detector.json").read_text())
    header["threshold"] = 0.0
    (saved / "detector.json").write_text(json.dumps(header))
    with pytest.raises(DetectorError, match="checksum"):
        load_detector(saved)


def test_tampered_weights_are_refused(saved):
    blob = bytearray((saved / "classifier.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (saved / "classifier.safetensors").write_bytes(bytes(blob))
    with pytest.raises(DetectorError, match="classifier.safetensors does not match"):
        load_detector(saved)


def test_bad_labels_and_shapes_are_clear_errors():
    det = Detector(DetectorConfig(features=SCORES_ONLY))
    with pytest.raises(DetectorError, match="label #1 is 'robot'"):
        det.fit_features(np.zeros((2, n_features())), ["human", "robot"])
    with pytest.raises(DetectorError, match="columns"):
        det.fit_features(np.zeros((2, 3)), [0, 1])
    with pytest.raises(DetectorError, match="not fitted"):
        det.predict_proba_features(np.zeros((1, n_features())))


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory, tiny_corpus):
    """A tiny LM saved in HF format and a labelled corpus file, as a user would have them."""
    lm, texts, y = tiny_corpus
    root = tmp_path_factory.mktemp("cli")
    lm.model.save_pretrained(root / "lm")
    lm.tokenizer.save_pretrained(root / "lm")
    corpus = root / "corpus.jsonl"
    gens = ["1", "2"]
    with corpus.open("w") as fh:
        for i, (t, label) in enumerate(zip(texts, y)):
            rec = {"text": t, "label": ["human", "synthetic"][label], "source_id": f"doc{i // 2}"}
            if label:
                rec["generation"] = gens[i % 2]
            fh.write(json.dumps(rec) + "\n")
    return root, corpus


def test_cli_train_evaluate_score_calibrate(cli_setup):
    from click.testing import CliRunner

    from hygiene.cli import main

    root, corpus = cli_setup
    run = CliRunner().invoke
    det = root / "det"
    r = run(main, ["train-detector", "--corpus", str(corpus), "--out", str(det), "--lm", str(root / "lm"),
                   "--classifier", "logistic", "--human-calib", "", "--cache", str(root / "cache.jsonl")])
    assert r.exit_code == 0, r.output
    r = run(main, ["evaluate", "--detector", str(det), "--data", str(corpus), "--out", str(root / "eval"),
                   "--cache", str(root / "cache.jsonl")])
    assert r.exit_code == 0, r.output
    assert f"warning: {corpus} is a corpus this detector was trained on" in r.output  # not held out
    training = load_detector(det).training_
    assert training["corpora"] == [{"path": str(corpus.resolve()), "sha256": hashlib.sha256(corpus.read_bytes()).hexdigest()}]
    assert training["hygiene_version"] == hygiene.__version__
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert set(metrics["by_generation"]) == {"1", "2"} and (root / "eval" / "roc.png").stat().st_size > 0
    assert metrics["overall"]["classifier"]["auroc"] > 0.9 and "fast_detectgpt" in metrics["overall"]
    r = run(main, ["score", str(corpus), "--detector", str(det), "-o", str(root / "scores.jsonl")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (root / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 240 and 0 <= rows[0]["p_machine"] <= 1 and "fast_detectgpt" in rows[0]
    # the detector reads the LM's hidden states; the scores file carries the scores, not those vectors
    assert any(n.startswith("hidden") for n in load_detector(det).feature_names)
    assert "fdg_std" in rows[0] and not any(k.startswith("hidden") for k in rows[0])
    assert rows[0]["source_id"] == "doc0" and rows[0]["label"] == "human" and "text" not in rows[0]  # joins back
    r = run(main, ["score", str(corpus), "--detector", str(det), "-o", str(root / "kept.jsonl"),
                   "--keep-fields", "source_id"])
    row = json.loads((root / "kept.jsonl").read_text().splitlines()[0])
    assert r.exit_code == 0 and row["source_id"] == "doc0" and "label" not in row
    # a text too short to judge: its row holds null, not a probability
    (root / "short.jsonl").write_text('{"text": ""}\n' + json.dumps({"text": "a text of a good few words to judge"}) + "\n")
    r = run(main, ["score", str(root / "short.jsonl"), "--detector", str(det), "--no-progress"])
    short = [json.loads(x) for x in (root / "short.scores.jsonl").read_text().splitlines()]
    assert r.exit_code == 0 and short[0]["p_machine"] is None and 0 <= short[1]["p_machine"] <= 1, r.output
    # as filter does: written, but exit 1 when nothing could be scored
    (root / "empty.jsonl").write_text("")
    (root / "bad.jsonl").write_text('{"body": "a"}\n{"body": "b"}\n')
    for name, message in (("empty", "no records in .*empty.jsonl: nothing was scored"),
                          ("bad", r"every one of the 2 records is an error \(a wrong --text-field\?\); see")):
        r = run(main, ["score", str(root / f"{name}.jsonl"), "--detector", str(det), "--no-progress"])
        assert r.exit_code == 1 and re.search(message, r.output) and "Traceback" not in r.output, r.output
        assert len((root / f"{name}.scores.jsonl").read_text().splitlines()) == {"empty": 0, "bad": 2}[name]
    (root / "indir").mkdir()
    (root / "indir" / "c.jsonl").write_bytes(corpus.read_bytes())
    r = run(main, ["score", str(root / "indir"), "--detector", str(det), "-o", str(root / "dir.jsonl"), "--no-progress"])
    assert r.exit_code == 0 and len((root / "dir.jsonl").read_text().splitlines()) == 240, r.output
    # the input is checked before any model loads: a missing detector is not what this run reports
    r = run(main, ["score", str(root / "missing.jsonl"), "--detector", str(root / "no-detector")])
    assert r.exit_code == 1 and "input not found" in r.output and "Traceback" not in r.output, r.output
    r = run(main, ["calibrate", "--detector", str(det), "--data", str(corpus), "--human-sources", "",
                   "--target-fpr", "0.05"])
    assert r.exit_code == 0 and str(det) in r.output, r.output
    assert load_detector(det).target_fpr_ == 0.05
    # to another folder: the source stays as it was; the shipped detector is never rewritten in place
    before = {f.name: f.read_bytes() for f in det.iterdir()}
    r = run(main, ["calibrate", "--detector", str(det), "--out", str(root / "recal"), "--data", str(corpus),
                   "--human-sources", "", "--target-fpr", "0.1"])
    assert r.exit_code == 0 and load_detector(root / "recal").target_fpr_ == 0.1, r.output
    assert {f.name: f.read_bytes() for f in det.iterdir()} == before
    from hygiene.paths import models_dir
    shipped = {f: f.stat().st_mtime_ns for f in (models_dir() / "detector").iterdir()}
    for args in ([], ["--detector", "detector"], ["--detector", str(models_dir() / "detector")]):
        r = run(main, ["calibrate", *args, "--data", str(corpus)])
        assert r.exit_code == 2 and "give --out" in r.output and "Traceback" not in r.output, r.output
    assert {f: f.stat().st_mtime_ns for f in (models_dir() / "detector").iterdir()} == shipped


def test_cli_errors_are_one_line(cli_setup, tmp_path):
    from click.testing import CliRunner

    from hygiene.cli import main

    root, corpus = cli_setup
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "human"}\n{"text": "x", "label": "robot"}\n')
    r = CliRunner().invoke(main, ["evaluate", "--detector", str(tmp_path), "--data", str(corpus)])
    assert r.exit_code == 1 and "not a detector directory" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["evaluate", "--detector", str(tmp_path)])
    assert r.exit_code == 2 and "--data and/or --human-pool" in r.output
    r = CliRunner().invoke(main, ["train-detector", "--corpus", str(bad), "--out", str(tmp_path / "d"),
                                  "--lm", str(root / "lm"), "--human-calib", ""])
    assert r.exit_code == 1 and f"{bad}:2: label is 'robot'" in r.output


def test_layout_does_not_change_features(tiny_corpus):
    lm = tiny_corpus[0]
    det = Detector(DetectorConfig(features=FeatureConfig(lm="tiny")), models={"tiny": lm})
    X = det.features(["Model collapse\n\nerases   the tails.", "Model collapse erases the tails."])
    np.testing.assert_array_equal(X[0], X[1])


def test_feature_cache_keys_ignore_how_texts_are_batched(tmp_path):
    import dataclasses
    import hashlib

    from hygiene.features import FeatureCache

    base = FeatureConfig()

    def key(config: FeatureConfig) -> str:
        return FeatureCache(tmp_path / "cache.jsonl", config).key("Model collapse erases the tails.")

    def scoring(**changes) -> FeatureConfig:
        return dataclasses.replace(base, scoring=dataclasses.replace(base.scoring, **changes))

    # a cache written under the default batching keeps serving its rows (the key's formula is unchanged)
    text = base.prepare("Model collapse erases the tails.")
    old = hashlib.sha1((json.dumps(dataclasses.asdict(base), sort_keys=True) + "\0" + text).encode()).hexdigest()
    assert key(base) == old
    assert key(scoring(batch_size=3, max_batch_tokens=99, padding_side="left")) == old
    assert key(scoring(max_tokens=64)) != old and key(scoring(body_from=8)) != old
    assert key(dataclasses.replace(base, text_stats=False)) != old
    # a model retrained under the same name: its rows are computed again
    pinned = FeatureCache(tmp_path / "cache.jsonl", base, {"reference-lm": "ab" * 32}).key("Model collapse erases the tails.")
    retrained = FeatureCache(tmp_path / "cache.jsonl", base, {"reference-lm": "cd" * 32}).key("Model collapse erases the tails.")
    assert len({old, pinned, retrained}) == 3


def test_feature_cache_recomputes_the_rows_of_a_model_retrained_under_the_same_name(tmp_path):
    from hygiene.features import Featurizer
    from tiny_lm import tiny_gpt2, tiny_tokenizer

    tok, folder, cache = tiny_tokenizer(), tmp_path / "lm", tmp_path / "cache.jsonl"
    texts = ["Model collapse erases the tails.", "It was the best of times."]

    def features(seed: int) -> np.ndarray:
        tiny_gpt2(tok, seed=seed).save_pretrained(folder)
        tok.save_pretrained(folder)
        return Featurizer(FeatureConfig(lm=str(folder), text_stats=False), backend="torch").transform(texts, cache=cache)

    first = features(0)
    assert np.array_equal(features(0), first, equal_nan=True) and cache.read_text().count("\n") == 2  # reused
    assert not np.allclose(features(1), first, equal_nan=True) and cache.read_text().count("\n") == 4


@pytest.mark.slow
def test_detector_scores_in_float32_by_default():
    """A detector's classifier was fitted on float32 scores; it must not switch to bfloat16 on a GPU."""
    from hygiene.lm import select_dtype

    for det in (Detector(), load_detector()):
        assert select_dtype(det.featurizer.dtype, torch.device("cuda")) is torch.float32


def test_shipped_detectors_load_by_name_and_a_path_wins(tmp_path, monkeypatch):
    """``detector-fast`` names the shipped folder, which reads fewer tokens a text than the default; a folder of
    that name where the user stands is theirs, and a name that is neither is a one-line error naming it."""
    from hygiene.errors import UserInputError
    from hygiene.stages.synthetic import load_default_detector

    fast, default = load_detector("detector-fast"), load_detector()
    assert fast.featurizer.config.scoring.max_tokens < default.featurizer.config.scoring.max_tokens
    assert fast.threshold_ != default.threshold_
    monkeypatch.chdir(tmp_path)
    (tmp_path / "detector-fast").mkdir()
    with pytest.raises(DetectorError, match="manifest"):
        load_detector("detector-fast")
    with pytest.raises(UserInputError, match="no synthetic-text detector at detector-nope"):
        load_default_detector("detector-nope")


def test_configs_round_trip_and_version_1_layouts_load():
    import dataclasses

    from hygiene.detector import _config_from_dict

    saved = json.loads(json.dumps(dataclasses.asdict(DetectorConfig())))
    assert _config_from_dict(saved) == DetectorConfig()  # the round trip itself
    # version 1: the feature groups' switches sat on the feature config and overrode the scoring config's
    v1 = json.loads(json.dumps(saved))
    v1["features"].pop("fold_homoglyphs")
    v1["features"].update(token_stats=True, hidden_states=[0.5])
    v1["features"]["scoring"].update(token_stats=False, hidden_layers=[])
    features = _config_from_dict(v1).features
    assert features.scoring.token_stats is True and features.scoring.hidden_layers == (0.5,)
    assert features.fold_homoglyphs is False  # version 1 scored without folding
    del v1["features"]["token_stats"], v1["features"]["hidden_states"]  # saved before either group existed
    features = _config_from_dict(v1).features
    assert features.scoring.token_stats is False and features.scoring.hidden_layers == ()


def test_lexical_contrast_detector_round_trips_and_pins_its_models(tmp_path, tiny_corpus):
    """A detector with a contrast LM and a lexical model: saved, loaded, same scores; its LMs pinned by hash."""
    import shutil

    from hygiene.lexical import LexicalConfig

    lm, texts, y = tiny_corpus
    (contrast,) = tiny_lms(1, seed=5)
    for name, m in (("ref", lm), ("machine", contrast)):
        m.model.save_pretrained(tmp_path / name)
        m.tokenizer.save_pretrained(tmp_path / name)
    features = FeatureConfig(lm=str(tmp_path / "ref"), contrast_lm=str(tmp_path / "machine"), scoring=ScoringConfig())
    cfg = DetectorConfig(features=features, classifier=ClassifierConfig(kind="logistic"),
                         lexical=LexicalConfig(n_features=2**10, folds=3))
    det = Detector(cfg).fit(texts, y, groups=np.arange(len(y)) // 2)
    assert det.feature_names[-1] == "lexical" and "llr" in det.feature_names
    det.save(tmp_path / "det")
    header = json.loads((tmp_path / "det" / "detector.json").read_text())
    assert set(header["models"]) == {str(tmp_path / "ref"), str(tmp_path / "machine")}
    back = load_detector(tmp_path / "det")
    np.testing.assert_allclose(back.predict_proba(texts), det.predict_proba(texts), rtol=1e-6, atol=1e-9)

    # the machine LM rebuilt in place: refused by name, not silently scored with
    (contrast2,) = tiny_lms(1, seed=6)
    contrast2.model.save_pretrained(tmp_path / "machine")
    with pytest.raises(DetectorError, match="changed since the detector was fitted"):
        load_detector(tmp_path / "det")
    shutil.rmtree(tmp_path / "machine")
    with pytest.raises(DetectorError, match="is not at"):
        load_detector(tmp_path / "det")


def test_a_lexical_detector_needs_texts_to_fit():
    from hygiene.lexical import LexicalConfig

    det = Detector(DetectorConfig(features=SCORES_ONLY, lexical=LexicalConfig()))
    with pytest.raises(DetectorError, match="fitted on texts"):
        det.fit_features(np.zeros((4, n_features())), [0, 1, 0, 1])


def test_cascade_band_settles_the_most_within_each_sources_budget():
    """Against a brute force over every pair of cut points: no band settles more texts while keeping each
    source's disagreements within its budget."""
    from hygiene.detector import cascade_band

    rng = np.random.default_rng(4)
    n = 80
    s = rng.normal(size=n)
    flagged = (s + rng.normal(scale=0.8, size=n)) > 0.3
    sources = np.where(rng.random(n) < 0.3, "small", "large")
    cuts = np.concatenate([[-np.inf], np.unique(s), [np.inf]])

    def cost(low: float, high: float, src) -> np.ndarray:
        """Disagreements per source, and texts settled, of settling s < low human and s > high machine."""
        out = []
        for d in sorted(set(src)):
            rows = src == d
            out.append(((flagged & (s < low) & rows).sum() + (~flagged & (s > high) & rows).sum()) / rows.sum())
        return np.array(out), (s < low).sum() + (s > high).sum()

    for budget in (0.0, 0.05, 0.15):
        for src in (np.array([""] * n, dtype=object), sources):
            low, high = cascade_band(s, flagged, budget, src)
            assert low <= high
            spent, settled = cost(low, high, src)
            limits = np.array([np.floor(budget * (src == d).sum()) / (src == d).sum() for d in sorted(set(src))])
            assert np.all(spent <= limits + 1e-12)
            best = max(c[1] for lo in cuts for hi in cuts if hi >= lo
                       for c in [cost(lo, hi, src)] if np.all(c[0] <= limits + 1e-12))
            assert settled == best


def test_calibrating_on_human_text_alone_never_narrows_the_cascade_band(tiny_corpus):
    """On human text almost nothing is flagged, so a band refitted on it alone could settle every text and
    leave the language models nothing to read: calibrating on human text only widens the band; with
    machine texts among the calibration texts the band is refitted on them."""
    from hygiene.detector import CascadeConfig, cascade_band
    from hygiene.lexical import LexicalConfig

    lm, texts, y = tiny_corpus
    cfg = DetectorConfig(features=FeatureConfig(lm="tiny", scoring=ScoringConfig()),
                         classifier=ClassifierConfig(kind="logistic"),
                         lexical=LexicalConfig(n_features=2**10, folds=3), cascade=CascadeConfig(0.02))
    det = Detector(cfg, models={"tiny": lm}).fit(texts, y, groups=[f"g{i // 2}" for i in range(len(y))])
    human = [t for t, label in zip(texts, y) if label == 0]
    X = det.features(human)
    s = det.first_pass_.decision_function(X[:, det._first_pass_columns()])
    det.band_ = before = (float(s.min()) - 1, float(s.max()) + 1)  # a band that settles none of them
    flagged = det.predict_proba_features(X)[:, 1] > det.threshold_
    low, high = cascade_band(s, flagged, 0.02)
    assert np.mean((s < low) | (s > high)) > 0.5  # what human text alone would allow: most of it settled
    det.calibrate(human, [0] * len(human))
    assert det.band_[0] <= before[0] and det.band_[1] >= before[1]
    assert det.metrics_["cascade"]["settled"] == 0
    det.calibrate(texts, y)
    refit = det.band_
    assert refit == det.fit_cascade(det.features(texts)).band_


def test_cascade_settles_without_the_language_models_and_round_trips(tmp_path, tiny_corpus, monkeypatch):
    """With a cascade, settled texts never reach the LMs; its P(machine) is on the side of the threshold its
    decision is; saved and loaded, it gives the same scores; turned off, every text is scored in full."""
    from hygiene.detector import CascadeConfig
    from hygiene.lexical import LexicalConfig, LexicalRows

    lm, texts, y = tiny_corpus
    cfg = DetectorConfig(features=FeatureConfig(lm="tiny", scoring=ScoringConfig()),
                         classifier=ClassifierConfig(kind="logistic"),
                         lexical=LexicalConfig(n_features=2**10, folds=3), cascade=CascadeConfig(0.02))
    groups = [f"g{i // 2}" for i in range(len(y))]
    extra = LexicalRows(texts[:10], y[:10], groups[:10])  # texts already seen: only the calib groups' are dropped
    det = Detector(cfg, models={"tiny": lm}).fit(texts, y, groups=groups)
    _, calib = det.split(y, groups)
    n_train = len(y) - len(calib)
    refit = Detector(cfg, models={"tiny": lm}).fit_features(det.base_features(texts), y, groups, texts=texts,
                                                            lexical_extra=extra)
    assert refit.training_["n_lexical"] == n_train + sum(g not in {groups[i] for i in calib} for g in groups[:10])

    seen: list[str] = []
    transform = det.featurizer.transform
    det.featurizer.transform = lambda t, **kw: seen.extend(t) or transform(t, **kw)
    p = det.predict_proba(texts)[:, 1]
    det.featurizer.transform = transform
    assert det.last_settled_.sum() > 0 and len(seen) == len(texts) - det.last_settled_.sum()
    X = det.features(texts)
    p_cascade, settled = det.cascade_proba_features(X)
    np.testing.assert_allclose(p, p_cascade, rtol=1e-9)
    assert set(seen) == {t for t, s in zip(texts, settled) if not s}
    # the cheap features computed ahead (as a worker process does): the same scores, and neither the text
    # statistics nor the lexical model runs again
    first = det.first_pass_features(texts)
    import hygiene.features

    calls: list[str] = []
    with monkeypatch.context() as m:
        stats = hygiene.features.text_statistics
        m.setattr(hygiene.features, "text_statistics", lambda t: calls.append("stats") or stats(t))
        m.setattr(det.lexical_, "decision_function", lambda t: calls.append("lexical") or [][0])
        np.testing.assert_array_equal(det.predict_proba(texts, first=first)[:, 1], p)
        det.use_cascade = False
        np.testing.assert_array_equal(det.predict_proba(texts, first=first), det.predict_proba_features(X))
        det.use_cascade = True
    assert calls == []
    with pytest.raises(DetectorError, match="first-pass features of shape"):
        det.predict_proba(texts, first=first[:, :-1])
    # the filter's stage says which of its records the first pass settled, batch by batch
    from hygiene.config import SyntheticConfig
    from hygiene.stages.synthetic import SyntheticFilter
    _, columns = SyntheticFilter(SyntheticConfig(batch_size=7), detector=det).score(texts)
    assert columns["synthetic_settled"] == settled.astype(int).tolist()
    full = det.predict_proba_features(X)[:, 1]
    assert np.mean((p > det.threshold_) != (full > det.threshold_)) <= 0.05

    det.save(tmp_path / "det")
    back = load_detector(tmp_path / "det", models={"tiny": lm})
    np.testing.assert_allclose(back.predict_proba(texts)[:, 1], p, rtol=1e-9)
    off = load_detector(tmp_path / "det", models={"tiny": lm}, cascade=False)
    np.testing.assert_allclose(off.predict_proba(texts)[:, 1], full, rtol=1e-9)
    assert not off.last_settled_.any()
    # a text too short to judge (under two tokens: no language-model evidence) gets NaN, is not flagged, and
    # passes the filter's stage unjudged; no texts, no rows
    short = ["", "\u200b", texts[0]]
    for d in (back, off):
        got = d.predict_proba(short)[:, 1]
        assert np.isnan(got[:2]).all() and np.isfinite(got[2]) and list(d.predict(short)[:2]) == [0, 0]
        assert d.predict_proba([]).shape == (0, 2)
    reasons, columns = SyntheticFilter(SyntheticConfig(threshold=-1.0), detector=back).score(short)
    assert reasons == [None, None, "machine_generated"] and columns["synthetic_p"][:2] == [None, None]
    assert columns["synthetic_settled"][:2] == [None, None]

    # moving the threshold refits the band on the same texts, at the new threshold
    back.calibrate(texts[:120], target_fpr=0.05)
    assert back.metrics_["cascade"]["n"] == 120 and back.metrics_["cascade"]["disagreement"] <= 0.02


# -- what a user training a detector of their own runs into ----------------------------------------
def _rehash(folder) -> None:
    """Rewrite a detector's manifest for files edited on purpose (what a tampered-and-rehashed folder holds)."""
    from hygiene.detector import _sha256

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = {name: _sha256(folder / name) for name in manifest["files"]}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_the_calibration_part_holds_both_classes_even_when_machine_text_sits_in_few_groups():
    """A random draw of groups can hold out human text only: Platt scaling then has nothing to fit."""
    det = Detector(DetectorConfig(features=SCORES_ONLY, seed=1))
    y = np.r_[np.zeros(60), np.ones(60)].astype(int)
    groups = [f"h{i}" for i in range(60)] + [f"m{i % 3}" for i in range(60)]
    for seed in range(10):
        det.config = DetectorConfig(features=SCORES_ONLY, seed=seed)
        train, calib = det.split(y, groups)
        assert set(y[calib]) == {0, 1} and set(y[train]) == {0, 1}
        assert not {groups[i] for i in train} & {groups[i] for i in calib}
    with pytest.raises(DetectorError, match="lie in one group"):
        det.split(y, [f"h{i}" for i in range(60)] + ["m"] * 60)
    with pytest.raises(DetectorError, match=r"too few texts to train on: \d+ human and \d+ machine"):
        det.split(y[50:70], np.arange(20))


def test_training_names_the_corpus_and_checks_its_sources_before_scoring(tmp_path, monkeypatch):
    from hygiene.detector import train_detector

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"text {i}", "label": ["human", "machine"][i % 2]}) + "\n"
                              for i in range(8)))

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored before the corpus and sources were checked")

    monkeypatch.setattr(Detector, "base_features", no_scoring)
    with pytest.raises(ValueError, match="unknown human source 'webb'"):
        train_detector([corpus], DetectorConfig(features=SCORES_ONLY), human_calibration=["webb"])
    with pytest.raises(DetectorError, match=rf"^{re.escape(str(corpus))}: too few texts to train on"):
        train_detector([corpus], DetectorConfig(features=SCORES_ONLY))


def test_a_relative_model_path_is_recorded_absolute(tmp_path, monkeypatch):
    from hygiene.lm import model_reference

    (tmp_path / "mylm").mkdir()
    monkeypatch.chdir(tmp_path)
    assert model_reference("mylm") == str(tmp_path / "mylm")
    assert model_reference("reference-lm") == "reference-lm" and model_reference("org/some-model") == "org/some-model"
    assert model_reference(None) is None


def test_an_unknown_model_is_one_line_naming_it():
    from hygiene.errors import UserInputError
    from hygiene.lm import load_lm

    with pytest.raises(UserInputError, match=r"^cannot load the language model 'nosuch-org/nosuch-lm': [^\n]*$"):
        load_lm("nosuch-org/nosuch-lm")


def test_feature_cache_keys_on_the_models_dtype_and_cuts_a_torn_line(tmp_path):
    from hygiene.features import FeatureCache, Featurizer

    assert Featurizer(SCORES_ONLY, device="cpu", dtype="float32").numerics() == {}
    assert Featurizer(SCORES_ONLY, device="cpu", dtype="bfloat16").numerics() == {"dtype": "bfloat16"}
    assert Featurizer(SCORES_ONLY, device="cpu", autocast="bfloat16").numerics() == {"autocast": "bfloat16"}
    path = tmp_path / "cache.jsonl"
    text = "Model collapse erases the tails."
    assert FeatureCache(path, SCORES_ONLY).key(text) != FeatureCache(path, SCORES_ONLY, None, {"dtype": "bfloat16"}).key(text)
    store = FeatureCache(path, SCORES_ONLY)
    store.add(["a", "b"], np.ones((2, 3)))
    with path.open("a") as fh:
        fh.write('{"key": "c", "x": [1.0, ')  # what an interrupted write leaves
    again = FeatureCache(path, SCORES_ONLY)
    again.add(["d"], np.zeros((1, 3)))
    assert sorted(FeatureCache(path, SCORES_ONLY).rows) == ["a", "b", "d"]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_calibrate_reuses_and_extends_a_feature_cache(tmp_path, tiny_corpus, monkeypatch):
    lm, texts, y = tiny_corpus
    cfg = DetectorConfig(features=FeatureConfig(lm="tiny"), classifier=ClassifierConfig(kind="logistic"))
    det = Detector(cfg, models={"tiny": lm}).fit(texts, y, groups=np.arange(len(y)) // 2)
    det.calibrate(texts[:40], y[:40], cache=tmp_path / "c.jsonl")
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == 40
    threshold = det.threshold_

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored texts the cache holds")

    monkeypatch.setattr(det.featurizer, "_compute", no_scoring)
    det.calibrate(texts[:40], y[:40], cache=tmp_path / "c.jsonl")
    assert det.threshold_ == threshold


def test_malformed_detector_files_are_one_line_errors(saved, caplog):
    header = json.loads((saved / "detector.json").read_text())
    (saved / "detector.json").write_text(json.dumps({**header, "models": ["reference-lm"]}))
    _rehash(saved)
    with pytest.raises(DetectorError, match="malformed detector"):
        load_detector(saved)
    (saved / "detector.json").write_text(json.dumps({k: v for k, v in header.items() if k != "feature_names"}))
    _rehash(saved)
    with pytest.raises(DetectorError, match="feature names do not match"):
        load_detector(saved)
    (saved / "detector.json").write_text(json.dumps(
        {**header, "training": {**header.get("training", {}), "numerics": {"dtype": "bfloat16"}}}))
    _rehash(saved)
    with caplog.at_level("WARNING"):
        load_detector(saved)
    assert "fitted on bfloat16 scores and will score in float32" in caplog.text
    (saved / "detector.json").write_text(json.dumps(header))
    blob = (saved / "classifier.safetensors").read_bytes()
    (saved / "classifier.safetensors").write_bytes(blob[: len(blob) // 2])
    _rehash(saved)
    with pytest.raises(DetectorError, match="malformed detector"):
        load_detector(saved)
    manifest = json.loads((saved / "manifest.json").read_text())
    (saved / "manifest.json").write_text(json.dumps({**manifest, "files": sorted(manifest["files"])}))
    with pytest.raises(DetectorError, match="is not a .* manifest"):
        load_detector(saved)


def test_pickle_files_in_a_subfolder_are_refused(saved):
    (saved / "extra").mkdir()
    (saved / "extra" / "model.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(DetectorError, match="pickle-like files \\(extra/model.pkl\\)"):
        load_detector(saved)


def test_a_settled_text_too_short_for_the_models_as_they_read_it_is_nan(tiny_corpus):
    """The cascade counts tokens on the text the language models would read (normalised for detection): one
    word with trailing whitespace or a homoglyph is as unjudged settled as scored in full."""
    from hygiene.detector import CascadeConfig
    from hygiene.lexical import LexicalConfig

    lm, texts, y = tiny_corpus
    cfg = DetectorConfig(features=FeatureConfig(lm="tiny", scoring=ScoringConfig()),
                         classifier=ClassifierConfig(kind="logistic"),
                         lexical=LexicalConfig(n_features=2**10, folds=3), cascade=CascadeConfig(0.02))
    det = Detector(cfg, models={"tiny": lm}).fit(texts, y, groups=[f"g{i // 2}" for i in range(len(y))])
    det.band_ = (np.inf, np.inf)  # the first pass settles every text
    short = ["a", "a\n", "a  ", "\u0430"]  # the last a Cyrillic "а": one token each as the models read them
    assert [len(ids) for ids in det.featurizer.scorer.tokenize(short)] == [1, 2, 3, 2]  # as written, more
    p = det.predict_proba(short)[:, 1]
    assert det.last_settled_.all() and np.isnan(p).all()
    det.use_cascade = False
    assert np.isnan(det.predict_proba(short)[:, 1]).all()
