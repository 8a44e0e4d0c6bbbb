"""Recursive LM training on a tiny model: generation, text metrics, the pipeline, resume, corpora."""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from transformers import GPT2Config, GPT2LMHeadModel

from collapse_sim import lm
from collapse_sim import pretrain as pretraining
from collapse_sim.cli import main as cli
from collapse_sim.corpus import load_corpus, split_corpus, split_of_source
from collapse_sim.generation import Decoding, generate_continuations
from collapse_sim.text_metrics import (
    distinct_n,
    perplexity_profile,
    repeated_ngram_share,
    sample_perplexities,
    unigram_kl,
    vocabulary_size,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (benchmarks/lm_throughput.py --preset tiny)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_gpt2(vocab: int = 97, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    conf = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0,
                      eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(conf).eval()


# --------------------------------------------------------------------------- generation


@pytest.mark.slow
@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_kv_cache_matches_no_cache_with_left_padding(method):
    model = _random_gpt2()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 97, (n,), generator=g).tolist() for n in (5, 9, 12, 3, 12)]
    dec = Decoding(method=method, num_beams=3, max_new_tokens=10)
    cached = generate_continuations(model, prompts, dec, pad_token_id=0, batch_size=5, progress=False)
    plain = generate_continuations(model, prompts, dec, pad_token_id=0, batch_size=5, use_cache=False,
                                   progress=False)
    assert cached.shape == (5, 10)
    assert torch.equal(cached, plain)
    # left padding changes nothing: each prompt alone gives the same continuation
    alone = generate_continuations(model, prompts[:1], dec, pad_token_id=0, progress=False)
    assert torch.equal(alone[0], cached[0])


def test_sampling_is_seeded_and_fixed_length():
    model = _random_gpt2()
    prompts = torch.randint(1, 97, (6, 8), generator=torch.Generator().manual_seed(2))
    dec = Decoding(method="sample", max_new_tokens=12)
    a = generate_continuations(model, prompts, dec, pad_token_id=0, seed=3, progress=False)
    b = generate_continuations(model, prompts, dec, pad_token_id=0, seed=3, progress=False)
    c = generate_continuations(model, prompts, dec, pad_token_id=0, seed=4, progress=False)
    assert a.shape == (6, 12) and torch.equal(a, b) and not torch.equal(a, c)


def test_bad_decoding_is_refused():
    with pytest.raises(ValueError, match="decoding"):
        Decoding(method="nucleus")


# --------------------------------------------------------------------------- text metrics


def test_token_metrics_on_known_sequences():
    loop = np.tile([1, 2, 3], (4, 4))  # (4, 12): "1 2 3" over and over
    fresh = np.arange(48).reshape(4, 12)
    assert distinct_n(fresh, 2) == 1.0
    assert distinct_n(loop, 1) == pytest.approx(3 / 48)
    assert vocabulary_size(loop) == 3
    assert repeated_ngram_share(loop, 4) == 1.0 and repeated_ngram_share(fresh, 4) == 0.0
    # a block repeating another block's n-gram is not a within-block repeat
    assert repeated_ngram_share(np.array([[1, 2, 3, 4, 5], [1, 2, 3, 4, 6]]), 4) == 0.0
    assert unigram_kl(fresh, fresh, 48) == pytest.approx(0.0, abs=1e-12)
    assert unigram_kl(loop, fresh, 48) > unigram_kl(fresh[:, :6], fresh, 48) > 0


def test_sample_perplexity_matches_masked_loss():
    model = _random_gpt2()
    g = torch.Generator().manual_seed(5)
    prompts, conts = torch.randint(1, 97, (3, 7), generator=g), torch.randint(1, 97, (3, 9), generator=g)
    ppl = sample_perplexities(model, prompts, conts, batch_size=2, progress=False)
    for i in range(3):
        ids = torch.cat([prompts[i], conts[i]])[None]
        labels = ids.clone()
        labels[:, :7] = -100
        with torch.no_grad():
            assert ppl[i] == pytest.approx(math.exp(model(input_ids=ids, labels=labels).loss.item()), rel=1e-4)


def test_perplexity_profile_tails():
    human = np.arange(1, 101, dtype=float)  # 5th / 95th percentiles: 5.95 / 95.05
    prof = perplexity_profile(np.array([1.0, 2.0, 50.0, 200.0]), human)
    assert prof["share_below_human_p05"] == 0.5 and prof["share_above_human_p95"] == 0.25
    assert prof["ppl_q50"] == pytest.approx(26.0)


# --------------------------------------------------------------------------- the simulation


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, shared_data) -> Path:
    """A randomly initialised 2-layer GPT-2 with a 256-token byte-level BPE trained on WikiText-2 valid."""
    text = (shared_data / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")
    tok = pretraining.train_tokenizer([text[:300_000]], 256)
    model = pretraining.build_model(pretraining.preset("tiny"), tok)
    out = tmp_path_factory.mktemp("base")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_base):
    """Two generations, then a third resumed from the first two (greedy, replace and mix)."""
    cfg = lm.preset(
        "tiny", base_model=str(tiny_base), generations=2, sampling_arm=False, max_train_blocks=128,
        max_eval_blocks=64, max_val_blocks=16, epochs={"replace": 3.0, "mix": 3.0, "accumulate": 3.0},
        decoding=Decoding("greedy", max_new_tokens=32),
    )
    out = tmp_path_factory.mktemp("lm-run")
    lm.run_lm(cfg, out, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/greedy/gen-0[01]/gen.json")}
    result = lm.run_lm(dataclasses.replace(cfg, generations=3), out, progress=False)
    return cfg, out, result, stamps


@pytest.mark.slow
def test_run_writes_results_and_resumes(run):
    cfg, out, result, stamps = run
    assert len(stamps) == 4  # two generations of two arms, finished before the resume
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # not redone
    for mode in ("replace", "mix"):
        assert (out / mode / "greedy" / "gen-02" / "gen.json").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["generations"] == [0, 1, 2]
    assert len(saved["metrics"]["replace/greedy/eval_perplexity"]["mean"]) == 3
    for name in ("report.md", "perplexity.png", "histograms-replace-greedy.png", "corpus/corpus.jsonl"):
        assert (out / name).is_file(), name
    # the next generation trains on what the previous one wrote, not on the prompts
    from safetensors.torch import load_file

    g0 = load_file(str(out / "replace/greedy/gen-00/data.safetensors"))
    g1 = load_file(str(out / "replace/greedy/gen-01/data.safetensors"))
    assert torch.equal(g1["train_blocks"], g0["continuations"])
    mixed = load_file(str(out / "mix/greedy/gen-01/data.safetensors"))["train_blocks"]
    human = {tuple(r) for r in g0["train_blocks"].tolist()}
    assert sum(tuple(r) in human for r in mixed.tolist()) == round(0.1 * len(mixed))


@pytest.mark.slow
def test_replace_degrades_more_than_mix(run):
    _, _, result, _ = run
    rep = np.array(result.metrics["replace/greedy/eval_perplexity"]["mean"])
    mix = np.array(result.metrics["mix/greedy/eval_perplexity"]["mean"])
    assert rep[2] > rep[0] * 1.1  # test perplexity rises over generations without original data
    assert mix[2] / mix[0] < rep[2] / rep[0]  # and rises less when 10% is kept


@pytest.mark.slow
def test_corpus_labels_generations_and_splits(run):
    cfg, out, _, _ = run
    ds = load_corpus(out / "corpus")
    rows = ds.to_list()
    human = [r for r in rows if r["label"] == "human"]
    synthetic = [r for r in rows if r["label"] == "synthetic"]
    assert len(human) == 128 and all(r["generation"] == 0 and r["prompt"] == "" for r in human)
    assert len(synthetic) == 2 * 3 * 128  # two arms, three generations, one continuation per block
    assert {r["generation"] for r in synthetic} == {1, 2, 3}
    by_source = {r["source_id"]: r["text"] for r in human}
    assert all(r["prompt"] == by_source[r["source_id"]] for r in synthetic)
    assert all(r["decoding"] == "greedy" and r["mode"] in ("replace", "mix") for r in synthetic)
    assert all("generation 2" in r["generator"] for r in synthetic if r["generation"] == 3)
    counts = split_corpus(out / "corpus")
    assert sum(counts.values()) == len(rows)
    by_text = {}
    for name in counts:
        for line in (out / "corpus" / f"{name}.jsonl").read_text().splitlines():
            row = json.loads(line)
            by_text.setdefault(row["text"], set()).add(name)
            if name != split_of_source(row["source_id"]):  # moved: its text is written for several sources
                assert len({r["source_id"] for r in rows if r["text"] == row["text"]}) > 1
    assert all(len(s) == 1 for s in by_text.values())  # no text in two splits


@pytest.mark.slow
def test_resume_reuses_a_saved_model_of_an_unfinished_generation(run):
    cfg, out, _, _ = run
    gdir = out / "replace" / "greedy" / "gen-02"
    before = json.loads((gdir / "gen.json").read_text())
    model_stamp = (gdir / "model" / "model.safetensors").stat().st_mtime_ns
    (gdir / "gen.json").unlink()  # interrupted after training, before its data was written
    result = lm.run_lm(dataclasses.replace(cfg, generations=3), out, progress=False)
    after = json.loads((gdir / "gen.json").read_text())
    assert (gdir / "model" / "model.safetensors").stat().st_mtime_ns == model_stamp  # not retrained
    assert after["eval_perplexity"] == pytest.approx(before["eval_perplexity"], rel=1e-6)
    assert after["distinct_2"] == before["distinct_2"]  # the same continuations again
    assert result.metrics["replace/greedy/eval_perplexity"]["mean"][2] == pytest.approx(before["eval_perplexity"])


@pytest.mark.slow
def test_corpus_command_and_bad_input(run, tmp_path):
    _, out, _, _ = run
    runner = CliRunner()
    res = runner.invoke(cli, ["corpus", str(out), "--split"])
    assert res.exit_code == 0, res.output
    assert "generation 0 (human): 128 rows" in res.output and "splits by source_id" in res.output
    res = runner.invoke(cli, ["corpus", str(tmp_path)])
    assert res.exit_code == 1 and "not an lm run directory" in res.output
    changed = runner.invoke(cli, ["lm", "--preset", "tiny", "--out", str(out), "--seed", "9", "--quiet"])
    assert changed.exit_code == 1 and "different configuration" in changed.output
    short = tmp_path / "short.txt"
    short.write_text("too short")
    res = runner.invoke(cli, ["lm", "--preset", "tiny", "--base-model", str(run[0].base_model), "--train-file",
                              str(short), "--out", str(tmp_path / "r"), "--quiet"])
    assert res.exit_code == 1 and "short.txt holds fewer than two" in res.output


def test_presets_find_the_shipped_bases():
    """The cpu and paper presets' bases ship (models/base-lm, models/reference-lm): no pre-training on first use."""
    from hygiene.paths import models_dir

    assert Path(lm.base_model_path(lm.preset("cpu"), progress=False)) == models_dir() / "base-lm"
    assert Path(lm.base_model_path(lm.preset("paper"), progress=False)) == models_dir() / "reference-lm"


@pytest.mark.slow
def test_a_damaged_generation_says_which_record_to_delete_and_a_shorter_rerun_trims_the_corpus(run, tmp_path):
    import shutil

    from hygiene.errors import UserInputError

    cfg, out, _, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    gdir = copy / "replace" / "greedy" / "gen-01"
    before = (gdir / "data.safetensors").read_bytes()
    (gdir / "data.safetensors").write_bytes(b"damaged")
    with pytest.raises(UserInputError, match=f"delete {re.escape(str(gdir / 'gen.json'))} to redo that generation"):
        lm.run_lm(dataclasses.replace(cfg, generations=3), copy, progress=False)
    (gdir / "gen.json").unlink()  # as the message says
    lm.run_lm(dataclasses.replace(cfg, generations=2), copy, progress=False)
    assert (gdir / "data.safetensors").read_bytes() == before  # redone, the same continuations
    assert {r["generation"] for r in load_corpus(copy / "corpus").to_list()} == {0, 1, 2}  # not gen-02's


@pytest.mark.slow
def test_a_resume_on_other_human_text_is_refused(run, tmp_path):
    """The saved generations were trained and measured on the text the run recorded (its tokens' SHA-256); the
    same file names holding other text since are refused, before anything is overwritten."""
    import shutil

    cfg, out, _, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    record = json.loads((copy / "run.json").read_text())
    assert len(record["data_sha256"]) == 64
    human = (copy / "human.safetensors").read_bytes()
    record["data_sha256"] = "0" * 64  # as if valid.txt had been rewritten since
    (copy / "run.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="holds a run on other human text than the training and evaluation files"):
        lm.run_lm(dataclasses.replace(cfg, generations=3), copy, progress=False)
    assert (copy / "human.safetensors").read_bytes() == human
