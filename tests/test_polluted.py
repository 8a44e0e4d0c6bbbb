"""Polluted crawls on a tiny model: the three chains end to end, the oracle and keep-all detectors, resampling."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from collapse_sim import lm, polluted
from collapse_sim import pretrain as pretraining
from collapse_sim.cli import main as cli
from collapse_sim.generation import Decoding
from hygiene.config import ExactDedupConfig, FilterConfig, NearDedupConfig, QualityConfig


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class LabelDetector:
    """Right by construction: P(machine) = 0 for a text of the human crawl pool, 1 for anything else."""

    threshold_ = 0.5

    def __init__(self, human_texts: set[str]) -> None:
        self.human = human_texts

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        p = np.array([0.0 if t in self.human else 1.0 for t in texts])
        return np.column_stack([1 - p, p])


class KeepAll:
    """Flags nothing."""

    threshold_ = 0.5

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return np.tile([1.0, 0.0], (len(texts), 1))


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, shared_data) -> Path:
    """A randomly initialised 2-layer GPT-2 with a 256-token BPE trained on WikiText-2 valid."""
    text = (shared_data / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")
    tok = pretraining.train_tokenizer([text[:300_000]], 256)
    model = pretraining.build_model(pretraining.preset("tiny"), tok)
    out = tmp_path_factory.mktemp("base")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


DETECTOR_ONLY = FilterConfig(exact_dedup=ExactDedupConfig(enabled=False), quality=QualityConfig(enabled=False),
                             near_dedup=NearDedupConfig(enabled=False))


@pytest.fixture(scope="module")
def cfg(tiny_base) -> polluted.PollutedConfig:
    small = lm.preset("tiny", base_model=str(tiny_base), max_train_blocks=48, max_val_blocks=16, max_eval_blocks=32,
                      decoding=Decoding("sample"))
    return polluted.preset("tiny", generations=3, crawl_docs=16, epochs=2.0, lm=small, filter=DETECTOR_ONLY)


@pytest.fixture(scope="module")
def crawl_data(cfg) -> tuple[polluted.CrawlData, object]:
    tok = lm.load_tokenizer(cfg.lm.base_model)
    return polluted.load_crawl_data(cfg, tok), tok


@pytest.fixture(scope="module")
def oracle_detector(crawl_data) -> LabelDetector:
    data, tok = crawl_data
    return LabelDetector(set(tok.batch_decode(data.pool.tolist())))


def _series(result, chain: str, name: str) -> list[float]:
    return result.metrics[f"{chain}/{name}"]["mean"]


@pytest.mark.slow
def test_oracle_detector_makes_filtered_equal_oracle(cfg, oracle_detector, tmp_path):
    result = polluted.run_polluted(cfg, tmp_path, detector=oracle_detector, progress=False)
    for name in ("eval_perplexity", "ppl_q50", "train_docs", "train_blocks"):
        assert _series(result, "filtered", name) == _series(result, "oracle", name), name
    # the unfiltered chain trains on the whole crawl, so it does differ
    assert _series(result, "unfiltered", "train_docs")[1:] == [16.0, 16.0]
    assert _series(result, "oracle", "train_docs")[1:] == [8.0, 8.0]
    assert _series(result, "unfiltered", "eval_perplexity")[1:] != _series(result, "oracle", "eval_perplexity")[1:]
    assert _series(result, "filtered", "detector_recall")[1:] == [1.0, 1.0]
    assert _series(result, "filtered", "human_kept")[1:] == [1.0, 1.0]
    assert result.summary["collapse_gap_ppl"] != 0  # the unfiltered chain drifted from the oracle one
    assert result.summary["gap_closed"] == 1.0  # and the filtered chain, being the oracle one, closed all of it
    # every chain starts from the one generation-0 model
    assert len({_series(result, c, "eval_perplexity")[0] for c in polluted.CHAINS}) == 1
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["experiment"] == "polluted" and saved["generations"] == [0, 1, 2]
    assert set(saved["metrics"]["oracle/eval_perplexity"]) == {"mean", "median", "p10", "p90"}
    for name in ("perplexity.png", "report.md", "run.json", "run-00/filtered/gen-02/crawl.jsonl"):
        assert (tmp_path / name).is_file(), name
    crawl = [json.loads(line) for line in (tmp_path / "run-00/filtered/gen-01/crawl.jsonl").open()]
    assert sum(r["label"] == "synthetic" for r in crawl) == 8
    assert all((r["stage"] == "synthetic") == (r["label"] == "synthetic") for r in crawl)
    assert all(r["times_trained"] == (r["label"] == "human") for r in crawl)

    # resume: a finished run is loaded, not redone; a different configuration is refused
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("run-00/*/gen-0*/gen.json")}
    polluted.run_polluted(cfg, tmp_path, detector=oracle_detector, progress=False)
    assert json.loads((tmp_path / "metrics.json").read_text()) == saved
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    with pytest.raises(ValueError, match="different configuration"):
        polluted.run_polluted(dataclasses.replace(cfg, synthetic_fraction=0.25), tmp_path, detector=oracle_detector,
                              progress=False)
    record = json.loads((tmp_path / "run.json").read_text())  # the same files holding other text since
    (tmp_path / "run.json").write_text(json.dumps({**record, "data_sha256": "0" * 64}))
    with pytest.raises(ValueError, match="other human text"):
        polluted.run_polluted(cfg, tmp_path, detector=oracle_detector, progress=False)


@pytest.mark.slow
def test_keep_all_detector_makes_filtered_equal_unfiltered(cfg, tmp_path):
    result = polluted.run_polluted(dataclasses.replace(cfg, generations=2), tmp_path, detector=KeepAll(),
                                   progress=False)
    for name in ("eval_perplexity", "ppl_q50", "share_above_human_p95", "train_docs"):
        assert _series(result, "filtered", name) == _series(result, "unfiltered", name), name
    assert _series(result, "filtered", "detector_recall")[1] == 0.0
    assert _series(result, "filtered", "train_synthetic_share")[1] == 0.5


@pytest.mark.slow
def test_resample_with_oracle_detector_trains_on_human_documents_only(cfg, oracle_detector, tmp_path):
    dedup_and_detector = FilterConfig(quality=QualityConfig(enabled=False))  # Gopher needs longer documents
    full = dataclasses.replace(cfg, generations=2, runs=2, policy="resample", beta=2.0, filter=dedup_and_detector)
    for r in (1, 0):  # runs computed apart (as parallel processes would), then collected
        assert polluted.run_polluted(full, tmp_path, detector=oracle_detector, progress=False, only_run=r) is None
    assert not (tmp_path / "metrics.json").exists()
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("run-0*/*/gen-01/gen.json")}
    result = polluted.run_polluted(full, tmp_path, detector=oracle_detector, progress=False)
    assert len(stamps) == 6 and all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert _series(result, "filtered", "train_synthetic_share")[1] == 0.0
    # resampling draws as many documents as survive dedup and quality: every human one at most
    assert _series(result, "filtered", "train_docs")[1] <= 16
    assert 0 < _series(result, "filtered", "human_kept")[1] <= 1
    assert len(result.summary["gap_closed_per_run"]) == 2
    runs = [json.loads((tmp_path / f"run-0{r}/unfiltered/gen-01/gen.json").read_text())["eval_perplexity"]
            for r in range(2)]
    assert runs[0] != runs[1]  # each run its own seed


def test_resample_weights_follow_the_detector():
    p = np.array([0.0, 0.5, 0.9, 1.0])
    assert np.allclose(polluted.resample_weights(p, 0.0), 0.25)
    w = polluted.resample_weights(p, 2.0)
    assert np.allclose(w, np.array([1.0, 0.25, 0.01, 0.0]) / 1.26)
    draws = np.random.default_rng(0).choice(4, size=200_000, p=w)
    freq = np.bincount(draws, minlength=4) / len(draws)
    assert np.allclose(freq, w, atol=4 * np.sqrt(w * (1 - w) / len(draws)) + 1e-12)  # within 4 standard errors
    assert np.allclose(polluted.resample_weights(np.ones(3), 1.0), 1 / 3)  # nothing human-looking: uniform


def test_crawl_draw_is_seeded_and_disjoint(cfg):
    a = polluted.crawl_draw(cfg, 100, 7, 1)
    assert all(np.array_equal(a[k], polluted.crawl_draw(cfg, 100, 7, 1)[k]) for k in a)
    assert not np.array_equal(a["human"], polluted.crawl_draw(cfg, 100, 7, 2)["human"])
    assert len(set(a["human"].tolist())) == cfg.n_human and sorted(a["order"].tolist()) == list(range(16))


def test_every_training_set_gets_the_same_optimiser_steps(cfg):
    """The chains' training sets differ in size (the filter keeps some); each fine-tune must take the same steps,
    or a chain that kept a few more documents trains longer than the oracle."""
    from collapse_sim.training import train_lm
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=16, n_positions=8, n_embd=8, n_layer=1, n_head=1))
    blocks = torch.randint(0, 16, (3 * cfg.lm.train.batch_size + 5, 8), generator=torch.Generator().manual_seed(0))
    batch = cfg.lm.train.batch_size
    sizes = []
    hook = model.register_forward_pre_hook(lambda _, args, kwargs: sizes.append(len(kwargs["input_ids"])),
                                           with_kwargs=True)
    for n in (batch, batch + 1, 2 * batch - 1, 3 * batch + 5):
        sizes.clear()
        info = train_lm(model, blocks[:n], dataclasses.replace(cfg.train_config(n, 0), device="cpu"), progress=False,
                        full_batches=cfg.full_batches)
        assert info["steps"] == cfg.steps, n
        # and every step a full batch: a short one (2 blocks of 130) is a noisy step that a chain of 128 never takes
        assert cfg.full_batches and sizes == [batch] * cfg.steps, n
    old = dataclasses.replace(cfg, full_batches=False)  # as runs were made before: same steps, short batches
    sizes.clear()
    assert train_lm(model, blocks[:batch + 1], dataclasses.replace(old.train_config(batch + 1, 0), device="cpu"),
                    progress=False)["steps"] == cfg.steps
    assert min(sizes) == 1
    hook.remove()


def test_batch_indices_cover_every_row_alike_and_keep_the_old_batches_where_they_were_full():
    from collapse_sim.training import batch_indices

    def take(n, size, full, k):
        stream = batch_indices(n, size, torch.Generator().manual_seed(3), full)
        return [next(stream) for _ in range(k)]

    for n, size in ((10, 4), (3, 4), (12, 4)):
        full = take(n, size, True, 30)
        assert all(len(b) == size for b in full)
        counts = np.bincount(torch.cat(full).numpy(), minlength=n)
        assert counts.max() - counts.min() <= 1 + size // n, (n, size)  # every row as often as any other
    short = take(10, 4, False, 3)
    assert [len(b) for b in short] == [4, 4, 2]  # the default: an epoch's last batch is short
    assert all(torch.equal(a, b) for a, b in zip(take(12, 4, False, 9), take(12, 4, True, 9)))


def test_split_keeps_generation_0_and_crawl_pool_apart(cfg, crawl_data):
    data, _ = crawl_data
    gen0 = {tuple(b) for b in data.gen0.tolist()}
    pool_blocks = {tuple(b) for b in data.pool.reshape(-1, cfg.lm.block).tolist()}
    val = {tuple(b) for b in data.val.tolist()}
    assert not gen0 & pool_blocks and not val & pool_blocks and not val & gen0
    assert data.eval_next.shape == (len(data.eval), cfg.doc_tokens)


def test_bad_input_is_one_line(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["polluted", "--out", str(tmp_path), "--synthetic-fraction", "1.5"])
    assert res.exit_code == 2 and "synthetic-fraction" in res.output
    res = runner.invoke(cli, ["polluted", "--out", str(tmp_path), "--preset", "tiny", "--detector",
                              str(tmp_path / "missing")])
    assert res.exit_code == 1 and "no synthetic-text detector" in res.output and "Traceback" not in res.output
    with pytest.raises(ValueError, match="policy"):
        polluted.PollutedConfig(policy="keep")


@pytest.mark.slow
def test_decoding_options_reach_the_run(tmp_path, tiny_base):
    """--decoding/--temperature set how the chains write their synthetic documents (recorded in run.json)."""
    res = CliRunner().invoke(cli, ["polluted", "--out", str(tmp_path), "--preset", "tiny", "--base-model",
                                   str(tiny_base), "--generations", "1", "--runs", "1", "--crawl-docs", "8",
                                   "--decoding", "sample", "--temperature", "0.7", "--quiet"])
    assert res.exit_code == 0, res.output
    dec = json.loads((tmp_path / "run.json").read_text())["config"]["lm"]["decoding"]
    assert (dec["method"], dec["temperature"]) == ("sample", 0.7)
