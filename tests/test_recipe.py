"""The detector recipe: its file format, and the detect-chat split it makes."""
from __future__ import annotations

import pytest

from hygiene.errors import UserInputError
from hygiene.paths import models_dir
from hygiene.recipe import ChatData, PagesData, chat_role, load_recipe, simulator_pages


def test_the_shipped_recipe_loads_and_names_the_shipped_models():
    recipe = load_recipe(models_dir() / "detector" / "recipe.yaml")
    f = recipe.detector.features
    assert f.lm == "reference-lm" and f.contrast_lm == recipe.machine_lm.out.split("/")[-1]
    assert recipe.detector.lexical is not None and recipe.detector.target_fpr == 0.01
    assert isinstance(recipe.human.passage_words, tuple) and isinstance(f.scoring.hidden_layers, tuple)
    assert isinstance(recipe.pages, PagesData) and recipe.pages.train != recipe.pages.eval


@pytest.mark.parametrize("name", ["detector", "detector-fast"])
def test_each_shipped_detector_is_what_its_recipe_makes(name):
    """Each shipped detector folder holds the recipe that remakes it: written there, and scoring as it does."""
    from hygiene.detector import load_detector

    recipe = load_recipe(models_dir() / name / "recipe.yaml")
    assert recipe.out == f"models/{name}"
    shipped = load_detector(name).featurizer.config
    assert shipped.scoring == recipe.detector.features.scoring and shipped.lm == recipe.detector.features.lm


@pytest.mark.parametrize("name", ["detector", "detector-fast"])
def test_the_shipped_card_states_the_shipped_detector(name):
    """The card is written from the build it describes: its recipe's title, the shipped threshold and cascade
    bound, and no part of the data with no texts in it."""
    from hygiene.detector import load_detector

    det = load_detector(name)
    recipe = load_recipe(models_dir() / name / "recipe.yaml")
    card = (models_dir() / name / "CARD.md").read_text()
    assert card.startswith(f"# {recipe.title}\n") and recipe.about.strip() in card
    assert ("Default" in recipe.title) == (name == "detector")
    assert f"Threshold **{det.threshold_:.4f}**" in card
    assert det.config.cascade == recipe.detector.cascade
    assert f"at most {100 * recipe.detector.cascade.max_disagreement:g}% differing decisions" in card
    assert "0 human / 0 machine" not in card


def test_the_shipped_models_stay_under_60_mb():
    size = sum(p.stat().st_size for p in models_dir().rglob("*") if p.is_file())
    assert size < 60e6, f"models/ holds {size / 1e6:.1f} MB"


def test_missing_simulator_pages_name_the_command_that_makes_them(tmp_path):
    with pytest.raises(UserInputError, match=r"no simulator pages at .*p.jsonl \(make them with: collapse-sim pages"):
        simulator_pages(str(tmp_path / "p.jsonl"))
    (tmp_path / "p.jsonl").write_text('{"text": "a page", "label": "synthetic", "group": "pool:web/web.jsonl:1"}\n')
    (page,) = simulator_pages(str(tmp_path / "p.jsonl"))
    assert page.label == 1 and page.group == "pool:web/web.jsonl:1"


def test_unknown_and_malformed_keys_name_the_file_and_key(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("detector:\n  features:\n    lmm: x\n")
    with pytest.raises(UserInputError, match=r"r.yaml: unknown key 'detector.features.lmm'"):
        load_recipe(bad)
    bad.write_text("chat: 3\n")
    with pytest.raises(UserInputError, match="chat. must be a mapping|chat must be a mapping"):
        load_recipe(bad)
    with pytest.raises(UserInputError, match="recipe not found"):
        load_recipe(tmp_path / "missing.yaml")
    for value, match in (("0", "max_steps must be a whole number of steps >= 1, not 0"),
                         ("2.5", "max_steps must be a whole number of steps >= 1, not 2.5")):
        bad.write_text(f"machine_lm:\n  max_steps: {value}\n")
        with pytest.raises(UserInputError, match=r"r.yaml: machine_lm\." + match):
            load_recipe(bad)
    bad.write_text("machine_lm:\n  time_budget_s: soon\n")
    with pytest.raises(UserInputError, match="r.yaml: machine_lm.time_budget_s must be seconds > 0, not 'soon'"):
        load_recipe(bad)
    bad.write_text("detector:\n  features: [1, 2\n  other: 3\n")
    with pytest.raises(UserInputError) as err:
        load_recipe(bad)
    assert "\n" not in str(err.value) and str(err.value).endswith("but got ':' at line 3, column 8)")


def test_chat_groups_split_by_hash_in_the_configured_shares():
    chat = ChatData(eval_share=0.15, threshold_share=0.1)
    roles = [chat_role(f"group-{i}", chat, seed=0) for i in range(20000)]
    share = {r: roles.count(r) / len(roles) for r in ("eval", "threshold", "train")}
    # binomial standard error at n=20000 is about 0.003
    assert share["eval"] == pytest.approx(0.15, abs=0.012) and share["threshold"] == pytest.approx(0.1, abs=0.012)
    assert roles == [chat_role(f"group-{i}", chat, seed=0) for i in range(20000)]  # deterministic
    assert roles != [chat_role(f"group-{i}", chat, seed=1) for i in range(20000)]  # the seed moves it


def test_every_feature_of_the_shipped_detector_is_in_exactly_one_ablation_family():
    """The ablation's families partition the columns, body scores too: a score over the body goes with the score."""
    import dataclasses

    from hygiene.detector import Detector
    from hygiene.detector_eval import FAMILIES

    config = load_recipe(models_dir() / "detector" / "recipe.yaml").detector
    scoring = dataclasses.replace(config.features.scoring, body_from=32)
    config = dataclasses.replace(config, features=dataclasses.replace(config.features, scoring=scoring))
    names = Detector(config).feature_names
    assert any(n.startswith("body_") for n in names)
    for n in names:
        assert sum(member(n) for member in FAMILIES.values()) == 1, n
    assert FAMILIES["machine LM (ratio, Binoculars)"]("body_llr") and FAMILIES["reference LM scores"]("body_ll")


def _jsonl(path, rows):
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_own_files_become_training_parts_and_threshold_sources_of_their_own(tmp_path):
    from hygiene.recipe import own_parts

    forum = _jsonl(tmp_path / "forum.jsonl", [
        {"text": "a post", "label": "human", "group": "thread-1"},
        {"text": "a reply", "label": "human"},
        {"text": "an answer", "label": "machine", "group": "thread-1"}])
    essays = _jsonl(tmp_path / "essays.jsonl", [
        {"text": "my essay", "label": "human"}, {"text": "its essay", "label": "machine"}])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"own:\n  train: [{forum}]\n  threshold: [{essays}]\n")
    own = load_recipe(recipe).own
    assert own.train == (forum,) and own.threshold == (essays,)
    train, threshold = own_parts(own)
    rows = train["own:forum"]
    assert [r.label for r in rows] == [0, 0, 1]
    # groups kept apart from the shipped data's, and a row without one is its own group
    assert rows[0].group == rows[2].group == "own:forum:thread-1" and rows[1].group == "own:forum:1"
    # the threshold takes the human texts only, as a source of their own
    (human,) = threshold["own:essays"]
    assert human.text == "my essay" and human.domain == "own:essays"


def test_own_files_that_cannot_work_fail_naming_the_file(tmp_path):
    from hygiene.recipe import OwnData, own_parts

    machine = _jsonl(tmp_path / "m.jsonl", [{"text": "x", "label": "machine"}])
    with pytest.raises(UserInputError, match=r"m.jsonl: no human texts"):
        own_parts(OwnData(threshold=(machine,)))
    with pytest.raises(UserInputError, match=r"m.jsonl: in both own.train and own.threshold"):
        own_parts(OwnData(train=(machine,), threshold=(machine,)))
    (tmp_path / "b").mkdir()
    twin = _jsonl(tmp_path / "b" / "m.jsonl", [{"text": "y", "label": "human"}])
    with pytest.raises(UserInputError, match=r"also named 'm'"):
        own_parts(OwnData(train=(machine, twin)))
    bare = tmp_path / "r.yaml"
    bare.write_text(f"own:\n  train: {machine}\n")
    with pytest.raises(UserInputError, match=r"r.yaml: own.train must be a list of files"):
        load_recipe(bare)
    with pytest.raises(UserInputError, match=r"missing.jsonl"):
        own_parts(OwnData(train=(str(tmp_path / "missing.jsonl"),)))


def test_the_card_says_where_a_build_ran_and_what_the_language_models_scored(tmp_path):
    from hygiene.detector_eval import _build_conditions, _rows_in

    cache = tmp_path / "features.jsonl"
    assert _rows_in(cache) == 0
    cache.write_text('{"key": "a", "x": [1]}\n{"key": "b", "x": [2]}\n{"key": "c", "x"')  # a torn last line
    assert _rows_in(cache) == 2
    fresh = _build_conditions({"cpu_cores": 16, "device": "cuda:0", "texts_scored": 17012}, "w/features.jsonl")
    assert fresh.startswith("on 16 CPU cores and cuda:0") and "scoring 17,012 texts" in fresh
    cached = _build_conditions({"cpu_cores": 2, "device": "cpu", "texts_scored": 0}, "w/features.jsonl")
    assert cached.startswith("on 2 CPU cores (") and "every text's features already in `w/features.jsonl`" in cached


def test_the_machine_lm_can_be_trained_without_a_repository(shared_data):
    """For leave-one-out figures no model saw: every machine training text but the repository's is kept."""
    from hygiene.recipe import chat_records, machine_lm_texts, repository

    recipe = load_recipe(models_dir() / "detector" / "recipe.yaml")
    hppt = "FreedomIntelligence/ChatGPT-Detection-PR-HPPT"
    own = {r.text for r in chat_records(recipe)["train"] if r.label == 1 and repository(r) == hppt}
    full, without = machine_lm_texts(recipe), machine_lm_texts(recipe, leave_out=[hppt])
    assert own and not own & set(without)
    assert len(without) == len(full) - len([t for t in full if t in own])


def test_leaving_out_a_repository_that_is_not_there_names_it(shared_data):
    from hygiene.detector_eval import leave_repositories_out

    recipe = load_recipe(models_dir() / "detector" / "recipe.yaml")
    with pytest.raises(UserInputError, match="not a detect-chat repository with held-out texts: nobody/nothing"):
        leave_repositories_out(recipe, ["nobody/nothing"], progress=False)
