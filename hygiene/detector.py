"""The synthetic-text detector: features -> classifier -> calibrated P(machine) -> threshold at a target FPR.

``fit`` holds out a share of the labelled data (by group when groups are given, so
near-duplicates never straddle the split), trains the classifier on the rest, fits
Platt scaling (a logistic map of the classifier's log-odds) on the held-out part and
sets the threshold so that at most ``target_fpr`` of its human texts are flagged.
``calibrate`` redoes the last two steps on other data, e.g. human text the
evaluation never sees. A text is flagged when ``P(machine) > threshold_``.

With a lexical model configured (:mod:`hygiene.lexical`) its score is one more feature:
out of fold for the training rows, from the model fitted on all training rows elsewhere.
With a cascade configured, a first-pass classifier over the cheap columns (text statistics,
lexical score) settles the texts outside its band, and only the rest are scored with the
language models (:class:`CascadeConfig`).

Saved as a directory: ``detector.json`` (config, feature names, calibration,
threshold, training summary, metrics, and the SHA-256 of every language model it
scores with), ``classifier.safetensors`` (arrays) and ``manifest.json`` (SHA-256 of
both). Nothing is unpickled; a directory holding pickle-like files, or whose files do
not match the manifest, is refused; a language model that is missing, or that changed
since the detector was fitted, is refused by name rather than looked up on a hub.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file
from safetensors.numpy import save as save_safetensors
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from hygiene.atomic import atomic_open, write_json
from hygiene.classifier import ArrayClassifier, ClassifierConfig, fit_classifier
from hygiene.errors import UserInputError, many_texts, one_line
from hygiene.evaluation import roc_summary
from hygiene.features import TEXT_STATS, FeatureConfig, Featurizer
from hygiene.lexical import LexicalConfig, LexicalModel, LexicalRows, fit_out_of_fold
from hygiene.lm import LanguageModel, model_fingerprint, model_reference, resolve_model
from hygiene.paths import detector_path
from hygiene.scoring import MIN_TOKENS, ScoringConfig

FORMAT = "hygiene-detector"
#: 2 added the lexical model and the language models' fingerprints; version 1 directories still load
FORMAT_VERSION = 2
_LEXICAL_PREFIX = "lexical/"
_FIRST_PASS_PREFIX = "cascade/"
_FILES = ("detector.json", "classifier.safetensors")
#: suffixes of files that could only be loaded by unpickling; their presence refuses the directory
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".pt", ".pth", ".npy", ".dill", ".cloudpickle"}
#: label strings -> 0/1 ("synthetic" is what the generational corpora write)
LABELS = {"human": 0, "machine": 1, "synthetic": 1}


class DetectorError(UserInputError):
    """A detector directory that is missing, not a detector, unsafe or tampered with; or unusable input."""


@dataclass(frozen=True)
class CascadeConfig:
    """The cheap first pass: the text statistics and the lexical score settle the texts they are sure of.

    A classifier over those columns alone scores every text; only texts inside its uncertain band
    pay for the language models. The band is the widest one for which at most ``max_disagreement``
    of a held-out set would be decided differently than by the full detector (see :func:`cascade_band`).
    """

    #: share of the held-out texts whose decision may differ from the full detector's
    max_disagreement: float = 0.005

    def __post_init__(self) -> None:
        if not 0 <= self.max_disagreement < 1:
            raise ValueError("cascade.max_disagreement must be in [0, 1)")


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that defines a detector before it sees data."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    #: hashed n-gram model whose (out-of-fold) score is a feature; None = off
    lexical: LexicalConfig | None = None
    #: the cheap first pass over text statistics and the lexical score; None = every text gets every feature
    cascade: CascadeConfig | None = None
    #: share of the labelled data held out for calibration (by group)
    calib_fraction: float = 0.2
    #: the issue's bar: at most 1% of human documents flagged
    target_fpr: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.calib_fraction < 1:
            raise ValueError("calib_fraction must be in (0, 1)")
        if not 0 < self.target_fpr < 1:
            raise ValueError("target_fpr must be in (0, 1)")


def encode_labels(labels: Sequence[int | str]) -> np.ndarray:
    """0/1 labels from ``human``/``machine`` (or ``synthetic``) strings or 0/1 integers."""
    out = []
    for i, label in enumerate(labels):
        if isinstance(label, str):
            if label not in LABELS:
                raise DetectorError(f"label #{i} is {label!r}; expected 'human' or 'machine'")
            out.append(LABELS[label])
        elif label in (0, 1):
            out.append(int(label))
        else:
            raise DetectorError(f"label #{i} is {label!r}; expected 0/1 or 'human'/'machine'")
    return np.array(out, dtype=int)


#: the fewest texts of each class the training part may hold (the classifier holds a tenth of it out to stop early)
MIN_TRAIN_PER_CLASS = 10


def _stratified_group_split(y: np.ndarray, groups: np.ndarray, fraction: float, seed: int
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Training and calibration rows with about ``fraction`` of the groups held out, each part holding both
    classes (the first such fold of a seeded ``StratifiedGroupKFold``); a one-line error if none does."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = min(max(2, round(1 / fraction)), int(np.bincount(y).min()))
    if n_splits >= 2:
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        for train, calib in folds.split(np.zeros(len(y)), y, groups):
            if len(np.unique(y[calib])) == 2 and len(np.unique(y[train])) == 2:
                return train, calib
    raise DetectorError("cannot hold out whole groups of both classes for calibration: the human or the machine "
                        "texts lie in one group (give them more groups, e.g. one per source document)")


def _both_classes(y: np.ndarray) -> None:
    """A one-line error unless the labels hold human and machine texts alike."""
    if len(np.unique(y)) < 2:
        raise DetectorError("training needs both human and machine texts")


def threshold_for_fpr(p_human: np.ndarray, target_fpr: float) -> float:
    """Smallest threshold t with ``mean(p_human > t) <= target_fpr`` among the observed scores."""
    p = np.sort(np.asarray(p_human, dtype=float))[::-1]
    if len(p) == 0:
        raise DetectorError("no human texts to set the threshold on")
    allowed = int(np.floor(target_fpr * len(p)))  # flagged human texts the target permits
    return float(p[min(allowed, len(p) - 1)])


def cascade_band(s: np.ndarray, flagged: np.ndarray, max_disagreement: float,
                 sources: Sequence[str] | None = None) -> tuple[float, float]:
    """The band ``(low, high)`` of first-pass scores ``s`` that settles the most texts (every text below
    ``low`` decided human, every one above ``high`` machine) while disagreeing with the full decisions
    ``flagged`` on at most ``max_disagreement`` of the texts of each source (one source when ``sources``
    is None). Texts inside the band go to the full detector."""
    s, flagged = np.asarray(s, dtype=float), np.asarray(flagged, dtype=bool)
    src = np.asarray(sources if sources is not None else [""] * len(s), dtype=object)
    if len(s) == 0:
        return -np.inf, np.inf
    names = sorted(set(src))
    lows = np.concatenate([[-np.inf], np.unique(s), [np.inf]])  # settle s < low
    best = (-1, -np.inf, np.inf)
    for low in lows:
        high = low  # never below low: a text is settled one way at most
        for d in names:
            rows = src == d
            spare = int(np.floor(max_disagreement * rows.sum())) - int((flagged[rows] & (s[rows] < low)).sum())
            if spare < 0:
                break
            # the unflagged texts of d above high are decided otherwise: at most ``spare`` of them
            above = np.sort(s[rows & ~flagged & (s >= low)])[::-1]
            if len(above) > spare:
                high = max(high, above[spare])
        else:
            settled = int((s < low).sum() + (s > high).sum())
            if settled > best[0]:
                best = (settled, low, high)
    _, low, high = best
    return float(low), float(high if np.isfinite(high) or high > 0 else np.inf)


class Detector:
    """Machine-text detector with a scikit-learn-like interface over raw texts."""

    def __init__(self, config: DetectorConfig = DetectorConfig(), device: str | None = None,
                 dtype: str | None = "float32", models: dict[str, LanguageModel] | None = None,
                 autocast: str | None = None, backend: str = "auto") -> None:
        # float32 on every device by default: the classifier and its threshold were fitted on features
        # scored in float32, and bfloat16 scores on a GPU would shift them (pass dtype for a detector
        # trained otherwise); autocast="bfloat16" trades a small shift for speed (docs/benchmarks.md)
        self.config = config
        self.featurizer = Featurizer(config.features, device=device, dtype=dtype, models=models, autocast=autocast,
                                     backend=backend)
        self.classifier_: ArrayClassifier | None = None
        self.lexical_: LexicalModel | None = None
        #: the cascade's first-pass classifier, its Platt map and its band (of its log-odds)
        self.first_pass_: ArrayClassifier | None = None
        self.first_pass_calibration_: tuple[float, float] = (1.0, 0.0)
        self.band_: tuple[float, float] = (-np.inf, np.inf)
        #: whether predictions use the cascade (when one is fitted); False scores every text with every feature
        self.use_cascade = True
        #: of the texts the last ``predict_proba`` call scored, which the first pass settled (no LM read them)
        self.last_settled_: np.ndarray = np.zeros(0, dtype=bool)
        self.calibration_: tuple[float, float] = (1.0, 0.0)  # P = sigmoid(a * logodds + b)
        self.threshold_: float = 0.5
        self.target_fpr_: float = config.target_fpr
        self.training_: dict[str, Any] = {}
        self.metrics_: dict[str, Any] = {}

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the classifier's input columns: the featurizer's, then ``lexical`` when configured."""
        return self.featurizer.names + (("lexical",) if self.config.lexical is not None else ())

    @property
    def first_pass_names(self) -> tuple[str, ...]:
        """The cascade's columns: the text statistics and the lexical score (those of them configured)."""
        return tuple(n for n in self.feature_names if n in TEXT_STATS or n == "lexical")

    def _first_pass_columns(self) -> np.ndarray:
        names = self.first_pass_names
        return np.array([n in names for n in self.feature_names])

    def first_pass_features(self, texts: Sequence[str]) -> np.ndarray:
        """The cascade's columns for ``texts``, without running any language model."""
        texts = list(texts)
        cols = [self.featurizer.text_statistics(texts)] if self.config.features.text_stats else []
        if self.config.lexical is not None:
            if self.lexical_ is None:
                raise DetectorError("the detector is not fitted")
            cols.append(self.lexical_.decision_function(texts)[:, None])
        return np.hstack(cols) if cols else np.zeros((len(texts), 0))

    def base_features(self, texts: Sequence[str], progress: bool = False,
                      cache: str | os.PathLike | None = None, text_stats: np.ndarray | None = None) -> np.ndarray:
        """The featurizer's columns for ``texts`` (see :mod:`hygiene.features`; ``cache`` makes it resumable;
        ``text_stats``, the text statistics already computed, are not computed again)."""
        return self.featurizer.transform(list(texts), progress=progress, cache=cache, text_stats=text_stats)

    def features(self, texts: Sequence[str], progress: bool = False,
                 cache: str | os.PathLike | None = None, first: np.ndarray | None = None) -> np.ndarray:
        """The classifier's input for ``texts``: :meth:`base_features` and the fitted lexical model's score.

        ``first``, the texts' :meth:`first_pass_features` computed ahead (in a worker process), supplies the
        columns they hold; only the language models run here."""
        texts = many_texts(texts)
        stats, lexical = self._split_first(first, len(texts)) if first is not None else (None, None)
        X = self.base_features(texts, progress=progress, cache=cache, text_stats=stats)
        if self.config.lexical is None:
            return X
        if lexical is None:
            if self.lexical_ is None:
                raise DetectorError("the detector is not fitted")
            lexical = self.lexical_.decision_function(texts)
        return np.column_stack([X, lexical])

    def _check_first(self, first: np.ndarray, n: int) -> np.ndarray:
        """``first`` as rows of :meth:`first_pass_features` for ``n`` texts, or a clear error."""
        first = np.asarray(first, dtype=float)
        if first.shape != (n, len(self.first_pass_names)):
            raise DetectorError(f"expected first-pass features of shape {(n, len(self.first_pass_names))}, "
                                f"got {first.shape}")
        return first

    def _split_first(self, first: np.ndarray, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The text statistics and the lexical score in rows of :meth:`first_pass_features` (None: not configured)."""
        first = self._check_first(first, n)
        k = len(TEXT_STATS) if self.config.features.text_stats else 0
        return (first[:, :k] if k else None), (first[:, k] if self.config.lexical is not None else None)

    # -- training ---------------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], labels: Sequence[int | str], groups: Sequence[Any] | None = None,
            progress: bool = False, summary: dict[str, Any] | None = None,
            cache: str | os.PathLike | None = None) -> "Detector":
        """Featurize labelled texts, then :meth:`fit_features` (labels and split checked first: featurizing is the
        slow part)."""
        self.split(labels, groups)
        X = self.base_features(texts, progress=progress, cache=cache)
        return self.fit_features(X, labels, groups, summary=summary, texts=texts)

    def split(self, labels: Sequence[int | str], groups: Sequence[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of the training and the calibration part (by group when groups are given; seeded).

        Groups are held out at random; where that holds out one class only (the machine texts in a few
        groups), whole groups of each class are held out instead (``StratifiedGroupKFold``), so that the
        calibration part can fit Platt scaling. A one-line error if each part cannot hold both classes,
        or the training part holds fewer than :data:`MIN_TRAIN_PER_CLASS` texts of either."""
        y = encode_labels(labels)
        _both_classes(y)
        cfg = self.config
        if groups is None:
            if min(np.bincount(y)) < 2:
                raise DetectorError("too few texts to hold some of each class out for calibration")
            train, calib = train_test_split(np.arange(len(y)), test_size=cfg.calib_fraction, stratify=y,
                                            random_state=cfg.seed)
        else:
            g = np.asarray(groups, dtype=object).astype(str)
            split = GroupShuffleSplit(n_splits=1, test_size=cfg.calib_fraction, random_state=cfg.seed)
            train, calib = next(split.split(np.zeros(len(y)), y, groups=g))
            if len(np.unique(y[calib])) < 2 or len(np.unique(y[train])) < 2:
                train, calib = _stratified_group_split(y, g, cfg.calib_fraction, cfg.seed)
        counts = np.bincount(y[train], minlength=2)
        if counts.min() < MIN_TRAIN_PER_CLASS:
            raise DetectorError(f"too few texts to train on: {counts[0]} human and {counts[1]} machine in the "
                                f"training part (at least {MIN_TRAIN_PER_CLASS} of each)")
        return train, calib

    def fit_features(self, X: np.ndarray, labels: Sequence[int | str], groups: Sequence[Any] | None = None,
                     summary: dict[str, Any] | None = None, texts: Sequence[str] | None = None,
                     lexical_extra: LexicalRows | None = None) -> "Detector":
        """Train on one part of (X, labels), calibrate probabilities and threshold on the held-out part.

        ``X`` holds the featurizer's columns (:meth:`base_features`); with a lexical model configured,
        ``texts`` are needed too, and its column is added: out of fold on the training part, from the
        model fitted on the whole training part on the held-out part. ``lexical_extra`` are labelled
        texts that only the lexical model reads (it is cheap enough to read many more texts than the
        language models score); those of a calibration group are left out.
        """
        y = encode_labels(labels)
        if self.config.lexical is not None and texts is None:
            raise DetectorError("a detector with a lexical model is fitted on texts as well as features")
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(self.featurizer.names):
            raise DetectorError(f"expected a feature matrix with {len(self.featurizer.names)} columns, got shape {X.shape}")
        cfg = self.config
        train, calib = self.split(y, groups)
        if cfg.lexical is not None:
            texts = list(texts)
            row_groups = [str(g) for g in groups] if groups is not None else [f"row:{i}" for i in range(len(y))]
            pool = LexicalRows([texts[i] for i in train], y[train], [row_groups[i] for i in train])
            if lexical_extra is not None:
                pool = pool + lexical_extra.without_groups({row_groups[i] for i in calib})
            lexical = np.empty(len(y))
            oof, self.lexical_ = fit_out_of_fold(pool.texts, pool.labels, pool.groups, cfg.lexical)
            lexical[train] = oof[: len(train)]
            lexical[calib] = self.lexical_.decision_function([texts[i] for i in calib])
            X = np.column_stack([X, lexical])
        self.classifier_ = fit_classifier(X[train], y[train], cfg.classifier)
        if cfg.cascade is not None and self.first_pass_names:
            cols = self._first_pass_columns()
            self.first_pass_ = fit_classifier(X[train][:, cols], y[train], cfg.classifier)
            s = self.first_pass_.decision_function(X[calib][:, cols])
            platt = LogisticRegression(C=1e6, max_iter=1000).fit(s[:, None], y[calib])
            self.first_pass_calibration_ = (float(platt.coef_[0, 0]), float(platt.intercept_[0]))
        self.calibrate_features(X[calib], y[calib])
        if self.first_pass_ is not None:
            self.fit_cascade(X[calib])
        self.training_ = {
            "n_train": {"human": int((y[train] == 0).sum()), "machine": int((y[train] == 1).sum())},
            "n_calib": {"human": int((y[calib] == 0).sum()), "machine": int((y[calib] == 1).sum())},
            "split": "by group" if groups is not None else "stratified by label",
            **({"numerics": numerics} if (numerics := self.featurizer.numerics()) else {}),
            **({"n_lexical": len(pool.texts)} if cfg.lexical is not None else {}),
            **(summary or {}),
        }
        return self

    def fit_cascade(self, X: np.ndarray, sources: Sequence[str] | None = None, widen_only: bool = False
                    ) -> "Detector":
        """Set the cascade's band on held-out feature rows (any mix of texts; no labels needed): the one that
        settles the most of them while its decisions differ from the full detector's, at the current
        threshold, on at most ``cascade.max_disagreement`` of them (:func:`cascade_band`). With
        ``sources`` (one per row: the data set a row comes from) that bound holds for each source on its
        own, as the threshold's target does, so a small source the first pass reads badly is not
        outvoted by the large ones. Call it again whenever the threshold moves.

        The rows must hold the kinds of machine text the band is to be faithful on: on human text alone
        almost nothing is flagged, so settling every text would pass the bound. ``widen_only`` (for such
        rows) lets them only widen the current band, never narrow it."""
        if self.first_pass_ is None or self.config.cascade is None:
            raise DetectorError("this detector has no cascade (configure one and fit it)")
        X = self._check_X(X)
        by_source = np.asarray(sources if sources is not None else [""] * len(X), dtype=object)
        if len(by_source) != len(X):
            raise DetectorError(f"got {len(by_source)} sources for {len(X)} rows")
        flagged = self.predict_proba_features(X)[:, 1] > self.threshold_
        s = self.first_pass_.decision_function(X[:, self._first_pass_columns()])
        low, high = cascade_band(s, flagged, self.config.cascade.max_disagreement, by_source)
        if widen_only:
            low, high = min(low, self.band_[0]), max(high, self.band_[1])
        self.band_ = (low, high)
        p, settled = self.cascade_proba_features(X)
        differ = (p > self.threshold_) != flagged
        self.metrics_["cascade"] = {
            "n": len(s), "band": [_finite(v) for v in self.band_], "settled": float(settled.mean()),
            "disagreement": float(differ.mean()),
            **({"disagreement_by_source": {src: float(differ[by_source == src].mean()) for src in sorted(set(by_source))}}
               if sources is not None else {})}
        return self

    # -- calibration ------------------------------------------------------------------------------
    def calibrate(self, texts: Sequence[str], labels: Sequence[int | str] | None = None,
                  target_fpr: float | None = None, progress: bool = False,
                  domains: Sequence[str] | None = None, cache: str | os.PathLike | None = None) -> "Detector":
        """Refit Platt scaling (if both classes are given) and the threshold (on the human texts), then the
        cascade's band (if it has one) on the same texts; with ``domains``, both hold for each domain.
        Without machine texts among them the band may only widen (see :meth:`fit_cascade`). ``cache``: the
        language models' feature rows, reused and extended (:meth:`features`)."""
        X = self.features(texts, progress=progress, cache=cache)
        self.calibrate_features(X, labels, target_fpr, domains)
        if self.first_pass_ is None:
            return self
        machine = labels is not None and bool(np.any(encode_labels(labels) == 1))
        return self.fit_cascade(X, domains, widen_only=not machine)

    def calibrate_features(self, X: np.ndarray, labels: Sequence[int | str] | None = None,
                           target_fpr: float | None = None, domains: Sequence[str] | None = None) -> "Detector":
        """Platt scaling on labelled held-out features; threshold for ``target_fpr`` on the human rows.

        Without labels every row is taken as human and only the threshold moves. With ``domains`` (one
        per row: the source of each text) the target holds for every domain's human rows, not only
        for their union: the threshold is the highest of the domains' thresholds, so no one source of
        human text (web pages, books, ...) pays for the others.
        """
        X = self._check_X(X)
        y = np.zeros(len(X), dtype=int) if labels is None else encode_labels(labels)
        s = self._classifier().decision_function(X)
        if len(np.unique(y)) == 2:
            platt = LogisticRegression(C=1e6, max_iter=1000).fit(s[:, None], y)
            self.calibration_ = (float(platt.coef_[0, 0]), float(platt.intercept_[0]))
        self.target_fpr_ = self.target_fpr_ if target_fpr is None else target_fpr
        p = self._calibrated(s)
        human = y == 0
        if not human.any():
            raise DetectorError("no human texts to set the threshold on")
        by_domain = np.asarray(domains if domains is not None else [""] * len(y), dtype=object)
        if len(by_domain) != len(y):
            raise DetectorError(f"got {len(by_domain)} domains for {len(y)} rows")
        self.threshold_ = max(threshold_for_fpr(p[human & (by_domain == d)], self.target_fpr_)
                              for d in sorted(set(by_domain[human])))
        self.metrics_["calibration"] = {
            "n_human": int(human.sum()),
            "n_machine": int((y == 1).sum()),
            "human_flagged": float(np.mean(p[human] > self.threshold_)),
            **({"human_flagged_by_domain": {d: float(np.mean(p[human & (by_domain == d)] > self.threshold_))
                                            for d in sorted(set(by_domain[human]))}} if domains is not None else {}),
            **({"machine_flagged": float(np.mean(p[y == 1] > self.threshold_))} if (y == 1).any() else {}),
            **(roc_summary(y, s) if len(np.unique(y)) == 2 else {}),
        }
        return self

    def trained_on(self, paths: Sequence[str | os.PathLike]) -> list[str]:
        """Those of ``paths`` whose content is one of the corpora this detector was trained on (by SHA-256, as
        :func:`train_detector` records them): figures measured on them are not held out."""
        seen = {c.get("sha256") for c in self.training_.get("corpora", []) if isinstance(c, dict)}
        return [str(p) for p in paths if Path(p).is_file() and _sha256(Path(p)) in seen]

    # -- prediction -------------------------------------------------------------------------------
    def decision_function_features(self, X: np.ndarray) -> np.ndarray:
        """Classifier log-odds (before calibration) for a feature matrix."""
        return self._classifier().decision_function(self._check_X(X))

    def predict_proba_features(self, X: np.ndarray) -> np.ndarray:
        """Calibrated ``[P(human), P(machine)]`` for a feature matrix, shape (n, 2)."""
        p = self._calibrated(self.decision_function_features(X))
        return np.column_stack([1 - p, p])

    def predict_proba(self, texts: Sequence[str], progress: bool = False, first: np.ndarray | None = None) -> np.ndarray:
        """Calibrated ``[P(human), P(machine)]`` for each text, shape (n, 2); NaN for a text too short to judge
        (under :data:`MIN_TOKENS` tokens: no language-model evidence; :meth:`predict` says 0 for it).

        With a cascade (and ``use_cascade``), the first pass scores every text and only those inside
        its band get the language models; a settled text's P(machine) is the first pass's calibrated
        probability, kept on its side of the threshold, so ``P > threshold_`` is the cascade's decision.
        ``first``: the texts' :meth:`first_pass_features`, computed ahead (the same numbers, not recomputed).
        """
        texts = many_texts(texts)
        if not texts:
            self.last_settled_ = np.zeros(0, dtype=bool)
            return np.zeros((0, 2))
        if self.first_pass_ is None or not self.use_cascade:
            self.last_settled_ = np.zeros(len(texts), dtype=bool)
            p = self.judged_proba_features(self.features(texts, progress=progress, first=first))
            return np.column_stack([1 - p, p])
        first = self.first_pass_features(texts) if first is None else self._check_first(first, len(texts))
        p, settled = self._first_pass(first)
        inside = np.flatnonzero(~settled)
        self.last_settled_ = settled
        if len(inside):
            X = self.features([texts[i] for i in inside], progress=progress, first=first[inside])
            p[inside] = self.judged_proba_features(X)
        done = np.flatnonzero(settled)
        if len(done) and self.config.features.lm is not None:  # no language model read these: count their tokens
            prepared = [self.featurizer.config.prepare(texts[i]) for i in done]  # as the language models read them
            short = [len(ids) < MIN_TOKENS for ids in self.featurizer.scorer.tokenize(prepared)]
            p[done[short]] = np.nan
        return np.column_stack([1 - p, p])

    def judged_proba_features(self, X: np.ndarray) -> np.ndarray:
        """P(machine) of each row of a feature matrix as :meth:`predict_proba` gives it: NaN where the row holds
        no language-model evidence (a ``length`` under :data:`MIN_TOKENS` tokens)."""
        p = self.predict_proba_features(X)[:, 1]
        p[~self._judged(X)] = np.nan
        return p

    def _judged(self, X: np.ndarray) -> np.ndarray:
        """Which rows of a feature matrix hold language-model evidence."""
        if "length" not in self.feature_names:
            return np.ones(len(X), dtype=bool)
        return np.asarray(X)[:, self.feature_names.index("length")] >= MIN_TOKENS

    def predict(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """1 where the text is flagged as machine-made (``P(machine) > threshold_``), else 0."""
        return (self.predict_proba(texts, progress=progress)[:, 1] > self.threshold_).astype(int)

    def cascade_proba_features(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P(machine) as the cascade gives it for rows of every feature, and which rows its first pass settled
        (for measuring the cascade against the full detector on the same rows)."""
        X = self._check_X(X)
        if self.first_pass_ is None:
            raise DetectorError("this detector has no cascade")
        p, settled = self._first_pass(X[:, self._first_pass_columns()])
        # the classifier reads every row, so a row scores as in predict_proba_features(X) to the bit: a matrix
        # product over fewer rows may round its last bit otherwise, and flip a text that sits on the threshold
        p[~settled] = self.predict_proba_features(X)[~settled, 1]
        return p, settled

    def _first_pass(self, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first pass's calibrated P(machine), kept on its side of the threshold, and the rows it settles."""
        s = self.first_pass_.decision_function(first)
        a, b = self.first_pass_calibration_
        p = 1.0 / (1.0 + np.exp(-(a * s + b)))
        low, high = self.band_
        p = np.where(s < low, np.minimum(p, self.threshold_), p)
        p = np.where(s > high, np.maximum(p, np.nextafter(self.threshold_, 1.0)), p)
        return p, (s < low) | (s > high)

    def _calibrated(self, s: np.ndarray) -> np.ndarray:
        a, b = self.calibration_
        return 1.0 / (1.0 + np.exp(-(a * s + b)))

    def _classifier(self) -> ArrayClassifier:
        if self.classifier_ is None:
            raise DetectorError("the detector is not fitted")
        return self.classifier_

    def _check_X(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise DetectorError(f"expected a feature matrix with {len(self.feature_names)} columns, got shape {X.shape}")
        return X

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the detector directory (JSON + safetensors + manifest of SHA-256 checksums)."""
        clf = self._classifier()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        arrays = dict(clf.arrays)
        if self.lexical_ is not None:
            arrays.update({_LEXICAL_PREFIX + k: v for k, v in self.lexical_.to_arrays().items()})
        if self.first_pass_ is not None:
            arrays.update({_FIRST_PASS_PREFIX + k: v for k, v in self.first_pass_.arrays.items()})
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "config": dataclasses.asdict(self.config),
            "models": self.featurizer.model_fingerprints(),
            "feature_names": list(self.feature_names),
            "classifier": {"kind": clf.kind, "meta": clf.meta},
            **({"cascade": {"kind": self.first_pass_.kind, "meta": self.first_pass_.meta,
                            "columns": list(self.first_pass_names),
                            "calibration": {"a": self.first_pass_calibration_[0], "b": self.first_pass_calibration_[1]},
                            "band": [_finite(v) for v in self.band_]}} if self.first_pass_ is not None else {}),
            "calibration": {"a": self.calibration_[0], "b": self.calibration_[1]},
            "threshold": self.threshold_,
            "target_fpr": self.target_fpr_,
            "training": self.training_,
            "metrics": self.metrics_,
        }
        write_json(out / "detector.json", header)
        with atomic_open(out / "classifier.safetensors", "wb") as fh:
            fh.write(save_safetensors({k: np.ascontiguousarray(v) for k, v in arrays.items()}))
        write_json(out / "manifest.json", {"format": FORMAT, "files": {f: _sha256(out / f) for f in _FILES}})
        return out


def _finite(v: float) -> float | str:
    """JSON has no infinity: an open end of the band is written as a string."""
    return v if np.isfinite(v) else ("inf" if v > 0 else "-inf")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_detector(path: str | os.PathLike | None = None, device: str | None = None, dtype: str | None = "float32",
                  models: dict[str, LanguageModel] | None = None, cascade: bool = True,
                  autocast: str | None = None, backend: str = "auto") -> Detector:
    """Load a detector directory (default: the shipped one; a bare name such as ``detector-fast``: the shipped
    folder of that name, where no such path exists here), refusing pickles and tampered files.

    ``cascade=False`` scores every text with every feature even where the detector has a cascade;
    ``autocast="bfloat16"`` runs its language models under bfloat16 autocast (faster on a CPU with bfloat16
    instructions; P(machine) moves by a few hundredths); ``backend="onnxruntime"`` runs them with ONNX Runtime
    on the CPU (the same scores: :mod:`hygiene.onnx_lm`), and the default ``"auto"`` does so wherever it is
    installed, the models are float32 on the CPU and it times faster than torch (``hygiene.lm.load_lm``)."""
    root = detector_path(path)
    if not root.is_dir():
        raise DetectorError(f"{root} is not a detector directory (expected a folder with manifest.json)")
    unsafe = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix.lower() in _PICKLE_SUFFIXES)
    if unsafe:
        raise DetectorError(f"{root} holds pickle-like files ({', '.join(unsafe)}); detectors never load pickles")
    manifest = _read_json(root / "manifest.json", root)
    files = manifest.get("files")
    if manifest.get("format") != FORMAT or not isinstance(files, dict) or set(files) != set(_FILES):
        raise DetectorError(f"{root / 'manifest.json'} is not a {FORMAT} manifest")
    for name, digest in manifest["files"].items():
        if not (root / name).is_file():
            raise DetectorError(f"{root / name} is missing")
        if _sha256(root / name) != digest:
            raise DetectorError(f"{root / name} does not match its checksum in manifest.json: tampered or corrupt")
    header = _read_json(root / "detector.json", root)
    if header.get("version") not in (1, FORMAT_VERSION):
        raise DetectorError(f"{root}: detector format version {header.get('version')} is not supported")
    try:
        config = _config_from_dict(header["config"])
        _check_models(root, header.get("models", {}), models or {})
        arrays = load_file(str(root / "classifier.safetensors"))
        det = Detector(config, device=device, dtype=dtype, models=models, autocast=autocast, backend=backend)
        lexical = {k[len(_LEXICAL_PREFIX):]: v for k, v in arrays.items() if k.startswith(_LEXICAL_PREFIX)}
        first = {k[len(_FIRST_PASS_PREFIX):]: v for k, v in arrays.items() if k.startswith(_FIRST_PASS_PREFIX)}
        arrays = {k: v for k, v in arrays.items() if not k.startswith((_LEXICAL_PREFIX, _FIRST_PASS_PREFIX))}
        if config.lexical is not None:
            det.lexical_ = LexicalModel.from_arrays(config.lexical, lexical)
        if "cascade" in header:
            c = header["cascade"]
            det.first_pass_ = ArrayClassifier(c["kind"], first, c["meta"])
            det.first_pass_calibration_ = (float(c["calibration"]["a"]), float(c["calibration"]["b"]))
            det.band_ = (float(c["band"][0]), float(c["band"][1]))
            if list(c["columns"]) != list(det.first_pass_names):
                raise ValueError("the cascade's columns do not match the configuration")
        det.use_cascade = cascade
        det.classifier_ = ArrayClassifier(header["classifier"]["kind"], arrays, header["classifier"]["meta"])
        det.calibration_ = (float(header["calibration"]["a"]), float(header["calibration"]["b"]))
        det.threshold_ = float(header["threshold"])
        det.target_fpr_ = float(header["target_fpr"])
        det.training_ = header.get("training", {})
        det.metrics_ = header.get("metrics", {})
    except UserInputError:
        raise  # e.g. a device this machine lacks: its own message
    except (KeyError, TypeError, ValueError, AttributeError, SafetensorError) as exc:
        raise DetectorError(f"{root}: malformed detector ({one_line(exc)})") from exc
    if list(det.feature_names) != header.get("feature_names"):
        raise DetectorError(f"{root}: feature names do not match the configuration")
    fitted = det.training_.get("numerics", {}).get("dtype", "float32")
    scoring = det.featurizer.numerics().get("dtype", "float32")
    if fitted != scoring:
        logging.getLogger(__name__).warning("%s was fitted on %s scores and will score in %s: P(machine) may "
                                            "shift (pass dtype=%r)", root, fitted, scoring, fitted)
    return det


def _read_json(path: Path, root: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DetectorError(f"{root} is not a detector directory: {path.name} is missing")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DetectorError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise DetectorError(f"{path} is not a JSON object")
    return obj


def _check_models(root: Path, pinned: dict[str, str], loaded: dict[str, LanguageModel]) -> None:
    """Refuse a detector whose language models are missing or differ from the ones it was fitted with."""
    for name, digest in pinned.items():
        if name in loaded:
            continue  # the caller brings this model already loaded
        path = Path(resolve_model(name))
        if not path.is_dir():
            raise DetectorError(f"{root}: its language model {name!r} is not at {path} (expected a model folder)")
        if model_fingerprint(path) != digest:
            raise DetectorError(f"{root}: language model {path} changed since the detector was fitted "
                                f"(SHA-256 differs); retrain the detector or restore that model")


def _config_from_dict(d: dict[str, Any]) -> DetectorConfig:
    """Rebuild the nested config dataclasses from their JSON form (version 1 layouts included)."""
    feats = dict(d["features"])
    scoring = dict(feats["scoring"])
    if "fold_homoglyphs" not in feats:  # version 1: scored without folding; these two switches sat on the
        # feature config and overrode the scoring config's; detectors saved before either group existed had neither
        feats["fold_homoglyphs"] = False
        scoring["token_stats"] = feats.pop("token_stats", False)
        scoring["hidden_layers"] = feats.pop("hidden_states", ())
    feats["scoring"] = ScoringConfig(**scoring)
    lexical = d.get("lexical")
    cascade = d.get("cascade")
    return DetectorConfig(
        features=FeatureConfig(**feats),
        classifier=ClassifierConfig(**d["classifier"]),
        lexical=LexicalConfig(**lexical) if lexical is not None else None,
        cascade=CascadeConfig(**cascade) if cascade is not None else None,
        calib_fraction=d["calib_fraction"],
        target_fpr=d["target_fpr"],
        seed=d["seed"],
    )


def train_detector(
    corpora: Sequence[str | os.PathLike],
    config: DetectorConfig = DetectorConfig(),
    human_calibration: Sequence[str] | None = None,
    device: str | None = None,
    dtype: str | None = "float32",
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    command: str | None = None,
) -> Detector:
    """Fit a detector on labelled JSONL corpora; optionally reset its threshold on the human pool's calib split.

    ``human_calibration`` names human-pool sources (e.g. ``("web", "books")``) whose calib-split
    texts set the threshold, so the target FPR holds on real human text rather than on the
    corpora's human side only. ``command``, the command line that ran it, is recorded with the training
    summary beside each corpus's path and SHA-256 and this package's version.
    """
    from hygiene import __version__
    from hygiene.human_data import check_sources
    from hygiene.labelled import human_pool, read_many

    check_sources(human_calibration or ())  # a misspelt source fails now, not after the scoring
    f = config.features
    config = dataclasses.replace(config, features=dataclasses.replace(
        f, **{k: model_reference(getattr(f, k)) for k in ("lm", "sampler", "observer", "performer", "contrast_lm")}))
    records = read_many(corpora)
    labels = np.array([r.label for r in records])
    groups = [r.group if r.group is not None else f"row:{i}" for i, r in enumerate(records)]
    det = Detector(config, device=device, dtype=dtype)
    try:
        det.split(labels, groups)
    except DetectorError as exc:
        raise DetectorError(f"{', '.join(map(str, corpora))}: {exc}") from None
    summary = {
        "corpora": [{"path": str(Path(p).resolve()), "sha256": _sha256(Path(p))} for p in corpora],
        "hygiene_version": __version__,
        **({"command": command} if command else {}),
        "n_texts": {"human": int((labels == 0).sum()), "machine": int((labels == 1).sum())},
        "generations": sorted({r.generation for r in records if r.generation is not None}),
        "generators": sorted({r.generator for r in records if r.generator is not None})[:50],
        "domains": sorted({r.domain for r in records if r.domain is not None}),
    }
    det.fit([r.text for r in records], labels, groups, progress=progress, summary=summary, cache=cache)
    if human_calibration:
        pool = human_pool("calib", sources=human_calibration)
        det.calibrate([r.text for r in pool], progress=progress, domains=[r.domain for r in pool],  # per source
                      cache=cache)
        det.training_["threshold_set_on"] = {"human_pool_split": "calib", "sources": list(human_calibration),
                                             "n_texts": len(pool)}
    return det
