"""Zero-shot scores of texts under reference language models: the detector's features.

Per token (vectorised over scored positions x vocabulary, a cache-sized chunk of
positions at a time) we take the scoring model's log-probability of the observed token,
its rank and the entropy of the predicted distribution; per text we average them and derive:

- ``ll``: mean log-likelihood (Gehrmann et al. 2019; Solaiman et al. 2019);
- ``logrank``: mean log-rank (rank 1 = the model's top choice);
- ``entropy``: mean predictive entropy (nats);
- ``lrr``: log-likelihood / log-rank ratio, ``-ll / logrank`` (Su et al. 2023, DetectLLM);
- ``top10``/``top100``/``top1000``: GLTR shares of tokens ranked in the top k (Gehrmann et al. 2019);
- ``fast_detectgpt``: analytic sampling discrepancy (Bao et al. 2024, eq. 5):
  ``(sum_t log p(x_t) - sum_t mu_t) / sqrt(sum_t var_t)`` with ``mu_t``/``var_t`` the mean and
  variance of ``log p(x~_t)`` for ``x~_t`` drawn from the sampling model ``q`` at position t;
- ``binoculars``: ``log PPL / log X-PPL`` (Hans et al. 2024) when an observer and a performer are
  given. Roles follow the reference implementation: the perplexity is the performer's, the
  cross-perplexity is the performer's log-probabilities averaged under the observer's
  next-token distribution. Both are averaged over the same positions, the tokens that have a
  prefix (the paper's definition; the reference code's cross-perplexity also averages in the
  prediction made after the last token, which scores no token of the text);
- ``length``: number of tokens scored;
- with ``ScoringConfig.body_from``, every other score again over the body alone (``body_<name>``),
  the tokens from that position on;
- with a contrast model (a "machine" LM fine-tuned on machine text, sharing the tokenizer):
  ``llr``, the mean per-token log-likelihood ratio ``log p_contrast(x_t) - log p(x_t)`` (the
  Neyman-Pearson statistic between a human and a machine model of text), its spread and
  quantiles, and the contrast model's own mean log-likelihood and entropy (:data:`CONTRAST_FEATURES`).

With ``ScoringConfig.token_stats`` the spread and quantiles of the per-token scores as well
(:data:`TOKEN_STATS`): a text's mean can hide how evenly its tokens are predicted, which
sampled text and human text differ in ("burstiness"). With ``ScoringConfig.hidden_layers`` the
scoring model's hidden states at those relative depths, averaged over the text's tokens
(``hidden{layer}_{i}``): what the reference LM represents, for a classifier to probe, from
the same forward pass.

Texts are normalised with :func:`hygiene.normalize.normalize_text` and truncated to
``max_tokens``. Batches are sorted by length and capped by a token budget, padding is
masked (with position ids from the mask), so results do not depend on batch size or padding
side. The first token of a text has no prefix and is never scored.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from hygiene.errors import many_texts
from hygiene.lm import LanguageModel, check_shared_tokenizer
from hygiene.normalize import normalize_text

#: Features from one scoring model (plus a sampling model for Fast-DetectGPT).
#: the fewest tokens a text needs for a score (the first token is only context): shorter texts get NaN
MIN_TOKENS = 2
LM_FEATURES = ("length", "ll", "logrank", "entropy", "lrr", "top10", "top100", "top1000", "fast_detectgpt")
#: Sign that makes each zero-shot score larger for machine text: models sample from their own
#: high-probability, low-rank, low-entropy region; Binoculars is lower for machine text.
MACHINE_SIGN = {
    "length": 0,
    "ll": 1,
    "logrank": -1,
    "entropy": -1,
    "lrr": 1,
    "top10": 1,
    "top100": 1,
    "top1000": 1,
    "fast_detectgpt": 1,
    "binoculars": -1,
}
#: Per-token distribution statistics (``ScoringConfig.token_stats``): standard deviations over the
#: scored tokens, the share ranked first, quantiles of the token log-probability, and the mean, spread
#: and quantiles of the per-token Fast-DetectGPT discrepancy ``(log p(x_t) - mu_t) / sigma_t``.
TOKEN_STATS = ("ll_std", "logrank_std", "entropy_std", "top1", "ll_q10", "ll_q50", "ll_q90",
               "fdg_mean", "fdg_std", "fdg_q10", "fdg_q90")
#: With a contrast model: the per-token log-likelihood ratio against the scoring model, its spread and
#: quantiles, and the contrast model's mean log-likelihood and entropy.
CONTRAST_FEATURES = ("llr", "llr_std", "llr_q10", "llr_q50", "llr_q90", "contrast_ll", "contrast_entropy")
_QUANTILES = {"q10": 0.1, "q50": 0.5, "q90": 0.9}
_GLTR_K = (10, 100, 1000)
_EPS = 1e-6
#: logits are clamped here so that masked (-inf) entries give p = 0 and p * log p = 0, not NaN
_MIN_LOGIT = -1e4


@dataclass(frozen=True)
class ScoringConfig:
    """How texts are cut and batched for scoring."""

    #: token budget per text; 512 is what the Binoculars reference code observes
    max_tokens: int = 512
    #: most texts in one forward pass
    batch_size: int = 32
    #: most (texts x padded length) in one forward pass, bounding the batch x length x vocab tensors;
    #: None = by device: 512 on CPU (larger batches ran slower there, benchmarks/scoring_speed.py), 16384 on GPU
    max_batch_tokens: int | None = None
    #: "right" or "left"; results do not depend on it (tested), only padding layout does
    padding_side: str = "right"
    #: also return :data:`TOKEN_STATS`
    token_stats: bool = False
    #: also return the scoring model's hidden states averaged over each text's tokens, at these relative
    #: depths (0 = the embeddings, 1 = the last layer; layer = round(depth x layers))
    hidden_layers: tuple[float, ...] = ()
    #: also return every score but ``length`` over each text's body, the tokens from this position on,
    #: as ``body_<name>``; 0 = off. An opening is often not the writer's own: a human opening a model
    #: continues, a templated first line ("Certainly! Here is"); the body is what the writer wrote.
    body_from: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_layers", tuple(float(d) for d in self.hidden_layers))  # JSON gives lists
        if any(not 0.0 <= d <= 1.0 for d in self.hidden_layers):
            raise ValueError(f"hidden_layers are relative depths in [0, 1], got {self.hidden_layers}")
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', not {self.padding_side!r}")
        if self.body_from < 0:
            raise ValueError(f"body_from is a token position (0 = off), got {self.body_from}")
        if self.max_tokens < 2 or self.batch_size < 1 or (self.max_batch_tokens or 1) < 1:
            raise ValueError("max_tokens must be at least 2, batch_size and max_batch_tokens at least 1")


class Scorer:
    """Computes the zero-shot features of texts under a scoring model (and optional sampler, observer, performer)."""

    def __init__(
        self,
        lm: LanguageModel,
        sampler: LanguageModel | None = None,
        observer: LanguageModel | None = None,
        performer: LanguageModel | None = None,
        config: ScoringConfig = ScoringConfig(),
        contrast: LanguageModel | None = None,
    ) -> None:
        if (observer is None) != (performer is None):
            raise ValueError("Binoculars needs both an observer and a performer model")
        self.lm = lm
        self.sampler = sampler if sampler is not None else lm
        self.observer = observer
        self.performer = performer
        self.contrast = contrast
        self.config = config
        for other in (self.sampler, observer, performer, contrast):
            if other is not None:
                check_shared_tokenizer(lm, other)
        limits = [m.max_length for m in self._models() if m.max_length is not None]
        self.max_tokens = min([config.max_tokens, *limits])
        #: scored positions whose vocabulary-wide statistics are computed at once; None = by device: 64 on
        #: CPU (their tensors stay in cache), 4096 on GPU (bounding a large vocabulary's temporaries).
        #: No score depends on it (tested)
        self.stats_chunk: int | None = None
        depth = lm.model.config.num_hidden_layers
        #: indices into the model's ``hidden_states`` (0 = embeddings) returned as features
        self.hidden_layers = tuple(sorted({round(d * depth) for d in config.hidden_layers}))

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the features :meth:`score` returns, in order."""
        names = LM_FEATURES + (TOKEN_STATS if self.config.token_stats else ())
        names += ("binoculars",) if self.observer is not None else ()
        names += CONTRAST_FEATURES if self.contrast is not None else ()
        names += tuple(f"body_{n}" for n in names if n != "length") if self.config.body_from else ()
        width = self.lm.model.config.hidden_size
        return names + tuple(f"hidden{layer}_{i}" for layer in self.hidden_layers for i in range(width))

    def _models(self) -> list[LanguageModel]:
        """The distinct models this scorer runs, each once per batch."""
        out: list[LanguageModel] = []
        for m in (self.lm, self.sampler, self.observer, self.performer, self.contrast):
            if m is not None and all(m is not o for o in out):
                out.append(m)
        return out

    @property
    def stats_device(self) -> torch.device:
        """Where the statistics are computed: beside the scoring model's logits, so only per-text values leave it."""
        return self.lm.device

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each normalised text, truncated to the token budget."""
        enc = self.lm.tokenizer(
            [normalize_text(t) for t in texts], truncation=True, max_length=self.max_tokens, add_special_tokens=True
        )
        return enc["input_ids"]

    def score(self, texts: Sequence[str], progress: bool = False) -> dict[str, np.ndarray]:
        """Features of each text, as ``{name: float array of len(texts)}`` (NaN for texts under :data:`MIN_TOKENS`)."""
        texts = many_texts(texts)
        ids = self.tokenize(texts) if texts else []
        n = len(ids)
        out = {name: np.full(n, np.nan) for name in self.feature_names}
        out["length"] = np.array([len(x) for x in ids], dtype=float)
        batches = list(self._batches(ids))
        bar = tqdm(total=n, desc="scoring", unit="text", disable=not progress)
        for idx in batches:
            feats = self._score_batch([ids[i] for i in idx])
            for name, values in feats.items():
                out[name][idx] = values
            bar.update(len(idx))
        bar.close()
        return out

    def _batches(self, ids: list[list[int]]) -> Iterator[np.ndarray]:
        """Indices of scorable texts (:data:`MIN_TOKENS` or more), longest first, grouped under the batch-size and token caps."""
        lengths = np.array([len(x) for x in ids])
        order = np.argsort(-lengths, kind="stable")
        order = order[lengths[order] >= MIN_TOKENS]
        start = 0
        cfg = self.config
        budget = cfg.max_batch_tokens or (512 if self.lm.device.type == "cpu" else 16384)
        while start < len(order):
            width = lengths[order[start]]  # the longest text of the batch sets the padded width
            size = max(1, min(cfg.batch_size, budget // width))
            yield order[start : start + size]
            start += size

    def _pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad token ids to one width on the configured side; returns ids and attention mask."""
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), self.lm.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for row, s in enumerate(seqs):
            sl = slice(0, len(s)) if self.config.padding_side == "right" else slice(width - len(s), width)
            ids[row, sl] = s
            mask[row, sl] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)

    @torch.inference_mode()
    def _score_batch(self, seqs: list[list[int]]) -> dict[str, np.ndarray]:
        """Features of one padded batch: one forward pass per distinct model, all statistics vectorised."""
        # every statistic is computed where the scoring model's logits are, in float32 or wider; only
        # per-text values (and the pooled hidden states) leave the device
        home = self.stats_device
        ids, mask = (t.to(home) for t in self._pad(seqs))
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits: dict[int, torch.Tensor] = {}
        pooled: list[torch.Tensor] = []
        for m in self._models():
            dev = m.device
            want_hidden = m is self.lm and bool(self.hidden_layers)
            with torch.autocast(dev.type, dtype=m.autocast) if m.autocast is not None else contextlib.nullcontext():
                out = m.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev),
                              output_hidden_states=want_hidden)
            # position t predicts token t+1; float32 whatever the model's dtype (no copy when they already are)
            logits[id(m)] = out.logits[:, :-1].to(home, torch.float32)
            for layer in self.hidden_layers if want_hidden else ():
                h = out.hidden_states[layer].to(home, torch.float32)  # (batch, length, width)
                pooled.append((h * mask[..., None]).sum(1) / mask.sum(-1, keepdim=True))  # every token of the text
        labels = ids[:, 1:]
        valid = (mask[:, 1:] * mask[:, :-1]).bool()
        token = self._token_scores(logits, labels, valid)
        feats = self._reduce(token, valid)
        if self.config.body_from:
            # the same scores over the body alone: the tokens at position body_from and later of each text
            body = valid & (positions[:, 1:] >= self.config.body_from)
            feats.update({f"body_{k}": v for k, v in self._reduce(token, body).items()})
        result = {k: v.cpu().numpy() for k, v in feats.items()}
        for layer, h in zip(self.hidden_layers, pooled):
            h = h.cpu().double().numpy()
            result.update({f"hidden{layer}_{i}": h[:, i] for i in range(h.shape[1])})
        return result

    def _token_scores(self, logits: dict[int, torch.Tensor], labels: torch.Tensor,
                      valid: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-token scores, shape (batch, position), at the ``valid`` positions (0 elsewhere).

        Only scored positions are read (no padding), a chunk of them at a time: the chunk's
        (positions x vocabulary) tensors stay in the CPU's cache, and on a GPU they bound the
        temporaries of a large-vocabulary model. Each position is computed as a whole, so
        the chunk size changes no score.
        """
        vocab = min(x.shape[-1] for x in logits.values())  # embeddings may be padded past the tokenizer
        batch_idx, pos_idx = valid.nonzero(as_tuple=True)
        y = labels[batch_idx, pos_idx][:, None]
        step = self.stats_chunk or (64 if valid.device.type == "cpu" else 4096)
        token: dict[str, torch.Tensor] = {}
        for start in range(0, len(y), step):
            rows = (batch_idx[start:start + step], pos_idx[start:start + step])
            chunk = self._chunk_scores({m: x[rows + (slice(None, vocab),)] for m, x in logits.items()},
                                       y[start:start + step])
            for k, v in chunk.items():
                token.setdefault(k, torch.zeros(valid.shape, dtype=v.dtype, device=valid.device))[rows] = v
        return token

    def _chunk_scores(self, logits: dict[int, torch.Tensor], y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-token scores of a chunk of positions: ``logits`` (positions x vocabulary, float32,
        owned: worked on in place) of each model, ``y`` the observed tokens (positions x 1)."""
        # in as few passes over the vocabulary as possible
        score_logits = logits[id(self.lm)].clamp_(min=_MIN_LOGIT)
        token_logit = score_logits.gather(-1, y)
        # the rank: 1 + the count of strictly higher logits (relu(d).sign() is 1 exactly where d > 0;
        # twice as fast as summing a comparison on a CPU)
        rank = torch.relu(score_logits - token_logit).sign_().sum(-1) + 1
        logp = score_logits.sub_(torch.logsumexp(score_logits, -1, keepdim=True))
        token = {"logp": logp.gather(-1, y).squeeze(-1), "rank": rank}
        # Binoculars' observer is often the scoring model: keep its p then, not a second softmax
        p = logp.exp()
        observer_p = p if self.observer is self.lm else None
        plogp = p.mul(logp) if observer_p is not None else p.mul_(logp)
        token["entropy"] = -plogp.sum(-1)
        # Fast-DetectGPT: mean and variance of log p(x~_t) for x~_t ~ q(.|x_<t), q the sampling model
        if self.sampler is self.lm:
            qlogp = plogp  # q = p: E_q[log p] is minus the entropy
            token["mu"] = -token["entropy"]
        else:
            qlogp = torch.softmax(logits[id(self.sampler)], -1).mul_(logp)
            token["mu"] = qlogp.sum(-1)
        token["var"] = qlogp.mul_(logp).sum(-1) - token["mu"].square()
        if self.contrast is not None:
            contrast_logp = torch.log_softmax(logits[id(self.contrast)].clamp_(min=_MIN_LOGIT), -1)
            token["contrast_logp"] = contrast_logp.gather(-1, y).squeeze(-1)
            token["contrast_entropy"] = -contrast_logp.exp().mul_(contrast_logp).sum(-1)
        if self.observer is not None and self.performer is not None:
            # (if either is the scoring model, its logits now hold log p: (log-)softmax is shift-invariant)
            perf_logp = (contrast_logp if self.performer is self.contrast
                         else torch.log_softmax(logits[id(self.performer)].clamp(min=_MIN_LOGIT), -1))
            obs_p = observer_p if observer_p is not None else torch.softmax(logits[id(self.observer)], -1)
            token["perf_nll"] = -perf_logp.gather(-1, y).squeeze(-1)
            token["cross_nll"] = -(obs_p * perf_logp).sum(-1)
        return token

    def _reduce(self, token: dict[str, torch.Tensor], valid: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-text features from the per-token scores, over the positions ``valid`` marks (NaN where none)."""
        count = valid.sum(-1).double()

        def mean(x: torch.Tensor) -> torch.Tensor:
            """Average over the scored positions of each text (padding never enters, even as NaN)."""
            return torch.where(valid, x.double(), 0.0).sum(-1) / count

        def total(x: torch.Tensor) -> torch.Tensor:
            return torch.where(valid, x.double(), 0.0).sum(-1)

        def std(x: torch.Tensor) -> torch.Tensor:
            """Population standard deviation over the scored positions."""
            return mean((x.double() - mean(x)[:, None]).square()).sqrt()

        def quantile(x: torch.Tensor, q: float) -> torch.Tensor:
            """Linear-interpolation quantile over the scored positions (numpy's default)."""
            return torch.nanquantile(torch.where(valid, x.double(), torch.nan), q, dim=-1)

        token_logp, rank, mu, var = token["logp"], token["rank"], token["mu"], token["var"]
        log_rank = rank.double().log()
        feats: dict[str, torch.Tensor] = {
            "ll": mean(token_logp),
            "logrank": mean(log_rank),
            "entropy": mean(token["entropy"]),
        }
        feats["lrr"] = -feats["ll"] / feats["logrank"].clamp(min=_EPS)
        for k in _GLTR_K:
            feats[f"top{k}"] = mean((rank <= k).double())
        feats["fast_detectgpt"] = (total(token_logp) - total(mu)) / total(var).clamp(min=_EPS).sqrt()
        if self.config.token_stats:
            discrepancy = (token_logp - mu) / var.clamp(min=_EPS).sqrt()
            feats.update(ll_std=std(token_logp), logrank_std=std(log_rank), entropy_std=std(token["entropy"]),
                         top1=mean((rank == 1).double()), fdg_mean=mean(discrepancy), fdg_std=std(discrepancy))
            for tag, q in _QUANTILES.items():
                feats[f"ll_{tag}"] = quantile(token_logp, q)
                if tag != "q50":
                    feats[f"fdg_{tag}"] = quantile(discrepancy, q)
        if "contrast_logp" in token:
            llr = token["contrast_logp"] - token_logp
            feats.update(llr=mean(llr), llr_std=std(llr), contrast_ll=mean(token["contrast_logp"]),
                         contrast_entropy=mean(token["contrast_entropy"]))
            for tag, q in _QUANTILES.items():
                feats[f"llr_{tag}"] = quantile(llr, q)
        if "perf_nll" in token:
            feats["binoculars"] = mean(token["perf_nll"]) / mean(token["cross_nll"])
        return feats


def score_texts(
    texts: Sequence[str],
    lm: LanguageModel,
    sampler: LanguageModel | None = None,
    observer: LanguageModel | None = None,
    performer: LanguageModel | None = None,
    config: ScoringConfig = ScoringConfig(),
    progress: bool = False,
    contrast: LanguageModel | None = None,
) -> dict[str, np.ndarray]:
    """Zero-shot features of ``texts``; see the module docstring for each one."""
    return Scorer(lm, sampler, observer, performer, config, contrast).score(texts, progress=progress)
