"""Cheap lexical evidence: a linear model over hashed word and character n-grams.

Chat assistants share a register (word choice, stock phrases, hedges) that a small
reference LM's likelihoods barely see and that a bag of n-grams sees at once. Texts
are hashed (scikit-learn's stateless ``HashingVectorizer``: nothing to store but the
configuration), word 1-2-grams and character 3-5-grams within words, each block
l2-normalised, and an L2-regularised logistic regression is fitted on them by stochastic gradient
descent (scikit-learn's ``SGDClassifier``: seconds on tens of thousands of texts, where an exact
solver takes minutes, and the detector refits it once per left-out source when it is measured).

Two guards against learning the datasets instead of authorship:

- the text is the detector's normalised text (homoglyphs folded, layout gone);
- every training text is also seen with its first sentence removed, so a templated
  opening ("Certainly! Here is ...") cannot carry the decision on its own.

Its score enters the detector's classifier as one feature, computed out of fold for
the training rows (a model's score on its own training texts would be over-confident).
The fitted model is one weight vector and an intercept, stored as arrays (no pickle).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import GroupKFold

from hygiene.normalize import normalize_for_detection

_FIRST_SENTENCE = re.compile(r"^.*?[.!?:](?:\s+|$)", re.DOTALL)


@dataclass(frozen=True)
class LexicalConfig:
    """The n-gram model's hashing space, n-gram ranges, regularisation and folds."""

    #: hashed features per block (word and character); 2^18 keeps the weights at 2 x 1 MB in float32
    n_features: int = 2**18
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (3, 5)
    #: L2 strength of the logistic regression (``SGDClassifier.alpha``) and passes over the data
    alpha: float = 2e-6
    epochs: int = 10
    #: folds (by group) for the out-of-fold scores of the training rows
    folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "word_ngrams", tuple(self.word_ngrams))  # JSON gives lists
        object.__setattr__(self, "char_ngrams", tuple(self.char_ngrams))


def drop_first_sentence(text: str) -> str:
    """``text`` without its first sentence (unchanged when that would leave nothing)."""
    rest = _FIRST_SENTENCE.sub("", text, count=1).strip()
    return rest or text


class LexicalModel:
    """Hashed n-gram logistic regression; ``decision_function`` gives log-odds of machine text."""

    def __init__(self, config: LexicalConfig = LexicalConfig()) -> None:
        self.config = config
        self.coef_: np.ndarray | None = None
        self.intercept_: float = 0.0

    def _vectorizers(self) -> tuple[HashingVectorizer, HashingVectorizer]:
        c = self.config
        common = dict(n_features=c.n_features, alternate_sign=False, norm="l2", lowercase=True)
        return (HashingVectorizer(analyzer="word", ngram_range=c.word_ngrams, token_pattern=r"(?u)\b\w+\b", **common),
                HashingVectorizer(analyzer="char_wb", ngram_range=c.char_ngrams, **common))

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """The hashed n-gram matrix of ``texts`` (normalised for detection), shape (n, 2 x n_features)."""
        norm = [normalize_for_detection(t) for t in texts]
        return sp.hstack([v.transform(norm) for v in self._vectorizers()]).tocsr()

    def matrices(self, texts: Sequence[str]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """The hashed matrices of ``texts`` whole and with their first sentence removed (what :meth:`fit_matrices` takes)."""
        texts = list(texts)
        return self.transform(texts), self.transform([drop_first_sentence(t) for t in texts])

    def fit_matrices(self, whole: sp.csr_matrix, cut: sp.csr_matrix, y: Sequence[int]) -> "LexicalModel":
        """Fit on the texts whole and without their first sentence (rows of :meth:`matrices`)."""
        y = np.asarray(y, dtype=int)
        c = self.config
        model = SGDClassifier(loss="log_loss", alpha=c.alpha, max_iter=c.epochs, tol=None, random_state=c.seed)
        model.fit(sp.vstack([whole, cut]).tocsr(), np.concatenate([y, y]))
        self.coef_ = model.coef_[0].astype(np.float32)
        self.intercept_ = float(model.intercept_[0])
        return self

    def fit(self, texts: Sequence[str], y: Sequence[int]) -> "LexicalModel":
        """Fit on ``texts`` and on the same texts with their first sentence removed."""
        return self.fit_matrices(*self.matrices(texts), y)

    def decision_function_matrix(self, X: sp.csr_matrix) -> np.ndarray:
        """Log-odds of machine text for rows of :meth:`transform`."""
        if self.coef_ is None:
            raise ValueError("the lexical model is not fitted")
        return np.asarray(X @ self.coef_.astype(float)).ravel() + self.intercept_

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        """Log-odds of machine text for each text."""
        return self.decision_function_matrix(self.transform(texts))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as named arrays (for safetensors)."""
        if self.coef_ is None:
            raise ValueError("the lexical model is not fitted")
        return {"coef": self.coef_, "intercept": np.array([self.intercept_])}

    @classmethod
    def from_arrays(cls, config: LexicalConfig, arrays: dict[str, np.ndarray]) -> "LexicalModel":
        """A fitted model from :meth:`to_arrays`' output; the width must match the configuration."""
        model = cls(config)
        if arrays["coef"].shape != (2 * config.n_features,):
            raise ValueError(f"lexical weights have shape {arrays['coef'].shape}, expected ({2 * config.n_features},)")
        model.coef_ = np.asarray(arrays["coef"], dtype=np.float32)
        model.intercept_ = float(arrays["intercept"][0])
        return model


@dataclass(frozen=True)
class LexicalRows:
    """Labelled texts with their groups: what the lexical model learns from."""

    texts: list[str]
    labels: np.ndarray
    groups: list[str]

    def __add__(self, other: "LexicalRows") -> "LexicalRows":
        return LexicalRows(self.texts + other.texts, np.concatenate([self.labels, other.labels]).astype(int),
                           self.groups + other.groups)

    def without_groups(self, groups: set[str]) -> "LexicalRows":
        """These rows less those of ``groups``."""
        keep = [i for i, g in enumerate(self.groups) if g not in groups]
        return LexicalRows([self.texts[i] for i in keep], self.labels[keep], [self.groups[i] for i in keep])


def fit_out_of_fold(texts: Sequence[str], y: Sequence[int], groups: Sequence[object],
                    config: LexicalConfig = LexicalConfig(),
                    matrices: tuple[sp.csr_matrix, sp.csr_matrix] | None = None) -> tuple[np.ndarray, LexicalModel]:
    """Each text's lexical score from a model fitted on the other folds (folds by group, so no group leaks),
    and the model fitted on all of them. The texts are hashed once (or ``matrices`` given: see
    :meth:`LexicalModel.matrices`)."""
    y = np.asarray(y, dtype=int)
    whole, cut = matrices if matrices is not None else LexicalModel(config).matrices(texts)
    out = np.zeros(len(y))
    folds = GroupKFold(n_splits=config.folds)
    for train, test in folds.split(np.zeros(len(y)), y, groups=np.asarray([str(g) for g in groups])):
        model = LexicalModel(config).fit_matrices(whole[train], cut[train], y[train])
        out[test] = model.decision_function_matrix(whole[test])
    return out, LexicalModel(config).fit_matrices(whole, cut, y)
