"""Train the recipe's detector and measure it on text that neither training nor the threshold saw.

Measures (each written to ``evaluation.json`` and summarised in ``ablation.md``):

- ``detect-chat``: AUROC and TPR at 1% FPR on the held-out groups; per generator variant (plain,
  polish, paraphrase, back-translation, evasive prompt, human prefix, truncated) against all
  held-out human texts;
- ``leave-one-source-out``: for each of detect-chat's repositories, the classifier and the lexical
  model refitted without that repository's training rows, scored on its held-out rows (against all
  held-out human texts where it has none of its own), with a bootstrap 95% interval for each and for
  their mean;
- ``leave-one-family-out``: the same for each generator family's machine rows;
- ``first-sentence-removed``: the held-out sample scored without its first sentence (templated
  openings gone);
- ``attacks``: held-out machine texts with homoglyphs, zero-width characters, odd whitespace or
  typos, against the clean human texts;
- ``corpus``: the generational corpus's test split (per generation); ``detect-dev``: held-out
  groups; ``human-flagged``: share of each human source's eval texts above the threshold.

The ablation refits the classifier on each feature family alone (and all of them) over all
training rows, with the lexical column out of fold; the shipped detector's own classifier holds a
share of groups out for Platt scaling. The contrast LM is not refitted per left-out source: it saw
every detect-chat repository's training groups (never their held-out groups), which the figures state;
:func:`leave_repositories_out` measures chosen repositories with a contrast LM fine-tuned without them
(``benchmarks/leave_out_machine_lm.py`` fine-tunes it).
"""
from __future__ import annotations

import dataclasses
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Sequence

import numpy as np

from hygiene.atomic import atomic_open, write_json
from hygiene.classifier import fit_classifier
from hygiene.detector import Detector, threshold_for_fpr
from hygiene.errors import UserInputError
from hygiene.evaluation import bootstrap_auroc, roc_summary
from hygiene.features import TEXT_STATS
from hygiene.labelled import LabelledText
from hygiene.lexical import LexicalModel, drop_first_sentence, fit_out_of_fold
from hygiene.lm import select_device
from hygiene.recipe import (TYPO_PART, DetectorRecipe, RecipeData, assemble, check_machine_lm, held_out_repositories,
                            repository)
from hygiene.scoring import CONTRAST_FEATURES, LM_FEATURES, TOKEN_STATS

#: feature families of the ablation, by column name (a score over the body belongs with the score)
FAMILIES: dict[str, Callable[[str], bool]] = {
    "reference LM scores": lambda n: n.removeprefix("body_") in LM_FEATURES + TOKEN_STATS,
    "hidden states": lambda n: n.startswith("hidden"),
    "machine LM (ratio, Binoculars)": lambda n: n.removeprefix("body_") in CONTRAST_FEATURES + ("binoculars",),
    "lexical n-grams": lambda n: n == "lexical",
    "text statistics": lambda n: n in TEXT_STATS,
}
#: generator families left out one at a time (by the model name before any ``:variant``)
GENERATOR_FAMILIES: dict[str, tuple[str, ...]] = {
    "GPT-3.5": ("gpt-3.5", "text-davinci-003"),
    "GPT-4": ("gpt-4",),
    "Claude": ("claude",),
    "Llama": ("llama", "vicuna"),
    "PaLM/Gemini": ("palm", "gemini"),
}
#: machine-text variants (the ``:variant`` suffix of ``generator``) by kind
VARIANTS: dict[str, tuple[str, ...]] = {
    "polish": ("polish", "rewrite", "rephrase", "simplify", "self-edit", "humanize"),
    "paraphrase": ("dipper-paraphrase",),
    "back-translation": ("back-translation",),
    "evasive prompt": ("prompt-", "outfox-adversarial"),
    "human prefix": ("human-prefix", "fusion-with-human"),
    "truncated": ("max-100-tokens",),
}
#: Latin letters and the Cyrillic look-alikes an evader swaps in
_HOMOGLYPHS = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441", "x": "\u0445",
               "y": "\u0443", "i": "\u0456", "A": "\u0410", "E": "\u0415", "O": "\u041e", "T": "\u0422"}
_ODD_SPACES = ("\u00a0", "\u2003", "\u2009", "\u3000", "  ", "\n")


def family_of(generator: str | None) -> str | None:
    """The generator family of a machine text, or None for the rest (Mistral, Qwen, ...)."""
    model = (generator or "").split(":")[0].lower()
    for fam, prefixes in GENERATOR_FAMILIES.items():
        if model.startswith(prefixes):
            return fam
    return None


def variant_of(generator: str | None) -> str:
    """``plain`` for a plain generation, else the kind of variant (see :data:`VARIANTS`)."""
    if not generator or ":" not in generator:
        return "plain"
    suffix = generator.split(":", 1)[1]
    return next((kind for kind, keys in VARIANTS.items() if any(k in suffix for k in keys)), "other")


# -- attacks -----------------------------------------------------------------------------------------
def attack(text: str, kind: str, rng: random.Random, rate: float = 0.3) -> str:
    """``text`` as an evader would post it: ``homoglyph``, ``zero-width``, ``whitespace`` or ``typo``."""
    if kind == "homoglyph":
        return "".join(_HOMOGLYPHS[c] if c in _HOMOGLYPHS and rng.random() < rate else c for c in text)
    if kind == "zero-width":
        return "".join(c + "\u200b" if c.isalpha() and rng.random() < rate else c for c in text)
    if kind == "whitespace":
        return "".join(rng.choice(_ODD_SPACES) if c == " " and rng.random() < rate else c for c in text)
    if kind == "typo":  # swap two adjacent letters in about 1 word in 10
        words = text.split(" ")
        for i, w in enumerate(words):
            if len(w) > 3 and rng.random() < rate / 3:
                j = rng.randrange(len(w) - 1)
                words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        return " ".join(words)
    raise ValueError(f"unknown attack {kind!r}")


ATTACKS = ("homoglyph", "zero-width", "whitespace", "typo")
#: held-out detect-chat texts scored without their first sentence and under each attack
PROBE_TEXTS = 600


# -- the measurement ---------------------------------------------------------------------------------
@dataclass
class _Matrix:
    """Features of one set of records: featurizer columns plus a lexical column."""

    records: list[LabelledText]
    X: np.ndarray  # featurizer columns
    #: the lexical model's score (fitted on all training rows), filled in once
    lexical: np.ndarray | None = None

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.records]

    @property
    def y(self) -> np.ndarray:
        return np.array([r.label for r in self.records], dtype=int)


def _rows_in(cache: Path) -> int:
    """Rows in a feature cache (its lines; 0 when there is none)."""
    if not cache.is_file():
        return 0
    with cache.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def train_and_measure(recipe: DetectorRecipe, progress: bool = True, ablation: bool = True,
                      command: str = "hygiene train-detector --recipe models/detector/recipe.yaml"
                      ) -> tuple[Detector, dict]:
    """Fit the recipe's detector, save it to ``recipe.out`` with its figures and card, and return both."""
    check_machine_lm(recipe)
    t0 = time.perf_counter()
    work = Path(recipe.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "features.jsonl"
    cached_before = _rows_in(cache)
    data = assemble(recipe)
    det = Detector(recipe.detector)
    log = _logger(progress)

    def featurize(records: Sequence[LabelledText]) -> np.ndarray:
        return det.base_features([r.text for r in records], progress=progress, cache=cache)

    train = _Matrix(data.train, featurize(data.train))
    groups = [str(r.group) if r.group is not None else f"row:{i}" for i, r in enumerate(data.train)]
    det.fit_features(train.X, train.y, groups, texts=train.texts, lexical_extra=data.lexical_rows(data.lexical_extra),
                     summary={"recipe": data.summary})
    threshold = _Matrix(data.threshold, featurize(data.threshold))
    threshold.lexical = det.lexical_.decision_function(threshold.texts)
    det.calibrate_features(np.column_stack([threshold.X, threshold.lexical]),
                           domains=[r.domain for r in data.threshold])
    det.training_["threshold_set_on"] = {"sources": sorted({r.domain or "" for r in data.threshold}),
                                         "n_texts": len(data.threshold), "target_holds": "for each source on its own"}
    if det.first_pass_ is not None:  # the band at the final threshold, on every held-out row training had
        fit_band(det, data, train, groups, threshold)
    det.save(recipe.out)
    log(f"detector -> {recipe.out}: threshold {det.threshold_:.4f} ({time.perf_counter() - t0:.0f} s)")

    evals = {name: _Matrix(rows, featurize(rows)) for name, rows in data.eval.items()}
    names = det.feature_names
    lexical_all = det.lexical_
    full_train, lexical = _with_lexical_out_of_fold(recipe, data, train.X)
    chat = evals["detect-chat"]
    sample = random.Random(recipe.seed).sample(range(len(chat.records)), min(PROBE_TEXTS, len(chat.records)))
    probes = _probes(det, chat, sample, recipe.seed, featurize)

    for m in [*evals.values(), *probes.values()]:
        m.lexical = lexical_all.decision_function(m.texts)
    results: dict = {"threshold": det.threshold_, "data": data.summary}
    variants = {"all features": np.ones(len(names), dtype=bool)}
    if ablation:
        variants.update({fam: np.array([pick(n) for n in names]) for fam, pick in FAMILIES.items()})
    for label, cols in variants.items():
        if not cols.any():
            continue
        log(f"measuring: {label} ({int(cols.sum())} columns)")
        # the leave-one-out refits (17 classifiers and lexical models) for all features only
        results[label] = _measure(recipe, data, full_train, threshold, evals, probes, cols, lexical,
                                  loo=label == "all features", log=log)
    # the shipped detector itself (its classifier, Platt map and threshold) on each set
    for name, m in evals.items():
        results[name] = {"at_threshold": at_threshold(det, np.column_stack([m.X, m.lexical]), m.y,
                                                      [r.domain for r in m.records])}
    if det.first_pass_ is not None:
        results["cascade"] = {name: cascade_agreement(det, np.column_stack([m.X, m.lexical]), m.y)
                              for name, m in evals.items()}
    results["seconds"] = time.perf_counter() - t0
    results["build"] = {"cpu_cores": os.cpu_count(), "device": str(select_device(det.featurizer.device)),
                        "texts_scored": _rows_in(cache) - cached_before}
    write_json(Path(recipe.out) / "evaluation.json", results)
    with atomic_open(Path(recipe.out) / "ablation.md") as fh:
        fh.write(ablation_table(results))
    write_card(recipe, det, results, Path(recipe.out) / "CARD.md", command)
    return det, results


def _with_lexical_out_of_fold(recipe: DetectorRecipe, data: RecipeData, X: np.ndarray) -> tuple[np.ndarray, tuple]:
    """The training rows' features with the lexical score out of fold, and what the leave-out refits of the
    lexical model read: every training row, then the rows only it reads, and their hashed n-gram matrices."""
    pool = data.train + data.lexical_extra
    rows = data.lexical_rows(data.train) + data.lexical_rows(data.lexical_extra)
    matrices = LexicalModel(recipe.detector.lexical).matrices(rows.texts)
    oof, _ = fit_out_of_fold(rows.texts, rows.labels, rows.groups, recipe.detector.lexical, matrices=matrices)
    return np.column_stack([X, oof[: len(data.train)]]), (pool, rows, matrices)


def leave_repositories_out(recipe: DetectorRecipe, repositories: Collection[str], contrast_lm: str | None = None,
                           cache: Path | None = None, progress: bool = True) -> dict:
    """Held-out AUROC with each of detect-chat's ``repositories`` left out of the classifier and the lexical
    model, as a build measures it. A build's machine LM read every repository's training groups; given
    ``contrast_lm``, a machine LM fine-tuned without these repositories, in its place (and as Binoculars'
    performer where the machine LM is), the figures are of writing no model saw."""
    missing = sorted(set(repositories) - held_out_repositories(recipe))
    if missing:
        raise UserInputError(f"not a detect-chat repository with held-out texts: {', '.join(missing)}")
    data = assemble(recipe)
    f = recipe.detector.features
    if contrast_lm is not None:
        f = dataclasses.replace(f, contrast_lm=contrast_lm,
                                performer=contrast_lm if f.performer == f.contrast_lm else f.performer)
    det = Detector(dataclasses.replace(recipe.detector, features=f))
    cache = cache or Path(recipe.work) / "features.jsonl"

    def featurize(records: Sequence[LabelledText]) -> np.ndarray:
        return det.base_features([r.text for r in records], progress=progress, cache=cache)

    y = np.array([r.label for r in data.train], dtype=int)
    full_train, lexical = _with_lexical_out_of_fold(recipe, data, featurize(data.train))
    chat = _Matrix(data.eval["detect-chat"], featurize(data.eval["detect-chat"]))
    chat_whole = LexicalModel(recipe.detector.lexical).transform(chat.texts)
    return _leave_out(data, full_train, y, np.ones(full_train.shape[1], dtype=bool), recipe.detector.classifier, recipe,
                      chat, chat_whole, lexical, lambda r: repository(r) if repository(r) in repositories else None,
                      _logger(progress))


def fit_band(det: Detector, data: RecipeData, train: _Matrix, groups: list[str], threshold: _Matrix) -> None:
    """The cascade's band at the final threshold, on every held-out row training had (the calibration
    groups and the threshold set), its bound holding for each data set on its own; misspelt copies of
    training rows (:data:`~hygiene.recipe.TYPO_PART`) teach the classifier and are no data set here."""
    _, calib = det.split(train.y, groups)
    calib = np.array([i for i in calib if data.train_parts[i] != TYPO_PART], dtype=int)
    calib_lexical = det.lexical_.decision_function([train.texts[i] for i in calib])
    X = np.vstack([np.column_stack([train.X[calib], calib_lexical]), np.column_stack([threshold.X, threshold.lexical])])
    sources = [data.train_parts[i] for i in calib] + data.threshold_parts
    det.fit_cascade(X, sources)


def at_threshold(det: Detector, X: np.ndarray, y: np.ndarray, domains: Sequence[str | None] = ()) -> dict:
    """What the shipped detector flags of a set: shares of its human and machine texts above the threshold
    (and of each domain's human texts)."""
    flagged = det.predict_proba_features(X)[:, 1] > det.threshold_
    dom = np.array([d or "" for d in domains], dtype=object) if len(domains) else np.full(len(y), "", dtype=object)
    return {"threshold": det.threshold_,
            "human_flagged_by_domain": {d: float(flagged[(y == 0) & (dom == d)].mean())
                                        for d in sorted(set(dom[y == 0]) - {""})},
            "human_flagged": float(flagged[y == 0].mean()) if (y == 0).any() else None,
            "machine_flagged": float(flagged[y == 1].mean()) if (y == 1).any() else None,
            "n_human": int((y == 0).sum()), "n_machine": int((y == 1).sum())}


def cascade_agreement(det: Detector, X: np.ndarray, y: np.ndarray) -> dict:
    """The cascade against scoring every row with every feature: the share of rows its first pass settles,
    the share whose decision differs, and both AUROCs."""
    full = det.predict_proba_features(X)[:, 1]
    p, settled = det.cascade_proba_features(X)
    out = {"n": len(y), "settled": float(settled.mean()),
           "decisions_differ": float(np.mean((p > det.threshold_) != (full > det.threshold_)))}
    if len(np.unique(y)) == 2:
        out["auroc_full"], out["auroc_cascade"] = roc_summary(y, full)["auroc"], roc_summary(y, p)["auroc"]
        out["auroc_drop"] = out["auroc_full"] - out["auroc_cascade"]
    return out


def _probes(det: Detector, chat: _Matrix, sample: list[int], seed: int, featurize) -> dict[str, _Matrix]:
    """The held-out sample as scored: clean, without its first sentence, and under each attack (machine rows)."""
    rows = [chat.records[i] for i in sample]
    out = {"clean": _Matrix(rows, chat.X[sample])}
    cut = [dataclasses.replace(r, text=drop_first_sentence(r.text)) for r in rows]
    out["first-sentence-removed"] = _Matrix(cut, featurize(cut))
    for kind in ATTACKS:
        rng = random.Random(f"{seed}:{kind}")
        hit = [dataclasses.replace(r, text=attack(r.text, kind, rng)) if r.label == 1 else r for r in rows]
        out[kind] = _Matrix(hit, featurize(hit))
    return out


def _measure(recipe: DetectorRecipe, data: RecipeData, full_train: np.ndarray, threshold: _Matrix,
             evals: dict[str, _Matrix], probes: dict[str, _Matrix], cols: np.ndarray, lexical: tuple,
             loo: bool, log: Callable[[str], None]) -> dict:
    """Every measure for a classifier refitted on the columns ``cols`` of all training rows."""
    y = np.array([r.label for r in data.train], dtype=int)
    cfg = recipe.detector.classifier
    clf = fit_classifier(full_train[:, cols], y, cfg)

    def score(m: _Matrix) -> np.ndarray:
        return clf.decision_function(np.column_stack([m.X, m.lexical])[:, cols])

    # threshold on the decision function: per source of human text, the highest of their 1% points
    s_thr = score(threshold)
    dom = np.array([r.domain or "" for r in threshold.records], dtype=object)
    thr = max(threshold_for_fpr(s_thr[dom == d], recipe.detector.target_fpr) for d in sorted(set(dom)))
    out: dict = {}
    scores = {name: score(m) for name, m in evals.items()}
    chat, s_chat = evals["detect-chat"], scores["detect-chat"]
    out["detect-chat"] = roc_summary(chat.y, s_chat)
    human = chat.y == 0
    out["variants"] = {}
    for kind in ["plain", *VARIANTS, "other"]:
        rows = np.array([r.label == 1 and variant_of(r.generator) == kind for r in chat.records])
        if rows.any():
            out["variants"][kind] = roc_summary(chat.y[rows | human], s_chat[rows | human])
    clean = roc_summary(probes["clean"].y, score(probes["clean"]))
    out["probes"] = {"clean": clean}
    for kind, m in probes.items():
        if kind != "clean":
            s = roc_summary(m.y, score(m))
            out["probes"][kind] = {**s, "auroc_drop": clean["auroc"] - s["auroc"]}
    corpus = evals["corpus-test"]
    out["corpus"] = roc_summary(corpus.y, scores["corpus-test"])
    out["corpus_by_generation"] = {
        g: roc_summary(corpus.y[(corpus.y == 0) | gen], scores["corpus-test"][(corpus.y == 0) | gen])
        for g in sorted({r.generation for r in corpus.records if r.generation})
        for gen in [np.array([r.generation == g for r in corpus.records])]}
    out["detect-dev"] = roc_summary(evals["detect-dev"].y, scores["detect-dev"])
    if "simulator-pages" in evals:
        out["simulator-pages"] = roc_summary(evals["simulator-pages"].y, scores["simulator-pages"])
    he = evals["human-eval"]
    hd = np.array([r.domain or "" for r in he.records], dtype=object)
    out["human_flagged"] = {d: float(np.mean(scores["human-eval"][hd == d] > thr)) for d in sorted(set(hd))}
    out["machine_flagged_detect_chat"] = float(np.mean(s_chat[chat.y == 1] > thr))
    if loo:
        repos = {repository(r) for r in chat.records}
        chat_whole = LexicalModel(recipe.detector.lexical).transform(chat.texts)
        out["leave-one-source-out"] = _leave_out(
            data, full_train, y, cols, cfg, recipe, chat, chat_whole, lexical,
            lambda r: repository(r) if repository(r) in repos else None, log)
        out["leave-one-family-out"] = _leave_out(
            data, full_train, y, cols, cfg, recipe, chat, chat_whole, lexical,
            lambda r: family_of(r.generator) if r.label == 1 else None, log)
    return out


def _leave_out(data: RecipeData, full_train: np.ndarray, y: np.ndarray, cols: np.ndarray, cfg, recipe: DetectorRecipe,
               chat: _Matrix, chat_whole, lexical: tuple, key: Callable[[LabelledText], str | None],
               log: Callable[[str], None]) -> dict:
    """Held-out AUROC on each value of ``key`` (a detect-chat repository, or a generator family) with the
    training rows of that value left out of the classifier and the lexical model; scored on the held-out
    rows of that value and their own human texts, or all held-out human texts where they have none."""
    values = sorted({key(r) for r in chat.records if key(r) is not None})
    out: dict = {}
    boots: dict[str, np.ndarray] = {}  # bootstrap AUROCs of each value, for the intervals
    pool, lexical_rows, (whole, cut) = lexical
    for v in values:
        drop = np.array([key(r) == v for r in data.train])
        drop_pool = np.array([key(r) == v for r in pool])
        lex = LexicalModel(recipe.detector.lexical).fit_matrices(whole[~drop_pool], cut[~drop_pool],
                                                                 lexical_rows.labels[~drop_pool])
        clf = fit_classifier(full_train[~drop][:, cols], y[~drop], cfg)
        own = np.array([key(r) == v for r in chat.records])
        has_human = (own & (chat.y == 0)).any()
        rows = own if has_human else own | (chat.y == 0)
        X = np.column_stack([chat.X[rows], lex.decision_function_matrix(chat_whole[rows])])
        s = clf.decision_function(X[:, cols])
        out[v] = {**roc_summary(chat.y[rows], s), "against": "own human texts" if has_human else "all held-out human texts"}
        if "auroc" in out[v]:
            boots[v] = bootstrap_auroc(chat.y[rows], s, seed=recipe.seed + len(boots))
            out[v]["auroc_ci95"] = np.percentile(boots[v], [2.5, 97.5]).tolist()
        log(f"  left out {v}: AUROC {out[v].get('auroc', float('nan')):.3f}")
    aucs = [r["auroc"] for r in out.values() if "auroc" in r]
    out["_summary"] = {"mean_auroc": float(np.mean(aucs)), "min_auroc": float(np.min(aucs)),
                       # each value resampled on its own; the interval of the mean over them
                       "mean_auroc_ci95": np.percentile(np.mean(list(boots.values()), axis=0), [2.5, 97.5]).tolist()
                       } if aucs else {}
    return out


def _logger(progress: bool) -> Callable[[str], None]:
    return (lambda msg: print(msg, flush=True)) if progress else (lambda msg: None)


# -- the table a person reads ------------------------------------------------------------------------
def ablation_table(results: dict) -> str:
    """Markdown: one row per feature family (alone) and all features, one column per measure."""
    head = ("| features | detect-chat AUROC | TPR at 1% FPR | leave-one-source-out mean / min | "
            "leave-one-family-out min | plain | first sentence removed (drop) | worst attack drop | "
            "corpus AUROC | detect-dev AUROC | simulator pages AUROC | most human flagged |")
    lines = [head, "|" + "---|" * 12]
    for label, r in results.items():
        if not isinstance(r, dict) or "probes" not in r:
            continue
        loso = r.get("leave-one-source-out", {}).get("_summary", {})
        logo = r.get("leave-one-family-out", {}).get("_summary", {})
        first = r["probes"].get("first-sentence-removed", {})
        worst = max((v["auroc_drop"] for k, v in r["probes"].items() if k in ATTACKS), default=float("nan"))
        flagged = max(r["human_flagged"].items(), key=lambda kv: kv[1])
        lines.append(
            f"| {label} | {r['detect-chat']['auroc']:.3f} | {r['detect-chat']['tpr_at_1pct_fpr']:.3f} | "
            f"{loso.get('mean_auroc', float('nan')):.3f} / {loso.get('min_auroc', float('nan')):.3f} | "
            f"{logo.get('min_auroc', float('nan')):.3f} | {r['variants'].get('plain', {}).get('auroc', float('nan')):.3f} | "
            f"{first.get('auroc', float('nan')):.3f} ({first.get('auroc_drop', float('nan')):+.3f}) | {worst:+.3f} | "
            f"{r['corpus']['auroc']:.4f} | {r['detect-dev']['auroc']:.3f} | "
            f"{r.get('simulator-pages', {}).get('auroc', float('nan')):.3f} | {flagged[1]:.1%} ({flagged[0]}) |")
    return "\n".join(lines) + "\n"


def _build_conditions(build: dict | None, cache: str) -> str:
    """Where and how a build ran, as the card says it: cores, device, texts the language models scored."""
    if build is None:
        return "(scoring, fitting, the ablation and the leave-one-out refits)"
    where = f"on {build['cpu_cores']} CPU cores" + (f" and {build['device']}" if build["device"] != "cpu" else "")
    scored = build["texts_scored"]
    return (f"{where} (fitting, the ablation and the leave-one-out refits), "
            + (f"the language models scoring {scored:,} texts and reading the others' features from `{cache}`"
               if scored else f"every text's features already in `{cache}`"))


def write_card(recipe: DetectorRecipe, det: Detector, results: dict, path: Path, command: str) -> None:
    """``CARD.md``: what the detector is, the data it saw, the command that remakes it, and every measure."""
    full = results["all features"]
    data = results["data"]
    lexical_only = {k: v for k, v in data.get("lexical_only", {}).items() if v["human"] or v["machine"]}
    f = det.config.features

    def fig(s: dict, key: str = "auroc", fmt: str = ".3f") -> str:
        return format(s[key], fmt) if key in s else "-"

    def ci(s: dict, key: str = "auroc_ci95") -> str:
        return f"{s[key][0]:.3f}-{s[key][1]:.3f}" if key in s else "-"

    def table(rows: dict, head: str) -> list[str]:
        rows = {k: s for k, s in rows.items() if not k.startswith("_")}
        interval = any("auroc_ci95" in s for s in rows.values())  # measured for the leave-one-out rows
        out = [f"| {head} | AUROC |{' 95% interval |' * interval} TPR at 1% FPR | machine / human texts |",
               "|---|---|---|---|" + "---|" * interval]
        for k, s in rows.items():
            out.append(f"| {k} | {fig(s)} |{f' {ci(s)} |' * interval} {fig(s, 'tpr_at_1pct_fpr')} | "
                       f"{s.get('n_machine', '-')} / {s.get('n_human', '-')} |")
        return out

    train = data["train"]
    loso = full["leave-one-source-out"]["_summary"]
    lines = [
        f"# {recipe.title}",
        "",
        *([recipe.about.strip(), ""] if recipe.about.strip() else []),
        f"Gradient-boosted trees (`{det.config.classifier.kind}`) over {len(det.feature_names)} features of a text, "
        "Platt-calibrated, with a threshold per source of human text. Stored as JSON + safetensors (no pickle); "
        "the language models it scores with are pinned by SHA-256.",
        "",
        f"- the human reference LM (`{f.lm}`): zero-shot scores (log-likelihood, log-rank, entropy, LRR, GLTR "
        "buckets, Fast-DetectGPT), their per-token spread and quantiles, hidden states of the middle and last "
        "layer averaged over the text;",
        f"- the machine LM (`{f.contrast_lm}`, the reference LM fine-tuned on machine text): the per-token "
        "log-likelihood ratio against the reference LM (mean, spread, quantiles), its own log-likelihood and "
        f"entropy, and Binoculars over the pair (observer `{f.observer}`, performer `{f.performer}`);",
        "- a lexical score: hashed word 1-2-grams and character 3-5-grams, logistic regression, out of fold for "
        "the training rows, fitted on every text whole and without its first sentence;",
        "- seven text statistics.",
        "",
        f"Texts are scored on their first {f.scoring.max_tokens} tokens after normalisation (NFKC, invisible "
        "characters dropped, Cyrillic and Greek homoglyphs folded to Latin, whitespace collapsed); the lexical "
        f"model reads the whole text. Threshold **{det.threshold_:.4f}**: at most "
        f"{det.config.target_fpr:.0%} of each source of human text in the threshold set above it.",
        "",
        "## Data (split by group; nothing below is in two roles)",
        "| part | human | machine |",
        "|---|---|---|",
        *[f"| train: {k} | {v['human']:,} | {v['machine']:,} |" for k, v in train.items()],
        "",
        *([f"{TYPO_PART} are misspelt copies of a seeded {recipe.typo_copies.share:.0%} of the other training rows "
           f"(in each, every word of four letters or more edited with a chance drawn up to "
           f"{recipe.typo_copies.max_rate:g}: a letter swapped, dropped, doubled or hit on a neighbouring key), "
           "in their rows' groups; they train the classifier and the lexical model, not the cascade's band.", ""]
          if TYPO_PART in train else []),
        *(["The lexical model also reads more texts of the same training groups, which the language models "
           "do not score: " + ", ".join(f"{k} {v['human']:,} human / {v['machine']:,} machine"
                                         for k, v in lexical_only.items()) + ".", ""]
          if lexical_only else []),
        f"Threshold set: {', '.join(f'{k} {v:,}' for k, v in data['threshold'].items())} human texts. "
        f"Evaluation only: {', '.join(f'{k} {v:,}' for k, v in data['eval'].items())} texts. detect-chat groups "
        f"by role: {', '.join(f'{k} {v:,}' for k, v in data['detect_chat_groups'].items())}.",
        "",
        "## Remake",
        "```bash",
        command,
        "```",
        f"The recipe is `{recipe.out}/recipe.yaml`; every figure below is in `evaluation.json` beside it. "
        f"This build: {results['seconds'] / 60:.0f} min for `hygiene train-detector --recipe` "
        + _build_conditions(results.get("build"), f"{recipe.work}/features.jsonl") + ".",
        "",
        "## Figures (text that neither training nor the threshold saw)",
        "",
        "Down to \"At the shipped threshold\", every figure is the ablation's \"all features\" row: the same "
        "classifier refitted on all training rows, its threshold set on the threshold set. The shipped classifier "
        "(fitted on four fifths of the training groups, Platt-scaled on the rest) has its own figures in the last "
        "sections.",
        "",
        "### Ablation: each feature family alone, and all of them",
        "Refitted on all training rows (the shipped classifier holds a fifth of the groups out for Platt scaling); "
        "thresholds set on the threshold set as for the detector.",
        "",
        ablation_table(results).rstrip(),
        "",
        "### detect-chat, held-out groups",
        *table({"all": full["detect-chat"], **{f"variant: {k}": v for k, v in full["variants"].items()}}, "texts"),
        "",
        "Variants are scored against all held-out human texts.",
        "",
        "### Leave one detect-chat repository out",
        "The classifier and the lexical model refitted without the repository's training rows; the machine LM "
        "is not refitted (it saw every repository's training groups, never their held-out ones). Repositories "
        "without human texts are scored against all held-out human texts.",
        "",
        *table(full["leave-one-source-out"], "left out"),
        "",
        f"Mean {fig(loso, 'mean_auroc')}"
        + (f" (95% interval {ci(loso, 'mean_auroc_ci95')}, the held-out rows resampled)" if "mean_auroc_ci95" in loso else "")
        + f", lowest {fig(loso, 'min_auroc')}.",
        "",
        "### Leave one generator family out",
        *table(full["leave-one-family-out"], "left out"),
        "",
        "### Shortcuts and evasion (a seeded sample of the held-out texts)",
        "| probe | AUROC | drop from clean |",
        "|---|---|---|",
        *[f"| {k} | {fig(v)} | {v.get('auroc_drop', 0):+.3f} |" for k, v in full["probes"].items()],
        "",
        "Attacks change the machine texts only (an evader's move); the human texts stay clean.",
        "",
        "### Generational corpus, detect-dev, human text",
        f"- generational corpus test split: AUROC {fig(full['corpus'], 'auroc', '.4f')}, TPR at 1% FPR "
        f"{fig(full['corpus'], 'tpr_at_1pct_fpr')}; by generation "
        + ", ".join(f"{g}: {fig(v, 'auroc', '.4f')}" for g, v in full["corpus_by_generation"].items()) + ";",
        f"- detect-dev held-out groups: AUROC {fig(full['detect-dev'])}, TPR at 1% FPR "
        f"{fig(full['detect-dev'], 'tpr_at_1pct_fpr')};",
        *([f"- the simulator's pages (`collapse-sim pages`, the pool's eval split) against the pool's eval "
           f"documents: AUROC {fig(full['simulator-pages'])}, TPR at 1% FPR "
           f"{fig(full['simulator-pages'], 'tpr_at_1pct_fpr')};"] if "simulator-pages" in full else []),
        "- human eval texts flagged at the refit's threshold: "
        + ", ".join(f"{k} {v:.1%}" for k, v in full["human_flagged"].items()) + ".",
        "",
        "At the shipped threshold (the shipped classifier and Platt map):",
        "",
        "| set | human flagged | machine flagged |",
        "|---|---|---|",
        *[f"| {k} | {_pct(results[k]['at_threshold']['human_flagged'])} | "
          f"{_pct(results[k]['at_threshold']['machine_flagged'])} |"
          for k in data["eval"] if k in results],
        "",
        *_cascade_lines(results.get("cascade"), det),
        "Human eval texts flagged by the shipped detector, per source: " + ", ".join(
            f"{d} {v:.1%}" for d, v in results.get("human-eval", {}).get("at_threshold", {})
            .get("human_flagged_by_domain", {}).items()) + ".",
    ]
    with atomic_open(path) as fh:
        fh.write("\n".join(lines) + "\n")


def _cascade_lines(cascade: dict | None, det: Detector) -> list[str]:
    """The card's cascade section: settled share, decisions that differ and AUROC, per evaluation set."""
    if not cascade:
        return []
    out = ["### Cascade (on by default)",
           f"A first pass over the text statistics and the lexical score settles the texts outside its band "
           f"(set on held-out rows for at most {det.config.cascade.max_disagreement:.1%} differing decisions in each "
           "data set); "
           "only the rest are scored with the language models.", "",
           "| set | settled by the first pass | decisions that differ | AUROC, all scored | AUROC, cascade |",
           "|---|---|---|---|---|"]
    for name, c in cascade.items():
        auroc = [format(c[k], ".4f") if k in c else "-" for k in ("auroc_full", "auroc_cascade")]
        out.append(f"| {name} | {c['settled']:.1%} | {c['decisions_differ']:.2%} | {auroc[0]} | {auroc[1]} |")
    return out + [""]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"
