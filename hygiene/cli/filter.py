"""``hygiene filter`` and ``hygiene dedup``: run the corpus filter over files."""
from __future__ import annotations

import json
from typing import Any, Callable

import click

from hygiene.cli import main
from hygiene.config import AUTOCASTS, BACKENDS, HASH_SCHEMES, TXT_UNITS, profiles
from hygiene.errors import UserInputError
from hygiene.progress import hide_library_bars


def _common_options(func: Callable) -> Callable:
    """Options shared by ``filter`` and ``dedup``."""
    options = [
        click.argument("inputs", nargs=-1, required=True, metavar="INPUT..."),
        click.option("--out", "out", type=click.Path(file_okay=False), help="Output directory."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="YAML/TOML config file extending the profile (any subset of the keys in DIR/config.yaml)."),
        click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                     help="Override one config key, e.g. --set quality.min_words=100 (repeatable)."),
        click.option("--text-field", default=None, help="Field holding the text [text]."),
        click.option("--id-field", default=None, help="Field holding the record id [default: <shard>:<line>]."),
        click.option("--group-field", default=None,
                     help="Field the stats and report count by [source, else dataset, when present]."),
        click.option("--txt-unit", type=click.Choice(TXT_UNITS), default=None,
                     help="A .txt input is one record per file, per non-blank line, or per blank-line-separated "
                          "paragraph [file]."),
        click.option("--limit", type=click.IntRange(1), default=None,
                     help="Filter only the first N records (inputs in order), to try a config on part of a corpus."),
        click.option("--sample", type=click.IntRange(1), default=None,
                     help="Filter a random sample of N records (seed: --set sample_seed=S) [all]."),
        click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default=None,
                     help="Format of kept/rejected [jsonl]."),
        click.option("--annotate", is_flag=True, default=None, help="Add a 'hygiene' field with scores to kept records."),
        click.option("--annotate-only", is_flag=True, default=None,
                     help="Write every record with its scores and decision to kept; drop nothing."),
        click.option("--max-errors", type=int, default=None, help="Stop once more records than this are unreadable."),
        click.option("--batch-size", type=int, default=None, help="Records per batch [1000]."),
        click.option("--workers", type=int, default=None,
                     help="Processes for normalisation, quality, MinHash hashing, the detector's cheap features and (on CPU) the whole detector; on a CPU one per core is fastest [1: this process]."),
        click.option("--exact-dedup/--no-exact-dedup", default=None, help="Exact dedup on normalised text [on]."),
        click.option("--near-dedup/--no-near-dedup", default=None, help="MinHash LSH near dedup [on]."),
        click.option("--bands", type=int, default=None, help="LSH bands [14]."),
        click.option("--rows", type=int, default=None, help="Hashes per band [8]."),
        click.option("--hash-scheme", type=click.Choice(HASH_SCHEMES), default=None,
                     help="MinHash signatures: 'fast' (numpy shingle hashes, bucketed MinHash) or 'datasketch' "
                          "(equal to datasketch's MinHash, several times slower) [fast]."),
        click.option("--normalize/--no-normalize", default=None, help="Unicode normalisation [on]."),
        click.option("--resume", is_flag=True, help="Continue an interrupted run in --out."),
        click.option("--overwrite", is_flag=True, help="Replace a finished or interrupted run in --out."),
        click.option("--dry-run", is_flag=True, help="Print the stats only; write nothing."),
        click.option("--progress/--no-progress", default=True, help="Show a progress bar [on]."),
        click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
                     help="Run here, or on Ray (needs collapse-hygiene[ray]) [local]."),
        click.option("--ray-address", default=None, help="Ray cluster to join, e.g. auto [RAY_ADDRESS or a local Ray]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _filter_options(func: Callable) -> Callable:
    """Options of ``filter`` alone: what sets or adds the stages that ``dedup`` leaves out."""
    options = [
        click.option("--profile", default=None, type=click.Choice(profiles()),
                     help="Settings to start from: 'human' keeps human writing and drops only what is not "
                          "prose; 'gopher' applies Gopher's quality rules (as datatrove) [the config file's "
                          "'profile', else human]."),
        click.option("--stage", "stages", multiple=True, metavar="MODULE:CLASS",
                     help="A stage of your own (a hygiene.stages.Stage subclass; MODULE may be a .py file), "
                          "run before the detector (repeatable)."),
        click.option("--gpus-per-worker", type=click.FloatRange(0), default=0.0,
                     help="GPUs for each detector worker with --engine ray [0]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _overrides(**values: Any) -> dict[str, Any]:
    """Dotted config keys for the options the user actually gave."""
    keys = {"text_field": "text_field", "id_field": "id_field", "group_field": "group_field",
            "txt_unit": "txt_unit", "limit": "limit", "sample": "sample", "fmt": "output.format",
            "annotate": "output.annotate", "annotate_only": "output.annotate_only", "max_errors": "max_errors",
            "batch_size": "batch_size", "workers": "workers", "exact_dedup": "exact_dedup.enabled", "near_dedup": "near_dedup.enabled",
            "bands": "near_dedup.bands", "rows": "near_dedup.rows", "hash_scheme": "near_dedup.hash_scheme", "normalize": "normalize.enabled",
            "quality": "quality.enabled", "synthetic": "synthetic.enabled", "detector": "synthetic.model",
            "threshold": "synthetic.threshold", "cascade": "synthetic.cascade", "device": "synthetic.device",
            "autocast": "synthetic.autocast", "backend": "synthetic.backend"}
    return {keys[k]: v for k, v in values.items() if v is not None}


def _run(inputs: tuple[str, ...], out: str | None, config_path: str | None, assignments: tuple[str, ...],
         resume: bool, overwrite: bool, dry_run: bool, progress: bool, forced: dict[str, Any],
         **options: Any) -> None:
    """Load the config, run, report; user errors become one-line messages."""
    from hygiene.config import StageSpec, load_config
    from hygiene.filter_run import run_filter
    from hygiene.run_output import RunOutput, check_outcome, group_field_warning

    if out is None and not dry_run:
        raise click.UsageError("give --out DIR (or --dry-run)")
    engine, address, gpus = options.pop("engine"), options.pop("ray_address"), options.pop("gpus_per_worker", 0.0)
    if engine == "local" and (address is not None or gpus):
        raise click.UsageError("--ray-address and --gpus-per-worker need --engine ray")
    profile, stages = options.pop("profile", None), options.pop("stages", ())
    if not progress:
        hide_library_bars()
    try:
        config = load_config(config_path, {**_overrides(**options), **forced}, assignments, profile)
        config.stages += [StageSpec(path) for path in stages]
        if engine == "ray":
            from hygiene.ray_engine import RayConfig, run_filter_ray

            stats = run_filter_ray(inputs, None if dry_run else out, config,
                                   RayConfig(address, options["workers"], gpus), resume=resume,
                                   overwrite=overwrite, progress=progress)
        else:
            stats = run_filter(inputs, None if dry_run else out, config, resume=resume, overwrite=overwrite,
                               progress=progress)
    except UserInputError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        if dry_run or not RunOutput(out).partial.is_dir():
            raise click.ClickException("interrupted before anything was written") from None
        again = "--resume" if engine == "local" else "--overwrite"  # a Ray run starts over
        raise click.ClickException(f"interrupted; continue with {again} --out {out}") from None
    if dry_run:
        click.echo(json.dumps({k: v for k, v in stats.items() if k != "config"}, indent=2))
    else:
        click.echo(f"{stats['records_in']} records: {stats['kept']} kept, {stats['rejected']} rejected, "
                   f"{stats['errors']} errors ({stats['docs_per_s']} docs/s) -> {out}")
    if (warning := group_field_warning(stats)) is not None:
        click.echo(f"warning: {warning}", err=True)
    try:
        check_outcome(stats, None if dry_run else out)
    except UserInputError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("filter")
@_common_options
@_filter_options
@click.option("--quality/--no-quality", default=None, help="The profile's quality rules [on].")
@click.option("--synthetic/--no-synthetic", default=None, help="Synthetic-text detector [on].")
@click.option("--detector", type=click.Path(), default=None, help="Detector directory, or a shipped one by name (detector-fast) [models/detector].")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Reject above this detector probability [the detector's calibrated threshold].")
@click.option("--cascade/--no-cascade", default=None,
              help="Let the detector's cheap first pass settle the texts it is sure of; the language models score "
                   "only the rest [on for a detector on the CPU, off on a GPU].")
@click.option("--device", default=None, help="torch device of the detector, e.g. cpu or cuda:1 [cuda when available, else cpu].")
@click.option("--autocast", type=click.Choice(AUTOCASTS), default=None,
              help="Run the detector's language models under bfloat16 autocast: the filter about 1.5-1.9x as fast on "
                   "a CPU with bfloat16 instructions (AVX512-BF16, AMX), far slower on one without; about 0.1% of "
                   "decisions change [float32].")
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="What runs the detector's language models: onnxruntime (CPU; pip install onnxruntime "
                   "onnxscript) gives the same scores, faster or slower than torch by package versions; auto uses it "
                   "for float32 models on the CPU where it is installed and times faster, timed once [auto].")
def filter_cmd(inputs: tuple[str, ...], out: str | None, config_path: str | None, assignments: tuple[str, ...],
               resume: bool, overwrite: bool, dry_run: bool, progress: bool, **options: Any) -> None:
    """Drop duplicates, pages that are not prose and likely synthetic text from INPUT shards.

    INPUT: JSONL (.gz), Parquet, .txt files, saved Hugging Face datasets, directories or globs.
    A JSONL line or a table row is one record; a .txt file is one record, or one per line or
    paragraph with --txt-unit. Writes kept, rejected (each with every rule it fails), errors,
    stats.json and config.yaml to --out; `hygiene report DIR` makes a page of them.
    """
    _run(inputs, out, config_path, assignments, resume, overwrite, dry_run, progress, {}, **options)


@main.command("dedup")
@_common_options
def dedup_cmd(inputs: tuple[str, ...], out: str | None, config_path: str | None, assignments: tuple[str, ...],
              resume: bool, overwrite: bool, dry_run: bool, progress: bool, **options: Any) -> None:
    """Drop exact and near-duplicate documents only (no quality, synthetic-text or user stage; a config
    file's are ignored).

    Same inputs and outputs as ``hygiene filter``.
    """
    forced = {"quality.enabled": False, "synthetic.enabled": False, "stages": []}
    _run(inputs, out, config_path, assignments, resume, overwrite, dry_run, progress, forced, **options)
