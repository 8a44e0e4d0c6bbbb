"""Zero-shot features against direct, unbatched computations from their definitions."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hygiene.lm import wrap_lm
from hygiene.scoring import LM_FEATURES, TOKEN_STATS, ScoringConfig, Scorer, score_texts
from tiny_lm import tiny_gpt2, tiny_lms, tiny_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog, again and again.",
    "Collapse: the tails go first.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "zq xv kj",
    "A model trained on its own samples forgets the tails of the distribution it came from.",
    "ok",
    "Human text is varied.",
]


@pytest.fixture(scope="module")
def models():
    return tiny_lms(3, seed=11)


def _logp(lm, ids: list[int]) -> np.ndarray:
    """Unpadded, unbatched next-token log-probabilities, shape (len-1, vocab), float64."""
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0, :-1].double()
    return torch.log_softmax(logits, -1).numpy()


def test_features_match_direct_computation(models):
    lm = models[0]
    feats = score_texts(TEXTS, lm)
    assert set(feats) == set(LM_FEATURES)
    for i, ids in enumerate(lm.tokenizer(TEXTS)["input_ids"]):
        lp = _logp(lm, ids)
        y = np.array(ids[1:])
        tok = lp[np.arange(len(y)), y]
        # rank: 1 + number of vocabulary entries strictly more likely than the observed token
        rank = np.array([1 + np.sum(lp[t] > lp[t, y[t]]) for t in range(len(y))])
        p = np.exp(lp)
        ent = -(p * lp).sum(-1)
        mu = (p * lp).sum(-1)
        var = (p * lp**2).sum(-1) - mu**2
        expected = {
            "length": len(ids),
            "ll": tok.mean(),
            "logrank": np.log(rank).mean(),
            "entropy": ent.mean(),
            "lrr": -tok.mean() / np.log(rank).mean(),
            "top10": np.mean(rank <= 10),
            "top100": np.mean(rank <= 100),
            "top1000": np.mean(rank <= 1000),
            "fast_detectgpt": (tok.sum() - mu.sum()) / np.sqrt(var.sum()),
        }
        for name, value in expected.items():
            assert feats[name][i] == pytest.approx(value, rel=1e-4, abs=1e-5), (name, i)


def test_token_stats_and_hidden_states_match_direct_computation(models):
    """Spread and quantiles of the per-token scores, and mean-pooled hidden states, from unbatched numpy."""
    lm, sampler = models[0], models[1]
    feats = score_texts(TEXTS, lm, sampler=sampler, config=ScoringConfig(token_stats=True, hidden_layers=(0.5, 1.0)))
    depth, width = lm.model.config.num_hidden_layers, lm.model.config.hidden_size
    layers = sorted({round(0.5 * depth), depth})
    assert set(feats) == set(LM_FEATURES) | set(TOKEN_STATS) | {f"hidden{l}_{i}" for l in layers for i in range(width)}
    for i, ids in enumerate(lm.tokenizer(TEXTS)["input_ids"]):
        if len(ids) < 2:
            assert np.isnan(feats["ll_std"][i]) and np.isnan(feats[f"hidden{depth}_0"][i])
            continue
        lp, lq = _logp(lm, ids), _logp(sampler, ids)
        y = np.array(ids[1:])
        tok = lp[np.arange(len(y)), y]
        rank = np.array([1 + np.sum(lp[t] > lp[t, y[t]]) for t in range(len(y))])
        ent = -(np.exp(lp) * lp).sum(-1)
        mu = (np.exp(lq) * lp).sum(-1)  # mean and variance of log p under the sampling model q
        var = (np.exp(lq) * lp**2).sum(-1) - mu**2
        z = (tok - mu) / np.sqrt(var)
        expected = {
            "ll_std": tok.std(), "logrank_std": np.log(rank).std(), "entropy_std": ent.std(),
            "top1": np.mean(rank == 1), "ll_q10": np.quantile(tok, 0.1), "ll_q50": np.median(tok),
            "ll_q90": np.quantile(tok, 0.9), "fdg_mean": z.mean(), "fdg_std": z.std(),
            "fdg_q10": np.quantile(z, 0.1), "fdg_q90": np.quantile(z, 0.9),
        }
        for name, value in expected.items():
            assert feats[name][i] == pytest.approx(value, rel=1e-4, abs=1e-5), (name, i)
        with torch.no_grad():
            hidden = lm.model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        for layer in layers:
            got = np.array([feats[f"hidden{layer}_{k}"][i] for k in range(width)])
            np.testing.assert_allclose(got, hidden[layer][0].double().mean(0).numpy(), rtol=1e-4, atol=1e-5)


def test_hidden_layers_are_relative_depths():
    with pytest.raises(ValueError, match="relative depths"):
        ScoringConfig(hidden_layers=(2,))


def test_fast_detectgpt_analytic_equals_monte_carlo(models):
    """Bao et al.'s analytic curvature vs its estimate from conditional samples x~_t ~ q(.|x_<t)."""
    scorer_lm, sampler_lm = models[0], models[1]
    text = TEXTS[2]
    analytic = score_texts([text], scorer_lm, sampler=sampler_lm)["fast_detectgpt"][0]
    ids = scorer_lm.tokenizer([text])["input_ids"][0]
    lp_score, lp_sample = _logp(scorer_lm, ids), _logp(sampler_lm, ids)
    rng = np.random.default_rng(0)
    n = 40_000
    # one independent draw per position from the sampling model, scored by the scoring model
    cdf = np.exp(lp_sample).cumsum(-1)
    u = rng.random((len(cdf), n)) * cdf[:, -1:]
    draws = np.stack([np.searchsorted(c, ut) for c, ut in zip(cdf, u)], axis=1)  # (n, positions)
    sample_ll = lp_score[np.arange(len(lp_score)), draws].sum(-1)
    observed = lp_score[np.arange(len(lp_score)), ids[1:]].sum()
    mc = (observed - sample_ll.mean()) / sample_ll.std()
    assert analytic == pytest.approx(mc, abs=0.03)
    # and the sampler matters: the single-model value is different
    assert abs(score_texts([text], scorer_lm)["fast_detectgpt"][0] - analytic) > 0.1


@pytest.mark.parametrize("roles", [(1, 2), (0, 2), (2, 0)], ids=["separate", "observer=scorer", "performer=scorer"])
def test_binoculars_matches_definition(models, roles):
    observer, performer = models[roles[0]], models[roles[1]]
    feats = score_texts(TEXTS, models[0], observer=observer, performer=performer)
    for i, ids in enumerate(models[0].tokenizer(TEXTS)["input_ids"]):
        if len(ids) < 2:
            assert np.isnan(feats["binoculars"][i])
            continue
        lp_perf, lp_obs = _logp(performer, ids), _logp(observer, ids)
        log_ppl = -lp_perf[np.arange(len(ids) - 1), ids[1:]].mean()
        log_xppl = -(np.exp(lp_obs) * lp_perf).sum(-1).mean()
        assert feats["binoculars"][i] == pytest.approx(log_ppl / log_xppl, rel=1e-5)


@pytest.mark.parametrize(
    "config",
    [
        ScoringConfig(batch_size=1),
        ScoringConfig(batch_size=3, padding_side="left"),
        ScoringConfig(batch_size=7, padding_side="right"),
        ScoringConfig(batch_size=32, max_batch_tokens=40, padding_side="left"),
    ],
)
def test_batch_size_and_padding_side_do_not_change_scores(models, config):
    extra = dict(token_stats=True, hidden_layers=(0.5, 1.0), body_from=3)
    ref = score_texts(TEXTS, models[0], observer=models[1], performer=models[2],
                      config=ScoringConfig(batch_size=1, **extra))
    got = score_texts(TEXTS, models[0], observer=models[1], performer=models[2],
                      config=dataclasses.replace(config, **extra))
    assert len(ref) > len(LM_FEATURES) + len(TOKEN_STATS) + 1
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("roles", [dict(observer=0, performer=2, contrast=2), dict(sampler=1, observer=1, performer=0),
                                   dict(contrast=1)], ids=["detector", "sampler+binoculars", "contrast"])
def test_statistics_chunk_changes_no_score(models, roles):
    """The vocabulary-wide statistics run over a few scored positions at a time; each position is
    computed whole, so every chunk size gives the same scores, to the bit."""
    config = ScoringConfig(token_stats=True, hidden_layers=(1.0,), body_from=3, batch_size=3)
    results = []
    for chunk in (None, 1, 5, 10_000):
        scorer = Scorer(models[0], config=config, **{role: models[i] for role, i in roles.items()})
        scorer.stats_chunk = chunk
        results.append(scorer.score(TEXTS))
    for got in results[1:]:
        for name in results[0]:
            np.testing.assert_array_equal(got[name], results[0][name], err_msg=name)


def test_body_scores_are_the_scores_of_the_tokens_after_the_opening(models):
    """``body_<name>`` is ``<name>`` over the tokens at position ``body_from`` and later, in their full context."""
    lm, contrast = models[0], models[2]
    k = 4
    config = ScoringConfig(token_stats=True, body_from=k, padding_side="left", batch_size=3)
    feats = score_texts(TEXTS, lm, observer=lm, performer=contrast, contrast=contrast, config=config)
    assert {f"body_{n}" for n in feats if not n.startswith(("body_", "length"))} <= set(feats)
    for i, ids in enumerate(lm.tokenizer(TEXTS)["input_ids"]):
        if len(ids) <= k:  # no body
            assert np.isnan(feats["body_ll"][i]) and np.isnan(feats["body_llr"][i])
            continue
        lp, lc = _logp(lm, ids), _logp(contrast, ids)
        y = np.array(ids[1:])
        at = np.arange(len(y))
        tok, ctok = lp[at, y], lc[at, y]
        body = slice(k - 1, None)  # row t of the log-probabilities predicts token t + 1
        rank = np.array([1 + np.sum(lp[t] > lp[t, y[t]]) for t in range(len(y))])
        xent = -(np.exp(lp) * lc).sum(-1)
        expected = {"body_ll": tok[body].mean(), "body_logrank": np.log(rank[body]).mean(),
                    "body_ll_q50": np.median(tok[body]), "body_llr": (ctok - tok)[body].mean(),
                    "body_binoculars": -ctok[body].mean() / xent[body].mean()}
        for name, value in expected.items():
            assert feats[name][i] == pytest.approx(value, rel=1e-4, abs=1e-5), (name, i)
        # the opening's tokens matter to the full-text score, not to the body's
        assert feats["ll"][i] == pytest.approx(tok.mean(), rel=1e-4, abs=1e-5)


def test_short_texts_are_nan_and_long_ones_truncated(models):
    feats = score_texts(["", "o", TEXTS[4] * 20], models[0], config=ScoringConfig(max_tokens=16))
    assert np.isnan(feats["ll"][:2]).all() and np.isfinite(feats["ll"][2])
    assert feats["length"][2] == 16
    # the model's own position table (64 here) also caps the budget
    assert Scorer(models[0], config=ScoringConfig(max_tokens=10_000)).max_tokens == 64


def test_invisible_characters_do_not_change_scores(models):
    clean = "Model collapse erases the tails."
    hidden = "Model\u200b collapse\u200d erases\ufeff the tails."
    feats = score_texts([clean, hidden, "Ｍodel collapse erases the tails."], models[0])
    assert feats["ll"][0] == feats["ll"][1] == feats["ll"][2]


def test_models_must_share_a_tokenizer(models):
    other = wrap_lm(tiny_gpt2(tiny_tokenizer(vocab_size=300), seed=5), tiny_tokenizer(vocab_size=300))
    with pytest.raises(ValueError, match="share a tokenizer"):
        Scorer(models[0], sampler=other)
    with pytest.raises(ValueError, match="observer and a performer"):
        Scorer(models[0], observer=models[1])


def test_contrast_features_match_direct_computation(models):
    """The per-token log-likelihood ratio of a contrast model against the scoring model, from unbatched numpy."""
    from hygiene.scoring import CONTRAST_FEATURES

    lm, contrast = models[0], models[2]
    feats = score_texts(TEXTS, lm, contrast=contrast)
    assert set(feats) == set(LM_FEATURES) | set(CONTRAST_FEATURES)
    for i, ids in enumerate(lm.tokenizer(TEXTS)["input_ids"]):
        if len(ids) < 2:
            assert np.isnan(feats["llr"][i])
            continue
        lp, lc = _logp(lm, ids), _logp(contrast, ids)
        y = np.array(ids[1:])
        llr = lc[np.arange(len(y)), y] - lp[np.arange(len(y)), y]
        expected = {"llr": llr.mean(), "llr_std": llr.std(), "llr_q10": np.quantile(llr, 0.1),
                    "llr_q50": np.median(llr), "llr_q90": np.quantile(llr, 0.9),
                    "contrast_ll": lc[np.arange(len(y)), y].mean(),
                    "contrast_entropy": -(np.exp(lc) * lc).sum(-1).mean()}
        for name, value in expected.items():
            assert feats[name][i] == pytest.approx(value, rel=1e-4, abs=1e-5), (name, i)
    # a model against itself: no evidence either way
    assert np.nanmax(np.abs(score_texts(TEXTS, lm, contrast=lm)["llr"])) < 1e-5


def test_no_vocabulary_sized_tensor_leaves_the_device(models, monkeypatch):
    """Only per-token scalars are reduced to per-text values on the device; nothing (batch, position, vocab)
    is copied to the host. Instrumented on CPU: every host copy or numpy conversion the scorer makes is recorded."""
    lm, sampler, other = models
    vocab = lm.model.config.vocab_size
    seen: list[tuple[int, ...]] = []
    real_cpu, real_numpy, real_to = torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.to

    def cpu(self, *a, **k):
        seen.append(tuple(self.shape))
        return real_cpu(self, *a, **k)

    def numpy(self, *a, **k):
        seen.append(tuple(self.shape))
        return real_numpy(self, *a, **k)

    def to(self, *a, **k):
        if any(isinstance(x, str) and x.startswith("cpu") for x in (*a, k.get("device"))):
            seen.append(tuple(self.shape))
        return real_to(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "cpu", cpu)
    monkeypatch.setattr(torch.Tensor, "numpy", numpy)
    monkeypatch.setattr(torch.Tensor, "to", to)
    score_texts(TEXTS, lm, sampler=sampler, observer=lm, performer=other, contrast=other,
                config=ScoringConfig(token_stats=True, hidden_layers=(1.0,)))
    assert seen, "the instrumentation saw no transfer"
    assert all(vocab not in shape and len(shape) <= 2 for shape in seen), seen


def test_fused_gelu_is_the_same_function_in_one_kernel():
    """wrap_lm swaps GPT-2's five-operation gelu_new for torch's fused tanh GELU: same logits to float rounding."""
    from transformers.activations import NewGELUActivation

    tok = tiny_tokenizer(vocab_size=300)
    plain, fused = tiny_gpt2(tok, seed=3).eval(), wrap_lm(tiny_gpt2(tok, seed=3), tok).model
    assert any(isinstance(m, NewGELUActivation) for m in plain.modules())
    assert not any(isinstance(m, NewGELUActivation) for m in fused.modules())
    assert sum(isinstance(m, torch.nn.GELU) and m.approximate == "tanh" for m in fused.modules()) == 2  # one per block
    ids = torch.randint(0, 300, (4, 40), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = plain(ids).logits, fused(ids).logits
    assert torch.allclose(a, b, rtol=0, atol=1e-4 * a.abs().max().item())



def test_autocast_runs_the_forward_pass_in_bfloat16(models):
    lm = models[0]
    seen: list[torch.dtype] = []
    hook = lm.model.lm_head.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    try:
        ref = score_texts(TEXTS, lm)["ll"]
        assert set(seen) == {torch.float32}
        seen.clear()
        got = score_texts(TEXTS, dataclasses.replace(lm, autocast=torch.bfloat16))["ll"]
        assert set(seen) == {torch.bfloat16}
    finally:
        hook.remove()
    ok = ~np.isnan(ref)
    assert np.array_equal(np.isnan(got), ~ok)
    assert not np.array_equal(got[ok], ref[ok])  # bfloat16 products round differently ...
    np.testing.assert_allclose(got[ok], ref[ok], atol=0.05)  # ... by a few hundredths of a nat at most


def test_no_texts_score_to_empty_columns_and_a_text_that_is_not_a_string_is_named() -> None:
    (lm,) = tiny_lms(1, seed=0)
    out = score_texts([], lm)
    assert out and all(len(v) == 0 for v in out.values())
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType, not a string"):
        score_texts(["a b c d", None], lm)
