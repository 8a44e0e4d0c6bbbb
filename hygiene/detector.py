"""The synthetic-text detector: features -> classifier -> calibrated P(machine) -> threshold at a target FPR.

``fit`` holds out a share of the labelled data (by group when groups are given, so
near-duplicates never straddle the split), trains the classifier on the rest, fits
Platt scaling (a logistic map of the classifier's log-odds) on the held-out part and
sets the threshold so that at most ``target_fpr`` of its human texts are flagged.
``calibrate`` redoes the last two steps on other data, e.g. human text the
evaluation never sees. A text is flagged when ``P(machine) > threshold_``.

With a lexical model configured (:mod:`hygiene.lexical`) its score is one more feature:
out of fold for the training rows, from the model fitted on all training rows elsewhere.

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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from safetensors.numpy import load_file
from safetensors.numpy import save as save_safetensors
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from hygiene.atomic import atomic_open, write_json
from hygiene.classifier import ArrayClassifier, ClassifierConfig, fit_classifier
from hygiene.errors import UserInputError
from hygiene.evaluation import roc_summary
from hygiene.features import FeatureConfig, Featurizer
from hygiene.lexical import LexicalConfig, LexicalModel, fit_out_of_fold
from hygiene.lm import LanguageModel, model_fingerprint, resolve_model
from hygiene.paths import models_dir
from hygiene.scoring import ScoringConfig

FORMAT = "hygiene-detector"
#: 2 added the lexical model and the language models' fingerprints; version 1 directories still load
FORMAT_VERSION = 2
_LEXICAL_PREFIX = "lexical/"
_FILES = ("detector.json", "classifier.safetensors")
#: suffixes of files that could only be loaded by unpickling; their presence refuses the directory
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".pt", ".pth", ".npy", ".dill", ".cloudpickle"}
#: label strings -> 0/1 ("synthetic" is what the generational corpora write)
LABELS = {"human": 0, "machine": 1, "synthetic": 1}


class DetectorError(UserInputError):
    """A detector directory that is missing, not a detector, unsafe or tampered with; or unusable input."""


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that defines a detector before it sees data."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    #: hashed n-gram model whose (out-of-fold) score is a feature; None = off
    lexical: LexicalConfig | None = None
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


def threshold_for_fpr(p_human: np.ndarray, target_fpr: float) -> float:
    """Smallest threshold t with ``mean(p_human > t) <= target_fpr`` among the observed scores."""
    p = np.sort(np.asarray(p_human, dtype=float))[::-1]
    if len(p) == 0:
        raise DetectorError("no human texts to set the threshold on")
    allowed = int(np.floor(target_fpr * len(p)))  # flagged human texts the target permits
    return float(p[min(allowed, len(p) - 1)])


class Detector:
    """Machine-text detector with a scikit-learn-like interface over raw texts."""

    def __init__(self, config: DetectorConfig = DetectorConfig(), device: str | None = None,
                 dtype: str | None = "float32", models: dict[str, LanguageModel] | None = None) -> None:
        # float32 on every device by default: the classifier and its threshold were fitted on features
        # scored in float32, and bfloat16 scores on a GPU would shift them (pass dtype for a detector
        # trained otherwise)
        self.config = config
        self.featurizer = Featurizer(config.features, device=device, dtype=dtype, models=models)
        self.classifier_: ArrayClassifier | None = None
        self.lexical_: LexicalModel | None = None
        self.calibration_: tuple[float, float] = (1.0, 0.0)  # P = sigmoid(a * logodds + b)
        self.threshold_: float = 0.5
        self.target_fpr_: float = config.target_fpr
        self.training_: dict[str, Any] = {}
        self.metrics_: dict[str, Any] = {}

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the classifier's input columns: the featurizer's, then ``lexical`` when configured."""
        return self.featurizer.names + (("lexical",) if self.config.lexical is not None else ())

    def base_features(self, texts: Sequence[str], progress: bool = False,
                      cache: str | os.PathLike | None = None) -> np.ndarray:
        """The featurizer's columns for ``texts`` (see :mod:`hygiene.features`; ``cache`` makes it resumable)."""
        return self.featurizer.transform(list(texts), progress=progress, cache=cache)

    def features(self, texts: Sequence[str], progress: bool = False,
                 cache: str | os.PathLike | None = None) -> np.ndarray:
        """The classifier's input for ``texts``: :meth:`base_features` and the fitted lexical model's score."""
        X = self.base_features(texts, progress=progress, cache=cache)
        if self.config.lexical is None:
            return X
        if self.lexical_ is None:
            raise DetectorError("the detector is not fitted")
        return np.column_stack([X, self.lexical_.decision_function(list(texts))])

    # -- training ---------------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], labels: Sequence[int | str], groups: Sequence[Any] | None = None,
            progress: bool = False, summary: dict[str, Any] | None = None,
            cache: str | os.PathLike | None = None) -> "Detector":
        """Featurize labelled texts, then :meth:`fit_features`."""
        X = self.base_features(texts, progress=progress, cache=cache)
        return self.fit_features(X, labels, groups, summary=summary, texts=texts)

    def fit_features(self, X: np.ndarray, labels: Sequence[int | str], groups: Sequence[Any] | None = None,
                     summary: dict[str, Any] | None = None, texts: Sequence[str] | None = None) -> "Detector":
        """Train on one part of (X, labels), calibrate probabilities and threshold on the held-out part.

        ``X`` holds the featurizer's columns (:meth:`base_features`); with a lexical model configured,
        ``texts`` are needed too, and its column is added: out of fold on the training part, from the
        model fitted on the whole training part on the held-out part.
        """
        y = encode_labels(labels)
        if self.config.lexical is not None and texts is None:
            raise DetectorError("a detector with a lexical model is fitted on texts as well as features")
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(self.featurizer.names):
            raise DetectorError(f"expected a feature matrix with {len(self.featurizer.names)} columns, got shape {X.shape}")
        if len(np.unique(y)) < 2:
            raise DetectorError("training needs both human and machine texts")
        idx = np.arange(len(y))
        cfg = self.config
        if groups is not None:
            split = GroupShuffleSplit(n_splits=1, test_size=cfg.calib_fraction, random_state=cfg.seed)
            train, calib = next(split.split(X, y, groups=np.asarray(groups)))
        else:
            train, calib = train_test_split(idx, test_size=cfg.calib_fraction, stratify=y, random_state=cfg.seed)
        if cfg.lexical is not None:
            texts = list(texts)
            train_texts = [texts[i] for i in train]
            fold_groups = np.asarray(groups, dtype=object)[train] if groups is not None else train
            lexical = np.empty(len(y))
            lexical[train], self.lexical_ = fit_out_of_fold(train_texts, y[train], fold_groups, cfg.lexical)
            lexical[calib] = self.lexical_.decision_function([texts[i] for i in calib])
            X = np.column_stack([X, lexical])
        self.classifier_ = fit_classifier(X[train], y[train], cfg.classifier)
        self.calibrate_features(X[calib], y[calib])
        self.training_ = {
            "n_train": {"human": int((y[train] == 0).sum()), "machine": int((y[train] == 1).sum())},
            "n_calib": {"human": int((y[calib] == 0).sum()), "machine": int((y[calib] == 1).sum())},
            "split": "by group" if groups is not None else "stratified by label",
            **(summary or {}),
        }
        return self

    # -- calibration ------------------------------------------------------------------------------
    def calibrate(self, texts: Sequence[str], labels: Sequence[int | str] | None = None,
                  target_fpr: float | None = None, progress: bool = False,
                  domains: Sequence[str] | None = None) -> "Detector":
        """Refit Platt scaling (if both classes are given) and the threshold (on the human texts)."""
        return self.calibrate_features(self.features(texts, progress=progress), labels, target_fpr, domains)

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

    # -- prediction -------------------------------------------------------------------------------
    def decision_function_features(self, X: np.ndarray) -> np.ndarray:
        """Classifier log-odds (before calibration) for a feature matrix."""
        return self._classifier().decision_function(self._check_X(X))

    def predict_proba_features(self, X: np.ndarray) -> np.ndarray:
        """Calibrated ``[P(human), P(machine)]`` for a feature matrix, shape (n, 2)."""
        p = self._calibrated(self.decision_function_features(X))
        return np.column_stack([1 - p, p])

    def predict_proba(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Calibrated ``[P(human), P(machine)]`` for each text, shape (n, 2)."""
        return self.predict_proba_features(self.features(texts, progress=progress))

    def predict(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """1 where the text is flagged as machine-made (``P(machine) > threshold_``), else 0."""
        return (self.predict_proba(texts, progress=progress)[:, 1] > self.threshold_).astype(int)

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

    def model_fingerprints(self) -> dict[str, str]:
        """SHA-256 of each language model the features use, by the name the configuration gives it."""
        f = self.config.features
        names = {n for n in (f.lm, f.sampler, f.observer, f.performer, f.contrast_lm) if n is not None}
        names -= self.featurizer.injected
        return {n: model_fingerprint(resolve_model(n)) for n in sorted(names) if Path(resolve_model(n)).is_dir()}

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the detector directory (JSON + safetensors + manifest of SHA-256 checksums)."""
        clf = self._classifier()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        arrays = dict(clf.arrays)
        if self.lexical_ is not None:
            arrays.update({_LEXICAL_PREFIX + k: v for k, v in self.lexical_.to_arrays().items()})
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "config": dataclasses.asdict(self.config),
            "models": self.model_fingerprints(),
            "feature_names": list(self.feature_names),
            "classifier": {"kind": clf.kind, "meta": clf.meta},
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_detector_path() -> Path:
    """Where the shipped detector lives: ``models_dir()/detector``."""
    return models_dir() / "detector"


def load_detector(path: str | os.PathLike | None = None, device: str | None = None, dtype: str | None = "float32",
                  models: dict[str, LanguageModel] | None = None) -> Detector:
    """Load a detector directory (default: the shipped one), refusing pickles and tampered files."""
    root = Path(path) if path is not None else default_detector_path()
    if not root.is_dir():
        raise DetectorError(f"{root} is not a detector directory (expected a folder with manifest.json)")
    unsafe = sorted(p.name for p in root.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES)
    if unsafe:
        raise DetectorError(f"{root} holds pickle-like files ({', '.join(unsafe)}); detectors never load pickles")
    manifest = _read_json(root / "manifest.json", root)
    if manifest.get("format") != FORMAT or set(manifest.get("files", {})) != set(_FILES):
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
        det = Detector(config, device=device, dtype=dtype, models=models)
        lexical = {k[len(_LEXICAL_PREFIX):]: v for k, v in arrays.items() if k.startswith(_LEXICAL_PREFIX)}
        arrays = {k: v for k, v in arrays.items() if not k.startswith(_LEXICAL_PREFIX)}
        if config.lexical is not None:
            det.lexical_ = LexicalModel.from_arrays(config.lexical, lexical)
        det.classifier_ = ArrayClassifier(header["classifier"]["kind"], arrays, header["classifier"]["meta"])
        det.calibration_ = (float(header["calibration"]["a"]), float(header["calibration"]["b"]))
        det.threshold_ = float(header["threshold"])
        det.target_fpr_ = float(header["target_fpr"])
        det.training_ = header.get("training", {})
        det.metrics_ = header.get("metrics", {})
    except (KeyError, TypeError, ValueError) as exc:
        raise DetectorError(f"{root}: malformed detector ({exc})") from exc
    if list(det.feature_names) != header["feature_names"]:
        raise DetectorError(f"{root}: feature names do not match the configuration")
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
    return DetectorConfig(
        features=FeatureConfig(**feats),
        classifier=ClassifierConfig(**d["classifier"]),
        lexical=LexicalConfig(**lexical) if lexical is not None else None,
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
) -> Detector:
    """Fit a detector on labelled JSONL corpora; optionally reset its threshold on the human pool's calib split.

    ``human_calibration`` names human-pool sources (e.g. ``("web", "books")``) whose calib-split
    texts set the threshold, so the target FPR holds on real human text rather than on the
    corpora's human side only.
    """
    from hygiene.labelled import human_pool, read_many

    records = read_many(corpora)
    labels = np.array([r.label for r in records])
    groups = [r.group if r.group is not None else f"row:{i}" for i, r in enumerate(records)]
    det = Detector(config, device=device, dtype=dtype)
    summary = {
        "corpora": [str(p) for p in corpora],
        "n_texts": {"human": int((labels == 0).sum()), "machine": int((labels == 1).sum())},
        "generations": sorted({r.generation for r in records if r.generation is not None}),
        "generators": sorted({r.generator for r in records if r.generator is not None})[:50],
        "domains": sorted({r.domain for r in records if r.domain is not None}),
    }
    det.fit([r.text for r in records], labels, groups, progress=progress, summary=summary, cache=cache)
    if human_calibration:
        pool = human_pool("calib", sources=human_calibration)
        det.calibrate([r.text for r in pool], progress=progress, domains=[r.domain for r in pool])  # per source
        det.training_["threshold_set_on"] = {"human_pool_split": "calib", "sources": list(human_calibration),
                                             "n_texts": len(pool)}
    return det
