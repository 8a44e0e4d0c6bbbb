"""Configuration of the corpus filter: one dataclass per stage, loaded from a profile, YAML/TOML and overrides.

The dataclass defaults are the published values (each field says where it comes
from; the quality rules are Gopher's). A run starts from a **profile**, a config file
shipped in ``hygiene/profiles/``: ``human`` (the default: only the rules that catch
what is not prose, with thresholds that keep human writing) or ``gopher`` (the
dataclass defaults). A config file extends its profile (``profile: gopher`` in the
file, or ``--profile``, picks it) and holds any subset of the keys, nested by stage::

    near_dedup: {bands: 20, rows: 5}
    quality: {min_words: 100, max_dup_ngram_char_frac: {5: 0.2}}
    stages: [{path: "my_stages:NoShouting", params: {max_share: 0.3}}]  # stages of your own

and ``--set quality.min_words=100`` overrides one key from the command line. The
effective config is written into every output directory (``config.yaml``), so a
run can be repeated with ``--config DIR/config.yaml``.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from hygiene.errors import UserInputError, one_line

#: the profile a run starts from unless told otherwise
DEFAULT_PROFILE = "human"
#: how a ``.txt`` input becomes records
TXT_UNITS = ("file", "line", "paragraph")
#: the near-dedup signature schemes (:class:`hygiene.dedup.MinHasher`)
HASH_SCHEMES = ("fast", "datasketch")
#: what may run the detector's language models (:mod:`hygiene.onnx_lm` for onnxruntime; "auto":
#: ``hygiene.lm.resolve_backend``), and the dtypes they may run under with autocast (``hygiene.lm.autocast_dtype``)
BACKENDS = ("auto", "torch", "onnxruntime")
AUTOCASTS = ("bfloat16",)


@dataclass
class NormalizeConfig:
    """Unicode NFKC, zero-width removal, unified line endings (``hygiene.normalize``)."""

    enabled: bool = True


@dataclass
class ExactDedupConfig:
    """Drop documents whose normalised text was already seen (first occurrence kept)."""

    enabled: bool = True


@dataclass
class NearDedupConfig:
    """MinHash LSH over word n-gram shingles; one document kept per cluster."""

    enabled: bool = True
    bands: int = 14  # FineWeb's MinHash config: 14 buckets x 8 hashes = 112 permutations
    rows: int = 8  # ditto; the LSH S-curve crosses 0.5 near Jaccard similarity 0.75
    ngram: int = 5  # FineWeb: word 5-grams
    seed: int = 1  # datasketch's default MinHash seed, so signatures match MinHash(num_perm=112)
    # "fast": numpy shingle hashes and a bucketed MinHash; "datasketch": equal to datasketch's MinHash
    hash_scheme: str = "fast"

    @property
    def num_perm(self) -> int:
        """Number of hash permutations: bands x rows."""
        return self.bands * self.rows


@dataclass
class QualityConfig:
    """Gopher quality and repetition heuristics (Rae et al. 2021, appendix A, table A1), and one rule for
    text that is not prose (off by default).

    Each threshold can be set to ``None`` to switch that one check off.
    """

    enabled: bool = True
    min_words: int | None = 50  # Gopher: 50 to 100,000 words
    max_words: int | None = 100_000
    min_mean_word_length: float | None = 3.0  # Gopher: mean word length 3 to 10 characters
    max_mean_word_length: float | None = 10.0
    max_symbol_word_ratio: float | None = 0.1  # Gopher: '#' or ellipsis to word ratio above 0.1
    max_bullet_lines_ratio: float | None = 0.9  # Gopher: more than 90% of lines start with a bullet
    max_ellipsis_lines_ratio: float | None = 0.3  # Gopher: more than 30% of lines end with an ellipsis
    min_alpha_words_ratio: float | None = 0.8  # Gopher: 80% of words contain an alphabetic character
    min_stop_words: int | None = 2  # Gopher: at least two of the stop words below
    stop_words: list[str] = field(default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"])
    max_dup_line_frac: float | None = 0.30  # Gopher table A1: duplicate line fraction
    max_dup_para_frac: float | None = 0.30  # duplicate paragraph fraction
    max_dup_line_char_frac: float | None = 0.20  # duplicate line character fraction
    max_dup_para_char_frac: float | None = 0.20  # duplicate paragraph character fraction
    # Gopher table A1: top 2/3/4-gram character fraction
    max_top_ngram_char_frac: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    # Gopher table A1: duplicate 5..10-gram character fraction
    max_dup_ngram_char_frac: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )
    #: not Gopher's, and off in both profiles: words per sentence, a sentence ending at a line break or at
    #: . ! ? ; : (keyword spam has neither); 80 catches such spam and rejects 0.1-0.4% of unpunctuated human
    #: writing (old journals, some school essays; docs/filter.md)
    max_words_per_sentence: float | None = None

    def range_checks(self) -> list[tuple[bool, str]]:
        """(ok, message) for each threshold outside its meaningful range: counts and lengths >= 0, fractions
        in [0, 1] (a check set to None is off and passes)."""
        def at_least_0(name: str) -> tuple[bool, str]:
            v = getattr(self, name)
            return v is None or v >= 0, f"quality.{name} must be >= 0"

        def fraction(name: str, v: float | None) -> tuple[bool, str]:
            return v is None or 0.0 <= v <= 1.0, f"quality.{name} must lie in [0, 1]"

        counts = ("min_words", "max_words", "min_mean_word_length", "max_mean_word_length", "min_stop_words",
                  "max_words_per_sentence")
        fractions = ("max_symbol_word_ratio", "max_bullet_lines_ratio", "max_ellipsis_lines_ratio",
                     "min_alpha_words_ratio", "max_dup_line_frac", "max_dup_para_frac", "max_dup_line_char_frac",
                     "max_dup_para_char_frac")
        return ([at_least_0(n) for n in counts] + [fraction(n, getattr(self, n)) for n in fractions]
                + [fraction(f"max_top_ngram_char_frac.{n}", v) for n, v in self.max_top_ngram_char_frac.items()]
                + [fraction(f"max_dup_ngram_char_frac.{n}", v) for n, v in self.max_dup_ngram_char_frac.items()])


@dataclass
class SyntheticConfig:
    """Reject likely machine-generated text with the detector (``hygiene.detector``)."""

    enabled: bool = True
    model: str | None = None  # detector directory, or a shipped one by name (detector-fast); None: models/detector
    threshold: float | None = None  # None: the detector's threshold calibrated on human text (its FPR)
    batch_size: int = 64  # texts per predict_proba call
    #: the detector's first pass settles the texts it is sure of (when it has a cascade); None: on when the
    #: detector runs on the CPU, off on a GPU, where the language models cost less than the first pass
    cascade: bool | None = None
    device: str | None = None  # torch device of the detector's language models; None: cuda when available, else cpu
    #: "bfloat16": the language models run under bfloat16 autocast, the filter about 1.5-1.9x as fast on a CPU
    #: with bfloat16 instructions (AVX512-BF16, AMX) and far slower on one without; P(machine) moves by up to
    #: 0.07 and about 0.1% of decisions change (docs/benchmarks.md); None: float32, what the classifier was fitted on
    autocast: str | None = None
    #: "onnxruntime": the language models run by ONNX Runtime on the CPU (pip install onnxruntime onnxscript;
    #: exported once into a cache), the same scores as "torch", faster or slower by package versions
    #: (docs/benchmarks.md); "auto": onnxruntime for float32 models on the CPU where it is installed and times
    #: faster (hygiene.onnx_lm.faster_than_torch), else torch
    backend: str = "auto"


@dataclass
class StageSpec:
    """A stage of your own (a :class:`hygiene.stages.Stage` subclass) and the keyword arguments of its ``__init__``."""

    path: str  # "package.module:Class" or "path/to/file.py:Class"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputConfig:
    """What the run writes."""

    format: str = "jsonl"  # kept/rejected as "jsonl" or "parquet"; errors are always JSONL
    annotate: bool = False  # add a "hygiene" field (scores) to kept records
    annotate_only: bool = False  # tag every record with its scores and decision, drop nothing


@dataclass
class FilterConfig:
    """The whole filter: input fields, batching, every stage, outputs."""

    profile: str | None = None  # the shipped profile this config extends (None: the dataclass defaults, Gopher's)
    text_field: str = "text"
    id_field: str | None = None  # None: a stable id "<shard>:<line>"
    group_field: str | None = None  # field the stats count by; None: "source", else "dataset", when a record has it
    txt_unit: str = "file"  # a .txt input is one record per "file", per "line", or per blank-line "paragraph"
    limit: int | None = None  # read only the first N records of the input (shards in order)
    sample: int | None = None  # filter a random sample of N records of the input, in input order
    sample_seed: int = 0  # seed of that sample
    batch_size: int = 1000  # records per stage call (and per datasets.map batch)
    max_errors: int | None = None  # abort once more records than this could not be read
    checkpoint_seconds: float = 30.0  # checkpoint at the first shard boundary after this long
    workers: int = 1  # processes for the pure stages (normalise, quality, MinHash) and, on CPU, the detector; 1: all in this process
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    exact_dedup: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    stages: list[StageSpec] = field(default_factory=list)  # your own stages: after near dedup, before the detector
    output: OutputConfig = field(default_factory=OutputConfig)

    def validate(self) -> FilterConfig:
        """Check value ranges; raise :class:`UserInputError` naming the bad key."""
        checks = [
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.workers >= 1, "workers must be at least 1"),
            (self.max_errors is None or self.max_errors >= 0, "max_errors must be >= 0"),
            (self.limit is None or self.limit >= 1, "limit must be at least 1"),
            (self.sample is None or self.sample >= 1, "sample must be at least 1"),
            (self.limit is None or self.sample is None, "give limit or sample, not both"),
            (self.txt_unit in TXT_UNITS, f"txt_unit must be one of {', '.join(TXT_UNITS)}"),
            (self.near_dedup.bands >= 1 and self.near_dedup.rows >= 1, "near_dedup.bands and rows must be >= 1"),
            (self.near_dedup.ngram >= 1, "near_dedup.ngram must be >= 1"),
            (self.near_dedup.hash_scheme in HASH_SCHEMES,
             f"near_dedup.hash_scheme must be one of {', '.join(HASH_SCHEMES)}"),
            (self.synthetic.batch_size >= 1, "synthetic.batch_size must be at least 1"),
            (self.synthetic.threshold is None or 0.0 <= self.synthetic.threshold <= 1.0,
             "synthetic.threshold must lie in [0, 1]"),
            (self.output.format in ("jsonl", "parquet"), "output.format must be 'jsonl' or 'parquet'"),
            (all(n >= 1 for n in self.quality.max_top_ngram_char_frac), "n-gram sizes must be >= 1"),
            (all(n >= 1 for n in self.quality.max_dup_ngram_char_frac), "n-gram sizes must be >= 1"),
            (self.checkpoint_seconds >= 0, "checkpoint_seconds must be >= 0"),
            (self.synthetic.autocast in (None, *AUTOCASTS),
             f"synthetic.autocast must be null or {' or '.join(map(repr, AUTOCASTS))}"),
            (self.synthetic.backend in BACKENDS, f"synthetic.backend must be one of {', '.join(map(repr, BACKENDS))}"),
            *self.quality.range_checks(),
        ]
        for ok, message in checks:
            if not ok:
                raise UserInputError(f"bad config: {message}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/YAML-ready)."""
        return dataclasses.asdict(self)


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check and coerce ``value`` to the annotated type ``tp``; raise naming ``key``."""
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, key)
            except UserInputError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserInputError(f"bad config: {key} must be a mapping, got {value!r}")
        kt, vt = args
        return {_convert(kt, k, f"{key}.{k}"): _convert(vt, v, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UserInputError(f"bad config: {key} must be a list, got {value!r}")
        return [_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():  # TOML table keys are strings
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise UserInputError(f"bad config: {key} must be {getattr(tp, '__name__', tp)}, got {value!r}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from a (partial) mapping, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise UserInputError(f"bad config: {prefix or 'the config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise UserInputError(f"bad config: unknown key {where!r}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise UserInputError(f"bad config: {prefix or 'the config'} needs {missing[0]!r}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{prefix}.{name}" if prefix else name)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> FilterConfig:
    """A validated :class:`FilterConfig` from a partial nested mapping."""
    return _build(FilterConfig, data, "").validate()


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML (.yaml/.yml) or TOML (.toml) config file into a mapping."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text)
        else:
            raise UserInputError(f"bad config {path}: use a .yaml, .yml, .toml or .json file")
    except UserInputError:
        raise
    except Exception as exc:  # yaml.YAMLError, tomllib.TOMLDecodeError, UnicodeDecodeError
        raise UserInputError(f"bad config {path}: {one_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserInputError(f"bad config {path}: the top level must be a mapping")
    return data


def set_key(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``dotted = "a.b.c"``, creating sections as needed."""
    node = data
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserInputError(f"bad config: {part} in {dotted!r} is not a section")
    node[parts[-1]] = value


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override (value parsed as YAML) to ``data`` in place."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise UserInputError(f"bad override {assignment!r}: expected KEY=VALUE, e.g. quality.min_words=100")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    set_key(data, key, value)


def profiles() -> list[str]:
    """Names of the shipped profiles."""
    from importlib.resources import files

    return sorted(p.name.removesuffix(".yaml") for p in files("hygiene").joinpath("profiles").iterdir()
                  if p.name.endswith(".yaml"))


def read_profile(name: str) -> dict[str, Any]:
    """The settings of the shipped profile ``name`` (a partial nested mapping)."""
    from importlib.resources import files

    if name not in profiles():
        raise UserInputError(f"unknown profile {name!r}: choose one of {', '.join(profiles())}")
    return yaml.safe_load(files("hygiene").joinpath("profiles", f"{name}.yaml").read_text(encoding="utf-8")) or {}


def merge(cls: type, base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: sections (dataclass fields of ``cls``) merge key by key, other values replace."""
    hints = typing.get_type_hints(cls)
    out = dict(base)
    for key, value in over.items():
        tp = hints.get(key)
        if dataclasses.is_dataclass(tp) and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(tp, out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                assignments: tuple[str, ...] | list[str] = (), profile: str | None = None) -> FilterConfig:
    """Effective config: the profile, then the file, then ``overrides`` (``{"dotted.key": value}``), then
    ``KEY=VALUE`` assignments.

    The profile is ``profile``, else a ``profile`` override, else the file's ``profile`` key, else
    :data:`DEFAULT_PROFILE`.
    """
    if overrides is not None and not isinstance(overrides, Mapping):
        raise TypeError(f"overrides must be a mapping of dotted keys to values, not a {type(overrides).__name__} "
                        "(KEY=VALUE strings go in assignments=)")
    if isinstance(assignments, str):
        raise TypeError("assignments must be a list of KEY=VALUE strings, not one string (wrap it: [assignment])")
    data = read_config_file(path) if path is not None else {}
    extra: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        set_key(extra, key, value)
    for assignment in assignments:
        apply_override(extra, assignment)
    name = profile or extra.get("profile") or data.get("profile") or DEFAULT_PROFILE
    if not isinstance(name, str):
        raise UserInputError(f"bad config: profile must be a name, got {name!r}")
    base = merge(FilterConfig, read_profile(name), data)
    return config_from_dict({**merge(FilterConfig, base, extra), "profile": name})


def write_config(path: str | Path, config: FilterConfig) -> None:
    """Write the effective config as YAML (atomically), loadable by :func:`load_config`."""
    from hygiene.atomic import atomic_open

    with atomic_open(path) as fh:
        yaml.safe_dump(config.to_dict(), fh, sort_keys=False)
