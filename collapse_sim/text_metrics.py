"""What recursive training does to text: diversity, drift from human text, and the
perplexity profile of generated samples under the first model.

Token-level measures take an ``(N, L)`` integer array of token ids (fixed-length
blocks, as the simulation writes them) and are vectorised over all blocks:

- ``distinct_n``: unique n-grams / all n-grams over the whole set (Li et al. 2016);
- ``vocabulary_size``: number of distinct tokens used;
- ``unigram_kl``: KL(generated || human) of the token unigram distributions;
- ``repeated_ngram_share``: share of n-grams that occur more than once *within their
  own block*, the loops a degenerate decoder writes.

``sample_perplexities`` scores each continuation given its prompt (the paper's
histograms: the perplexity of every generated sample under the generation-0 model),
and ``perplexity_profile`` summarises those as quantiles and as the share of samples
beyond the human data's 5th and 95th percentiles: collapse concentrates mass where the
first model is confident (low tail) and grows a tail of errors (high tail).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import rel_entr
from tqdm.auto import tqdm
from transformers import PreTrainedModel

#: perplexity quantiles reported per generation
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _ngrams(blocks: np.ndarray, n: int) -> np.ndarray:
    """All n-grams of every block as rows of an ``(N * (L - n + 1), n)`` array."""
    blocks = np.asarray(blocks)
    if blocks.ndim != 2 or blocks.shape[1] < n:
        raise ValueError(f"need an (N, L) array with L >= {n}, got shape {blocks.shape}")
    return np.lib.stride_tricks.sliding_window_view(blocks, n, axis=1).reshape(-1, n)


def distinct_n(blocks: np.ndarray, n: int) -> float:
    """Distinct-n: unique n-grams over total n-grams, pooled over all blocks."""
    grams = _ngrams(blocks, n)
    return float(len(np.unique(grams, axis=0)) / len(grams))


def vocabulary_size(blocks: np.ndarray) -> int:
    """How many distinct tokens the blocks use."""
    return int(len(np.unique(np.asarray(blocks))))


def unigram_kl(blocks: np.ndarray, reference: np.ndarray, vocab_size: int, alpha: float = 0.5) -> float:
    """KL(blocks || reference) in nats over token unigrams, both add-``alpha`` smoothed over the vocabulary.

    Smoothing keeps the divergence finite when one side never uses a token; 0.5 is
    the Jeffreys prior.
    """
    p = np.bincount(np.asarray(blocks).ravel(), minlength=vocab_size)[:vocab_size] + alpha
    q = np.bincount(np.asarray(reference).ravel(), minlength=vocab_size)[:vocab_size] + alpha
    return float(rel_entr(p / p.sum(), q / q.sum()).sum())


def repeated_ngram_share(blocks: np.ndarray, n: int = 4) -> float:
    """Share of n-grams that repeat an n-gram of the same block (0 for text without loops)."""
    blocks = np.asarray(blocks)
    per_block = blocks.shape[1] - n + 1
    grams = _ngrams(blocks, n)
    owner = np.repeat(np.arange(len(blocks)), per_block)[:, None]
    _, inverse, counts = np.unique(np.hstack([owner, grams]), axis=0, return_inverse=True, return_counts=True)
    return float((counts[inverse.ravel()] > 1).mean())


def token_metrics(blocks: np.ndarray, reference: np.ndarray, vocab_size: int) -> dict[str, float]:
    """Every token-level measure of ``blocks`` against the human ``reference`` blocks."""
    return {
        "distinct_1": distinct_n(blocks, 1),
        "distinct_2": distinct_n(blocks, 2),
        "distinct_3": distinct_n(blocks, 3),
        "vocabulary_size": float(vocabulary_size(blocks)),
        "unigram_kl": unigram_kl(blocks, reference, vocab_size),
        "repeated_4gram_share": repeated_ngram_share(blocks, 4),
    }


def sample_perplexities(
    model: PreTrainedModel,
    prompts: torch.Tensor,
    continuations: torch.Tensor,
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """Perplexity of each continuation given its prompt: ``exp`` of its mean token NLL, shape ``(N,)``.

    Prompts ``(N, P)`` and continuations ``(N, C)`` are concatenated; only the ``C``
    continuation tokens are scored.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    device = next(model.parameters()).device
    p = prompts.shape[1]
    out = np.empty(len(prompts), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(prompts), batch_size), desc="score", unit="batch", disable=not progress):
                ids = torch.cat([prompts[start : start + batch_size], continuations[start : start + batch_size]], 1)
                ids = ids.to(device)
                logits = model(input_ids=ids).logits[:, p - 1 : -1].float()
                nll = F.cross_entropy(logits.transpose(1, 2), ids[:, p:], reduction="none").mean(1)
                out[start : start + len(ids)] = torch.exp(nll).cpu().numpy()
    finally:
        model.train(was_training)
    return out


def perplexity_profile(ppl: np.ndarray, human_ppl: np.ndarray) -> dict[str, float]:
    """Quantiles of per-sample perplexities and the shares below/above the human 5th/95th percentiles."""
    ppl = np.asarray(ppl, dtype=float)
    lo, hi = np.percentile(np.asarray(human_ppl, dtype=float), [5, 95])
    out = {f"ppl_q{int(q * 100):02d}": float(v) for q, v in zip(QUANTILES, np.quantile(ppl, QUANTILES))}
    out["share_below_human_p05"] = float((ppl < lo).mean())
    out["share_above_human_p95"] = float((ppl > hi).mean())
    return out
