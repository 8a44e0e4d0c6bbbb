"""The corpus filter as a pipeline of batch stages, and its two library entry points.

Stages run in this order, each switchable in :class:`~hygiene.config.FilterConfig`:
normalise -> empty-text check -> exact dedup -> Gopher quality -> MinHash near dedup
-> synthetic-text detector. Cheap stages come first and a stage only scores the
documents still undecided, so the detector sees only unique, decent text; with
``annotate_only`` every stage scores every document and nothing is dropped.

- :func:`filter_records` takes any iterable of records (dicts or strings) and yields
  one :class:`Decision` per record, in order;
- :func:`filter_dataset` runs the same stages with ``datasets.Dataset.map(batched=True)``
  and returns the kept and rejected datasets.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from hygiene.batch import decisions
from hygiene.batch import texts as batch_texts
from hygiene.config import FilterConfig
from hygiene.dedup import ExactDedup, HashIndex, MinHashKeys, NearDedup
from hygiene.errors import UserInputError
from hygiene.normalize import normalize_batch
from hygiene.quality import QualityFilter
from hygiene.synthetic_filter import Detector, SyntheticFilter

Stage = Callable[[Mapping[str, Sequence]], dict[str, list]]


def reject_empty(batch: Mapping[str, Sequence]) -> dict[str, list]:
    """Batch stage: reject documents whose (normalised) text is empty or only whitespace."""
    stage, reason = decisions(batch)
    for i, text in enumerate(batch_texts(batch)):
        if not text.strip() and stage[i] is None:
            stage[i], reason[i] = "input", "empty_text"
    return {**batch, "stage": stage, "reason": reason}


def run_stages(stages: Sequence[Stage], batch: Mapping[str, Sequence]) -> dict[str, list]:
    """Apply ``stages`` to ``batch`` in order."""
    out = dict(batch)
    for stage in stages:
        out = stage(out)
    return out


@dataclass
class Pipeline:
    """The configured stages and the dedup indexes they fill (saved and restored by a run).

    ``pure[i]`` says whether stage i is a pure function of its batch, so that it may run
    in a worker process; dedup stages (shared index) and the detector (one model per
    process) run in the caller's process.
    """

    config: FilterConfig
    stages: list[Stage]
    pure: list[bool]
    exact_index: HashIndex
    near_index: HashIndex
    score_columns: tuple[str, ...]

    def __call__(self, batch: Mapping[str, Sequence]) -> dict[str, list]:
        """Run every stage over one batch (columns ``id``, ``n``, ``text``)."""
        return run_stages(self.stages, batch)

    def segments(self) -> list[tuple[bool, list[Stage]]]:
        """Runs of consecutive stages that are all pure or all not: ``(pure, stages)``."""
        out: list[tuple[bool, list[Stage]]] = []
        for stage, pure in zip(self.stages, self.pure):
            if out and out[-1][0] == pure:
                out[-1][1].append(stage)
            else:
                out.append((pure, [stage]))
        return out


def build_pipeline(config: FilterConfig | None = None, detector: Detector | None = None) -> Pipeline:
    """The stages ``config`` switches on, in order, with fresh dedup indexes.

    ``detector`` replaces the default detector (loaded from ``models/detector`` on first use).
    """
    config = config or FilterConfig()
    annotate = config.output.annotate_only
    exact_index, near_index = HashIndex(), HashIndex()
    stages: list[Stage] = []
    pure: list[bool] = []
    columns: list[str] = []

    def add(stage: Stage, is_pure: bool) -> None:
        stages.append(stage)
        pure.append(is_pure)
        columns.extend(getattr(stage, "columns", ()))

    if config.normalize.enabled:
        add(normalize_batch, True)
    add(reject_empty, True)
    if config.exact_dedup.enabled:
        add(ExactDedup(config.exact_dedup, exact_index, annotate), False)
    if config.quality.enabled:
        add(QualityFilter(config.quality, annotate), True)
    if config.near_dedup.enabled:
        add(MinHashKeys(config.near_dedup, annotate), True)
        add(NearDedup(config.near_dedup, near_index, annotate), False)
    if config.synthetic.enabled:
        add(SyntheticFilter(config.synthetic, detector, annotate), False)
    return Pipeline(config, stages, pure, exact_index, near_index, tuple(columns))


def synthetic_stage(pipeline: Pipeline) -> SyntheticFilter | None:
    """The pipeline's synthetic-text stage, if switched on."""
    return next((s for s in pipeline.stages if isinstance(s, SyntheticFilter)), None)


@dataclass
class Decision:
    """Where one record went and why."""

    id: str
    kept: bool
    stage: str | None  # first rejecting stage ("input", "exact_dedup", ...), "error" if unreadable
    reason: str | None
    scores: dict[str, Any] = field(default_factory=dict)
    record: Any = None


def row_scores(batch: Mapping[str, Sequence], i: int, columns: Sequence[str]) -> dict[str, Any]:
    """The scores of row ``i`` (columns the stages added; absent or unscored ones left out)."""
    return {c: batch[c][i] for c in columns if c in batch and batch[c][i] is not None}


def record_text(record: Any, text_field: str) -> tuple[str | None, str | None]:
    """(text, None) for a usable record, or (None, error) when its text field is missing or not a string."""
    if isinstance(record, str):
        return record, None
    if not isinstance(record, Mapping):
        return None, f"record is {type(record).__name__}, not a mapping"
    if text_field not in record:
        return None, f"missing text field {text_field!r}"
    text = record[text_field]
    if not isinstance(text, str):
        return None, f"text field {text_field!r} is {type(text).__name__}, not a string"
    return text, None


def record_id(record: Any, id_field: str | None, default: str) -> tuple[str | None, str | None]:
    """(id, None) from ``id_field`` (or ``default`` when no id field is named), or (None, error)."""
    if id_field is None:
        return default, None
    if not isinstance(record, Mapping) or record.get(id_field) is None:
        return None, f"missing id field {id_field!r}"
    return str(record[id_field]), None


def filter_records(records: Iterable[Any], config: FilterConfig | None = None,
                   detector: Detector | None = None) -> Iterator[Decision]:
    """One :class:`Decision` per record of ``records``, in order, streaming in batches.

    Records are mappings holding ``config.text_field`` (or plain strings). Ids come from
    ``config.id_field`` or the record's position. A record without a usable text is
    not lost: its decision has stage ``"error"``.
    """
    config = config or FilterConfig()
    pipeline = build_pipeline(config, detector)
    counter = itertools.count()
    it = iter(records)
    while chunk := list(itertools.islice(it, config.batch_size)):
        batch: dict[str, list] = {"id": [], "n": [], "text": []}
        decided: dict[int, Decision] = {}
        rows: list[int] = []
        for j, record in enumerate(chunk):
            n = next(counter)
            text, error = record_text(record, config.text_field)
            rid, id_error = record_id(record, config.id_field, str(n))
            if error or id_error:
                decided[j] = Decision(rid or str(n), False, "error", error or id_error, {}, record)
                continue
            rows.append(j)
            batch["id"].append(rid)
            batch["n"].append(n)
            batch["text"].append(text)
        out = pipeline(batch) if rows else batch
        for k, j in enumerate(rows):
            stage = out["stage"][k]
            decided[j] = Decision(out["id"][k], stage is None or config.output.annotate_only, stage,
                                  out["reason"][k], row_scores(out, k, pipeline.score_columns), chunk[j])
        for j in range(len(chunk)):
            yield decided[j]


def filter_dataset(ds: Any, config: FilterConfig | None = None, detector: Detector | None = None,
                   num_proc: int | None = None) -> tuple[Any, Any]:
    """Kept and rejected ``datasets.Dataset`` from ``ds``, via ``map(batched=True)``.

    The rejected dataset gains ``hygiene_stage``, ``hygiene_reason`` and ``hygiene_scores``
    (JSON) columns; the kept one is unchanged unless ``config.output.annotate`` (or
    ``annotate_only``) asks for them. Dedup keeps state across batches, so the map
    runs in this process (``num_proc`` applies to nothing stateful and is refused).
    """
    import datasets
    from datasets.fingerprint import generate_random_fingerprint

    if num_proc not in (None, 1):
        raise ValueError("filter_dataset keeps dedup state across batches and runs in one process")
    config = config or FilterConfig()
    if config.text_field not in ds.column_names:
        raise UserInputError(f"dataset has no text column {config.text_field!r} (columns: {ds.column_names})")
    pipeline = build_pipeline(config, detector)
    counter = itertools.count()

    def annotate(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        size = len(indices)
        ok = [j for j, t in enumerate(batch[config.text_field]) if isinstance(t, str)]
        ids = batch[config.id_field] if config.id_field else [str(i) for i in indices]
        inner = {"id": [str(ids[j]) for j in ok], "n": [next(counter) for _ in ok],
                 "text": [batch[config.text_field][j] for j in ok]}
        out = pipeline(inner) if ok else {**inner, "stage": [], "reason": []}
        stage: list[str | None] = ["error"] * size
        reason: list[str | None] = [f"text field {config.text_field!r} is not a string"] * size
        scores: list[str | None] = ["{}"] * size
        for k, j in enumerate(ok):
            stage[j], reason[j] = out["stage"][k], out["reason"][k]
            scores[j] = json.dumps(row_scores(out, k, pipeline.score_columns))
        return {"hygiene_stage": stage, "hygiene_reason": reason, "hygiene_scores": scores}

    features = ds.features.copy()
    for col in ("hygiene_stage", "hygiene_reason", "hygiene_scores"):
        features[col] = datasets.Value("string")
    tagged = ds.map(annotate, batched=True, batch_size=config.batch_size, with_indices=True, features=features,
                    load_from_cache_file=False, new_fingerprint=generate_random_fingerprint(),
                    desc="hygiene filter")
    if config.output.annotate_only:
        return tagged, tagged.select([])
    keep = tagged.filter(lambda s: [x is None for x in s], input_columns="hygiene_stage", batched=True,
                         load_from_cache_file=False)
    rejected = tagged.filter(lambda s: [x is not None for x in s], input_columns="hygiene_stage", batched=True,
                             load_from_cache_file=False)
    if not config.output.annotate:
        keep = keep.remove_columns(["hygiene_stage", "hygiene_reason", "hygiene_scores"])
    return keep, rejected

