"""Damaged run state and bad inputs to the simulations end in one line naming the file, never a traceback."""
from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from collapse_sim import gmm, lm, polluted, vae_collapse
from collapse_sim.cli import main as cli
from collapse_sim.corpus import split_corpus, split_of_source
from collapse_sim.lm import simulation as lm_simulation
from collapse_sim.lm.models import train_or_load
from collapse_sim.resume import load_tensors, read_record, save_tensors
from hygiene.errors import UserInputError
from hygiene.human_data import iter_documents
from hygiene.paths import models_dir

GARBAGE = b"not a safetensors file"


def _one_line(exc: pytest.ExceptionInfo, *names: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for name in names:
        assert name in message, message


# --------------------------------------------------------------------------- a run's own files


def test_damaged_safetensors_is_named(tmp_path):
    path = tmp_path / "data.safetensors"
    path.write_bytes(GARBAGE)
    with pytest.raises(UserInputError) as exc:
        load_tensors(path)
    _one_line(exc, str(path), "delete it or use another --out")


def test_safetensors_without_an_expected_tensor_is_named(tmp_path):
    path = tmp_path / "data.safetensors"
    save_tensors({"other": torch.zeros(2)}, path)
    with pytest.raises(UserInputError) as exc:
        load_tensors(path, "samples")
    _one_line(exc, str(path), "'samples'")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"x": 1}'])
def test_bad_record_is_named(tmp_path, text):
    path = tmp_path / "gen.json"
    path.write_text(text)
    with pytest.raises(UserInputError) as exc:
        read_record(path, "config")
    _one_line(exc, str(path))


@pytest.mark.parametrize("saved_config", [lm_simulation._saved_config, polluted._saved_config])
def test_run_json_without_config_is_named(tmp_path, saved_config):
    (tmp_path / "run.json").write_text('{"x": 1}')
    with pytest.raises(UserInputError) as exc:
        saved_config(tmp_path)
    _one_line(exc, "run.json", "'config'")


def test_corpus_command_names_a_damaged_run_json(tmp_path):
    (tmp_path / "run.json").write_text('{"x": 1}')
    (tmp_path / "human.safetensors").write_bytes(GARBAGE)
    res = CliRunner().invoke(cli, ["corpus", str(tmp_path), "--rebuild"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "run.json" in res.output and "'config'" in res.output


def test_corpus_names_a_damaged_human_safetensors(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"config": {"seed": 0, "modes": []}, "train_file": "t.txt",
                                                   "base_model": str(models_dir() / "base-lm")}))
    (tmp_path / "human.safetensors").write_bytes(GARBAGE)
    with pytest.raises(UserInputError) as exc:
        lm.build_corpus(tmp_path)
    _one_line(exc, "human.safetensors")


def test_damaged_generation_model_names_its_folder(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(models_dir() / "base-lm", model)
    (model / "model.safetensors").write_bytes(GARBAGE)
    (tmp_path / "model.json").write_text(json.dumps({"best_step": 1, "best_val_loss": 2.0, "tokens_per_s": 3.0}))
    with pytest.raises(UserInputError) as exc:
        train_or_load(model, tmp_path / "model.json", lambda: pytest.fail("retrained"), None, "cpu")
    _one_line(exc, str(model))


def test_damaged_training_record_is_named(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (tmp_path / "model.json").write_text('{"best_step": 1}')
    with pytest.raises(UserInputError) as exc:
        train_or_load(model, tmp_path / "model.json", lambda: pytest.fail("retrained"), None, "cpu")
    _one_line(exc, "model.json", "'best_val_loss'")


def test_vae_state_files_are_named(tmp_path):
    (tmp_path / "config.json").write_text("[]")
    with pytest.raises(UserInputError) as exc:
        vae_collapse._check_config(tmp_path, vae_collapse.config_for("digits"))
    _one_line(exc, "config.json")

    (tmp_path / "gen000.json").write_text(json.dumps({m: 0.0 for m in vae_collapse.METRICS}))
    (tmp_path / "gen000.npz").write_bytes(b"garbage")
    with pytest.raises(UserInputError) as exc:
        vae_collapse._load_generation(tmp_path, 0)
    _one_line(exc, "gen000.npz")

    np.savez(tmp_path / "gen000.npz", samples=np.zeros((2, 3)))
    (tmp_path / "gen000.json").write_text('{"recall": 1.0}')
    with pytest.raises(UserInputError) as exc:
        vae_collapse._load_generation(tmp_path, 0)
    _one_line(exc, "gen000.json", "'precision'")

    (tmp_path / "vae0.safetensors").write_bytes(GARBAGE)
    with pytest.raises(UserInputError) as exc:
        vae_collapse._load_vae0(tmp_path, SimpleNamespace(n_pixels=64), vae_collapse.config_for("digits"))
    _one_line(exc, "vae0.safetensors")


def test_gmm_checkpoint_of_the_wrong_shape_is_named(tmp_path):
    cfg = gmm.GMMConfig(generations=4, samples=20, runs=2, holdout=50, w2_levels=20, snapshots=(0,))
    gmm.simulate(cfg, checkpoint_dir=tmp_path)
    path = tmp_path / "run_0000.json"
    rec = json.loads(path.read_text())
    rec.update(weights=rec["weights"][:2], means=rec["means"][:2], variances=rec["variances"][:2])
    path.write_text(json.dumps(rec))
    with pytest.raises(gmm.CheckpointError) as exc:
        gmm.simulate(cfg, checkpoint_dir=tmp_path)
    _one_line(exc, str(path))
    path.write_text("{broken")
    with pytest.raises(gmm.CheckpointError) as exc:
        gmm.simulate(cfg, checkpoint_dir=tmp_path)
    _one_line(exc, str(path), "run 0")


# --------------------------------------------------------------------------- the lm's text files


def test_no_texts_make_no_blocks():
    tokenizer = lm.load_tokenizer(models_dir() / "base-lm")
    assert lm.encode_blocks([], tokenizer, 32).shape == (0, 32)


def test_empty_train_file_fails_before_the_run_writes_anything(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = tmp_path / "run"
    cfg = lm.preset("tiny", base_model=str(models_dir() / "base-lm"), train_file=str(empty))
    with pytest.raises(UserInputError) as exc:
        lm.run_lm(cfg, out, progress=False)
    _one_line(exc, str(empty), "no text to make 32-token blocks")
    assert list(out.iterdir()) == []  # nothing that would block the corrected rerun


# --------------------------------------------------------------------------- the human pool


@pytest.mark.parametrize("line, why", [("[1, 2]", "not a JSON object"), ('{"text": "a"', "not JSON"),
                                       ('{"text": 3}', "not a string")])
def test_bad_pool_line_names_file_and_line(tmp_path, monkeypatch, line, why):
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "web.jsonl").write_text('{"text": "fine"}\n\n' + line + "\n")
    monkeypatch.setenv("COLLAPSE_HYGIENE_DATA", str(tmp_path))
    with pytest.raises(UserInputError) as exc:
        list(iter_documents(sources=["web"]))
    _one_line(exc, "web.jsonl, line 3", why)


# --------------------------------------------------------------------------- corpus splits


@pytest.mark.parametrize("fractions", [(float("nan"), 0.5, 0.5), (float("inf"), 0.1, 0.1), (1e308, 1e308, 1e308),
                                       (0.5, 0.5), (0.0, 0.0, 0.0), (-0.1, 0.6, 0.5)])
def test_fractions_that_make_no_split_are_refused(tmp_path, fractions):
    with pytest.raises(UserInputError, match="split fractions"):
        split_of_source("a:0", fractions)
    with pytest.raises(UserInputError, match="split fractions"):
        split_corpus(tmp_path, fractions)  # refused before the corpus is read


def test_no_text_is_in_two_splits_and_unique_texts_keep_their_sources_split():
    from collapse_sim.corpus import split_rows

    sources = [f"s{i}" for i in range(300)]
    by_source = {s: split_of_source(s) for s in sources}
    test_source = next(s for s in sources if by_source[s] == "test")
    train_source = next(s for s in sources if by_source[s] == "train")
    texts = [f"text {i}" for i in range(300)]
    texts[sources.index(test_source)] = texts[sources.index(train_source)] = ", , , ,"  # one degenerate output
    split = split_rows(sources, texts)
    assert split[sources.index(test_source)] == split[sources.index(train_source)] == "train"
    assert all(split[i] == by_source[s] for i, s in enumerate(sources) if texts[i] != ", , , ,")
    assert {s for s in split} == {"train", "validation", "test"}


# --------------------------------------------------------------------------- what a researcher gives by mistake


def test_a_train_file_that_is_not_utf8_text_is_named(tmp_path):
    from collapse_sim.lm.data import read_blocks

    tokenizer = SimpleNamespace()  # never reached: the file is refused first
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 50)
    with pytest.raises(UserInputError) as exc:
        read_blocks(tmp_path / "latin1.txt", tokenizer, 32)
    _one_line(exc, str(tmp_path / "latin1.txt"), "not UTF-8 text (byte 0xe9 at offset 3)")
    (tmp_path / "nul.txt").write_bytes(bytes(range(128)) * 50)
    with pytest.raises(UserInputError) as exc:
        read_blocks(tmp_path / "nul.txt", tokenizer, 32)
    _one_line(exc, str(tmp_path / "nul.txt"), "NUL bytes")


@pytest.mark.parametrize("fraction, message", [(0.0, r"in \(0, 1\)"), (0.004, "holds no machine-written document")])
def test_a_crawl_without_machine_text_is_refused(fraction, message):
    with pytest.raises(ValueError, match=message):
        polluted.PollutedConfig(synthetic_fraction=fraction, crawl_docs=24)


@pytest.mark.parametrize("base", ["/nowhere/model", "./missing-model", "a/b/c"])
def test_a_missing_base_model_path_is_named(base):
    with pytest.raises(UserInputError, match=f"^no model at {base}: "):
        lm.base_model_path(lm.preset("tiny", base_model=base), progress=False)
    assert lm.base_model_path(lm.preset("tiny", base_model="org/model"), progress=False) == "org/model"  # a Hub id


def test_images_for_a_built_in_dataset_are_refused():
    with pytest.raises(ValueError, match="images and labels files are for the mnist dataset"):
        vae_collapse.config_for("digits", images="t10k-images.idx3-ubyte")


def test_a_recipe_that_is_not_utf8_or_holds_a_bad_section_is_named(tmp_path):
    from hygiene.recipe import load_recipe

    (tmp_path / "bad.yaml").write_bytes(b"seed: 0\nnote: caf\xe9\n")
    with pytest.raises(UserInputError, match=r"bad.yaml: not UTF-8 text \(byte 0xe9"):
        load_recipe(tmp_path / "bad.yaml")
    (tmp_path / "section.yaml").write_text("machine_lm: 3\n")
    with pytest.raises(UserInputError, match=r"section.yaml: machine_lm must be a mapping$"):
        load_recipe(tmp_path / "section.yaml")


def test_a_damaged_corpus_is_named(tmp_path):
    from collapse_sim.corpus import CorpusRow, load_corpus, write_corpus

    write_corpus([CorpusRow(text="a", generation=0, label="human", generator="human", decoding="", mode="", seed=0,
                            prompt="", source_id="f:0")], tmp_path / "corpus")
    (tmp_path / "corpus" / "hf" / "state.json").write_text("{not json")
    with pytest.raises(UserInputError) as exc:
        load_corpus(tmp_path / "corpus")
    _one_line(exc, "hf", "--rebuild")
