"""How well a score separates machine from human text: AUROC and TPR at low FPR, overall and per stratum.

Users choose a detector by how much machine text it catches while flagging almost no
human text, so besides AUROC we report the true-positive rate at 1% and 0.1% false
positives (the best TPR among thresholds whose FPR does not exceed the target).
Per generator / domain / generation: where a stratum holds both classes (a paired
set such as detect-dev) it is scored on its own; where it holds machine text only
(a generation of a synthetic corpus) its machine texts are scored against all the
human texts.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import mannwhitneyu  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from hygiene.atomic import atomic_open, write_json  # noqa: E402
from hygiene.scoring import MACHINE_SIGN  # noqa: E402

#: false-positive rates at which the TPR is reported
FPRS = (0.01, 0.001)


def tpr_at_fpr(y: np.ndarray, score: np.ndarray, fpr: float) -> float:
    """Highest true-positive rate over thresholds whose false-positive rate is at most ``fpr``."""
    fprs, tprs, _ = roc_curve(y, score)
    return float(tprs[fprs <= fpr].max())


def bootstrap_auroc(y: np.ndarray, score: np.ndarray, n: int = 1000, seed: int = 0) -> np.ndarray:
    """``n`` AUROCs of the set resampled with replacement, human and machine rows each to their own count
    (so every resample holds both): the spread of an AUROC measured on a few hundred texts.

    All resamples at once: the Mann-Whitney U of each resampled pair of rows, over ``n_human x n_machine``.
    """
    y = np.asarray(y, dtype=int)
    s = _finite(score)
    human, machine = s[y == 0], s[y == 1]
    if not len(human) or not len(machine):
        raise ValueError("a bootstrap AUROC needs human and machine rows")
    rng = np.random.default_rng(seed)
    h = human[rng.integers(0, len(human), (n, len(human)))]
    m = machine[rng.integers(0, len(machine), (n, len(machine)))]
    return mannwhitneyu(m, h, axis=1).statistic / (len(human) * len(machine))


def roc_summary(y: np.ndarray, score: np.ndarray) -> dict[str, float | int]:
    """AUROC and TPR at each of :data:`FPRS` for labels ``y`` (1 = machine) and scores (higher = machine).

    Rows with a NaN score count as the least machine-like (a score that cannot be computed flags nothing).
    """
    y = np.asarray(y, dtype=int)
    s = _finite(score)
    out: dict[str, float | int] = {"n_human": int((y == 0).sum()), "n_machine": int((y == 1).sum())}
    if out["n_human"] == 0 or out["n_machine"] == 0:
        return out
    out["auroc"] = float(roc_auc_score(y, s))
    for f in FPRS:
        out[f"tpr_at_{f * 100:g}pct_fpr"] = tpr_at_fpr(y, s, f)
    return out


def evaluate_scores(
    scores: Mapping[str, np.ndarray],
    y: np.ndarray,
    strata: Mapping[str, Sequence[object | None]] | None = None,
) -> dict:
    """ROC summaries of every score, overall and per value of each stratum (see the module docstring).

    Returns ``{"overall": {score: summary}, "by_<stratum>": {value: {score: summary}}}``.
    """
    y = np.asarray(y, dtype=int)
    result: dict = {"overall": {name: roc_summary(y, s) for name, s in scores.items()}}
    for field, values in (strata or {}).items():
        vals = np.array(["" if v is None else str(v) for v in values], dtype=object)
        if not (vals != "").any():
            continue
        per: dict = {}
        for v in sorted(set(vals[vals != ""]), key=_natural_key):
            in_stratum = vals == v
            both = len(np.unique(y[in_stratum])) == 2
            rows = in_stratum if both else (in_stratum & (y == 1)) | (y == 0)
            per[v] = {name: roc_summary(y[rows], np.asarray(s)[rows]) for name, s in scores.items()}
        result[f"by_{field}"] = per
    return result


def _finite(score: np.ndarray) -> np.ndarray:
    """Scores with NaN mapped to the least machine-like value and infinities clipped (for scikit-learn)."""
    big = np.finfo(float).max
    return np.nan_to_num(np.asarray(score, dtype=float), nan=-big, posinf=big, neginf=-big)


def zero_shot_scores(X: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The zero-shot LM scores among the feature columns, each signed so that higher means machine."""
    return {n: MACHINE_SIGN[n] * X[:, i] for i, n in enumerate(names) if MACHINE_SIGN.get(n)}


def _natural_key(v: str) -> tuple:
    """Sort numeric strata (generations) numerically, the rest alphabetically."""
    return (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v)


def plot_roc(scores: Mapping[str, np.ndarray], y: np.ndarray, path: str | os.PathLike, title: str = "ROC") -> None:
    """ROC curves of every score on log-scaled FPR (the low-FPR end is what matters), written as PNG."""
    y = np.asarray(y, dtype=int)
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, s in scores.items():
        s = _finite(s)
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(np.maximum(fpr, 1e-4), tpr, label=f"{name} (AUROC {roc_auc_score(y, s):.3f})")
    for f in FPRS:
        ax.axvline(f, color="grey", lw=0.5, ls=":")
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate (human text flagged)")
    ax.set_ylabel("true-positive rate (machine text flagged)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)


def evaluate_detector(detector, records: Sequence, out_dir: str | os.PathLike | None = None,
                      progress: bool = False, cache: str | os.PathLike | None = None) -> dict:
    """Evaluate a detector and each of its zero-shot scores on labelled records (``LabelledText``).

    Reports the ROC summaries overall and per generator / domain / generation, and what the
    detector's own threshold does (share of human and machine texts flagged). With ``out_dir``,
    writes ``metrics.json`` and ``roc.png`` there.
    """
    texts = [r.text for r in records]
    y = np.array([r.label for r in records], dtype=int)
    X = detector.features(texts, progress=progress, cache=cache)
    p = detector.predict_proba_features(X)[:, 1]
    scores = {"classifier": detector.decision_function_features(X), **zero_shot_scores(X, detector.feature_names)}
    strata = {f: [getattr(r, f) for r in records] for f in ("generator", "domain", "generation")}
    result = evaluate_scores(scores, y, strata)
    flagged = p > detector.threshold_
    domains = np.array([r.domain or "" for r in records], dtype=object)
    result["at_threshold"] = {
        "threshold": detector.threshold_,
        "human_flagged": float(flagged[y == 0].mean()) if (y == 0).any() else None,
        "machine_flagged": float(flagged[y == 1].mean()) if (y == 1).any() else None,
        "human_flagged_by_domain": {
            d: float(flagged[(y == 0) & (domains == d)].mean()) for d in sorted(set(domains[y == 0]) - {""})
        },
    }
    if out_dir is not None:
        out = Path(out_dir)
        write_json(out / "metrics.json", result)
        if len(np.unique(y)) == 2:
            plot_roc(scores, y, out / "roc.png", title=f"{len(y)} texts ({int(y.sum())} machine)")
    return result


def format_table(result: dict, score: str = "classifier") -> str:
    """A plain-text table of AUROC and TPR at 1% / 0.1% FPR: every score overall, then ``score`` per stratum."""
    lines = [f"{'':28} {'AUROC':>7} {'TPR@1%':>7} {'TPR@0.1%':>8} {'n':>7}"]

    def row(label: str, s: dict) -> str:
        def fmt(k: str) -> str:
            return f"{s[k]:.3f}" if k in s else "-"
        return f"{label[:28]:28} {fmt('auroc'):>7} {fmt('tpr_at_1pct_fpr'):>7} {fmt('tpr_at_0.1pct_fpr'):>8} " \
               f"{s['n_human'] + s['n_machine']:>7}"

    for name, s in result["overall"].items():
        lines.append(row(name, s))
    for key, per in result.items():
        if key.startswith("by_"):
            lines.append(f"-- {score}, {key[3:]}")
            lines += [row(str(v), scores[score]) for v, scores in per.items()]
    return "\n".join(lines)
