"""Pickle-free binary classifiers: fitted with scikit-learn, stored and applied as plain arrays.

A fitted model is reduced to named float/int arrays (saved as safetensors) plus a
small JSON header, and its decision function is recomputed from those arrays with
vectorised numpy, so loading never runs code from a file. Two kinds:

- ``logistic``: median imputation, standardisation, L2 logistic regression;
- ``hgb``: scikit-learn's HistGradientBoostingClassifier (NaN-aware); its trees are
  flattened into node arrays and walked level by level for all rows at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

KINDS = ("hgb", "logistic")


@dataclass(frozen=True)
class ClassifierConfig:
    """Which classifier and its hyper-parameters."""

    kind: str = "hgb"
    #: boosting rounds, learning rate and leaf size: scikit-learn defaults, with early stopping on 10% of the data
    max_iter: int = 300
    learning_rate: float = 0.1
    min_samples_leaf: int = 20
    #: inverse L2 strength of the logistic regression (scikit-learn default)
    C: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown classifier {self.kind!r}; choose from {KINDS}")


@dataclass
class ArrayClassifier:
    """A fitted classifier as arrays: ``decision_function`` gives the log-odds of class 1 (machine)."""

    kind: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Log-odds of class 1 for each row of ``X``."""
        X = np.asarray(X, dtype=float)
        if self.kind == "logistic":
            a = self.arrays
            Z = (np.where(np.isnan(X), a["median"], X) - a["mean"]) / a["scale"]
            return Z @ a["coef"] + a["intercept"][0]
        return _tree_ensemble_decision(self.arrays, X)


def fit_classifier(X: np.ndarray, y: np.ndarray, config: ClassifierConfig = ClassifierConfig()) -> ArrayClassifier:
    """Fit the configured classifier on features ``X`` and 0/1 labels ``y``; return it as arrays."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=int)
    if config.kind == "logistic":
        median = np.nanmedian(X, axis=0)
        median = np.where(np.isnan(median), 0.0, median)
        Xi = np.where(np.isnan(X), median, X)
        mean, scale = Xi.mean(0), Xi.std(0)
        scale = np.where(scale > 0, scale, 1.0)
        lr = LogisticRegression(C=config.C, max_iter=2000, random_state=config.seed).fit((Xi - mean) / scale, y)
        arrays = {
            "median": median, "mean": mean, "scale": scale,
            "coef": lr.coef_[0].astype(float), "intercept": lr.intercept_.astype(float),
        }
        return ArrayClassifier("logistic", arrays)
    hgb = HistGradientBoostingClassifier(
        max_iter=config.max_iter, learning_rate=config.learning_rate, min_samples_leaf=config.min_samples_leaf,
        early_stopping=True, random_state=config.seed,
    ).fit(X, y)
    return _hgb_to_arrays(hgb)


def _hgb_to_arrays(hgb: HistGradientBoostingClassifier) -> ArrayClassifier:
    """Flatten the fitted trees into global node arrays (children re-indexed into the flat table).

    Reads the fitted trees (``_predictors``, ``_baseline_prediction``): scikit-learn keeps no public
    export of them; the exact-equality test with ``decision_function`` guards this across versions.
    """
    nodes, roots = [], []
    offset = 0
    for (tree,) in hgb._predictors:  # one tree per round for binary classification
        n = tree.nodes
        if n["is_categorical"].any():
            raise ValueError("categorical splits are not supported")
        n = n.copy()
        roots.append(offset)
        n["left"] = np.where(n["is_leaf"] == 1, 0, n["left"].astype(np.int64) + offset)
        n["right"] = np.where(n["is_leaf"] == 1, 0, n["right"].astype(np.int64) + offset)
        nodes.append(n)
        offset += len(n)
    flat = np.concatenate(nodes)
    arrays = {
        "value": flat["value"].astype(float),
        "feature": flat["feature_idx"].astype(np.int64),
        "threshold": flat["num_threshold"].astype(float),
        "missing_left": flat["missing_go_to_left"].astype(np.int64),
        "left": flat["left"].astype(np.int64),
        "right": flat["right"].astype(np.int64),
        "is_leaf": flat["is_leaf"].astype(np.int64),
        "roots": np.array(roots, dtype=np.int64),
        "baseline": np.asarray(hgb._baseline_prediction, dtype=float).reshape(1),
    }
    return ArrayClassifier("hgb", arrays, {"n_trees": len(roots)})


def _tree_ensemble_decision(a: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """Sum of leaf values over all trees: every (row, tree) pair steps down one level at a time,
    and pairs that reached a leaf drop out of the working set."""
    n_trees = len(a["roots"])
    rows = np.repeat(np.arange(len(X)), n_trees)
    node = np.tile(a["roots"], len(X))
    active = np.flatnonzero(a["is_leaf"][node] == 0)
    while active.size:
        nd = node[active]
        x = X[rows[active], a["feature"][nd]]
        # scikit-learn's rule: NaN follows the learned missing direction, else x <= threshold goes left
        go_left = np.where(np.isnan(x), a["missing_left"][nd] == 1, x <= a["threshold"][nd])
        node[active] = np.where(go_left, a["left"][nd], a["right"][nd])
        active = active[a["is_leaf"][node[active]] == 0]
    return a["value"][node].reshape(len(X), n_trees).sum(1) + a["baseline"][0]
