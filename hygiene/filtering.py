"""The corpus filter as a pipeline of batch stages, and its two library entry points.

Stages (:mod:`hygiene.stages`) run in this order, each switchable in
:class:`~hygiene.config.FilterConfig`: normalise -> empty-text check -> exact dedup ->
Gopher quality -> MinHash near dedup -> your own stages (``stages``) -> synthetic-text
detector. Cheap stages come first and a stage only scores the
documents still undecided, so the detector sees only unique, decent text; with
``annotate_only`` every stage scores every document and nothing is dropped.

- :func:`filter_records` takes any iterable of records (dicts or strings) and yields
  one :class:`Decision` per record, in order;
- :func:`filter_dataset` runs the same stages over a ``datasets.Dataset``'s text column and
  returns the kept and rejected datasets, the decisions set beside the input's columns.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from hygiene.batch import BatchBuilder, has_score, record_id
from hygiene.config import FilterConfig, load_config
from hygiene.errors import UserInputError, many
from hygiene.records import dumps_record
from hygiene.stages import (
    Detector,
    ExactDedup,
    KeyedDedup,
    NearDedup,
    Normalize,
    QualityFilter,
    RejectEmpty,
    Stage,
    SyntheticFilter,
    load_stage,
)
from hygiene.stages.base import FAILED, own_errors

Step = Callable[[Mapping[str, Sequence]], dict[str, list]]


def run_stages(steps: Sequence[Step], batch: Mapping[str, Sequence]) -> dict[str, list]:
    """Apply ``steps`` to ``batch`` in order."""
    out = dict(batch)
    for step in steps:
        out = step(out)
    return out


@dataclass
class Pipeline:
    """The stages of a filter, in order."""

    stages: list[Stage]
    annotate_only: bool = False  # every stage scores every document; nothing is dropped

    def __call__(self, batch: Mapping[str, Sequence]) -> dict[str, list]:
        """Run every stage over one batch (columns ``id``, ``n``, ``text``)."""
        return run_stages(self.stages, batch)

    @property
    def columns(self) -> dict[str, type]:
        """Every score column the stages write, with its type."""
        return {name: kind for stage in self.stages for name, kind in stage.columns.items()}

    @property
    def dedup(self) -> list[KeyedDedup]:
        """The stages that keep an index across batches (saved and restored by a resumable run)."""
        return [s for s in self.stages if isinstance(s, KeyedDedup)]

    def segments(self) -> list[tuple[bool, list[Step]]]:
        """Runs of consecutive steps that may all run in worker processes, or all not: ``(parallel, steps)``.

        A step may when its stage is pure or ``per_process``. A stage with a ``prepare`` step splits
        in two: that step is pure (computed in parallel), the stage (a dedup index, a GPU) may not be.
        """
        out: list[tuple[bool, list[Step]]] = []
        for stage in self.stages:
            steps = [(True, stage.prepared)] if stage.prepared_columns else []
            steps.append((stage.pure or stage.per_process, stage))
            for pure, step in steps:
                if out and out[-1][0] == pure:
                    out[-1][1].append(step)
                else:
                    out.append((pure, [step]))
        return out

    def setup(self) -> None:
        """Load what every stage needs now (a model), so a run fails before it starts."""
        for stage in self.stages:
            with own_errors(stage, "could not set up"):
                stage.setup()


def build_pipeline(config: FilterConfig | None = None, detector: Detector | None = None) -> Pipeline:
    """The stages ``config`` switches on, in order, with fresh dedup indexes.

    ``detector`` replaces the default detector (loaded from ``models/detector`` on first use).
    Without ``config``, the default profile (:func:`hygiene.config.load_config`).
    """
    config = config or load_config()
    stages: list[Stage] = [Normalize()] if config.normalize.enabled else []
    stages.append(RejectEmpty())
    if config.exact_dedup.enabled:
        stages.append(ExactDedup(config.exact_dedup))
    if config.quality.enabled:
        stages.append(QualityFilter(config.quality))
    if config.near_dedup.enabled:
        stages.append(NearDedup(config.near_dedup))
    stages += [load_stage(spec) for spec in config.stages]
    if config.synthetic.enabled:
        stages.append(SyntheticFilter(config.synthetic, detector))
    for stage in stages:
        stage.annotate_only = config.output.annotate_only
    return Pipeline(stages, config.output.annotate_only)


def synthetic_threshold(pipeline: Pipeline) -> float | None:
    """The probability above which the detector stage rejects a text (``None`` without that stage)."""
    return next((s.threshold for s in pipeline.stages if isinstance(s, SyntheticFilter)), None)


@dataclass
class Decision:
    """Where one record went and why."""

    id: str
    kept: bool
    stage: str | None  # first rejecting stage ("input", "exact_dedup", ...), "error" if unreadable
    reason: str | None  # the first rule it fails
    scores: dict[str, Any] = field(default_factory=dict)
    record: Any = None
    failed: list[str] = field(default_factory=list)  # every rule of its stage it fails (empty when kept)
    #: its ordinal among the readable records (None for an error): what ``exact_duplicate_of`` and
    #: ``near_cluster`` point at
    n: int | None = None


def row_scores(batch: Mapping[str, Sequence], i: int, columns: Iterable[str]) -> dict[str, Any]:
    """The scores of row ``i`` (columns the stages added; absent or unscored ones left out)."""
    return {c: batch[c][i] for c in columns if c in batch and has_score(batch[c][i])}


def filter_records(records: Iterable[Any], config: FilterConfig | None = None,
                   detector: Detector | None = None) -> Iterator[Decision]:
    """One :class:`Decision` per record of ``records``, in order, streaming in batches.

    Records are mappings holding ``config.text_field`` (or plain strings). Ids come from
    ``config.id_field`` (an unreadable record's too, where its id is usable) or the record's position.
    A record without a usable text is not lost: its decision has stage ``"error"``. Without ``config``,
    the default profile. ``records`` itself being one string or one mapping is a ``TypeError``.
    """
    config = config or load_config()
    return _decisions(iter(many(records, "records")), build_pipeline(config, detector), config)


def _decisions(records: Iterator[Any], pipeline: Pipeline, config: FilterConfig) -> Iterator[Decision]:
    """:func:`filter_records`'s stream, a batch at a time."""
    builder = BatchBuilder(config.text_field, config.id_field)
    start = 0
    while chunk := list(itertools.islice(records, config.batch_size)):
        yield from _decide(pipeline, builder, chunk, start)
        start += len(chunk)


def _decide(pipeline: Pipeline, builder: BatchBuilder, records: Sequence[Any], start: int) -> list[Decision]:
    """One :class:`Decision` per record; a record's position (from ``start``) is its id unless it names one."""
    errors = [builder.add(record, str(start + j)) for j, record in enumerate(records)]
    batch = builder.take()
    out = pipeline(batch) if batch["n"] else batch
    decided, k = [], 0
    for j, (record, error) in enumerate(zip(records, errors)):
        if error is not None:
            rid = record_id(record, builder.id_field, str(start + j))
            decided.append(Decision(rid, False, "error", error, {}, record, [error]))
            continue
        stage, reason = out["stage"][k], out["reason"][k]
        failed = (out[FAILED][k] if FAILED in out else None) or ([reason] if stage is not None else [])
        decided.append(Decision(out["id"][k], stage is None or pipeline.annotate_only, stage, reason,
                                row_scores(out, k, pipeline.columns), record, list(failed), int(out["n"][k])))
        k += 1
    return decided


#: the columns ``filter_dataset`` adds to a rejected (or annotated) row: ``hygiene_n`` is the row's ordinal
#: among the readable rows, which ``exact_duplicate_of`` and ``near_cluster`` in ``hygiene_scores`` point at
ANNOTATIONS = ("hygiene_stage", "hygiene_reason", "hygiene_failed", "hygiene_scores", "hygiene_n")


def _annotations(d: Decision) -> tuple[str | None, str | None, str, str, int | None]:
    """A decision as the values of :data:`ANNOTATIONS`."""
    return d.stage, d.reason, json.dumps(d.failed), dumps_record(d.scores), d.n


def _annotation_features() -> Any:
    import datasets

    return {col: datasets.Value("int64" if col == "hygiene_n" else "string") for col in ANNOTATIONS}


def filter_dataset(ds: Any, config: FilterConfig | None = None, detector: Detector | None = None) -> tuple[Any, Any]:
    """Kept and rejected ``datasets.Dataset`` from ``ds`` (its text and id columns read in order, the decisions
    set beside it as columns of their own); from a streaming ``datasets.IterableDataset``, kept and rejected
    streams (:func:`_filter_stream`).

    The rejected dataset gains ``hygiene_stage``, ``hygiene_reason`` (the first failed rule),
    ``hygiene_failed`` (every failed rule, JSON), ``hygiene_scores`` (JSON) and ``hygiene_n`` (the row's
    ordinal among the readable rows, which the duplicate pointers in the scores name) columns; the kept
    one is unchanged unless ``config.output.annotate`` (or ``annotate_only``) asks for them. A
    dataset that has one of those columns already is refused (:class:`UserInputError`).
    Dedup keeps state across batches, so the filter runs in this process (for parallel
    normalisation, quality and hashing, ``config.workers`` with :func:`hygiene.filter_run.run_filter`).
    Without ``config``, the default profile.
    """
    import datasets
    from datasets.fingerprint import generate_random_fingerprint

    config = config or load_config()
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        first = next(iter(ds), "train")
        raise UserInputError(f"a DatasetDict of splits {list(ds)}: filter one split at a time, e.g. ds[{first!r}]")
    if ds.column_names is not None and config.text_field not in ds.column_names:
        raise UserInputError(f"dataset has no text column {config.text_field!r} (columns: {ds.column_names})")
    taken = [c for c in ANNOTATIONS if c in (ds.column_names or ())]
    if taken:  # the filter's columns would overwrite them
        raise UserInputError(f"dataset already has the filter's column(s) {', '.join(taken)} (filtered before?): "
                             f"remove or rename them first, e.g. ds.remove_columns({taken})")
    if config.id_field is not None and ds.column_names is not None and config.id_field not in ds.column_names:
        raise UserInputError(f"dataset has no id column {config.id_field!r} (columns: {ds.column_names})")
    if isinstance(ds, datasets.IterableDataset):
        return _filter_stream(ds, config, detector)
    from datasets.io.generator import GeneratorDatasetInputStream

    shown = ds.format["type"]  # pandas or arrow batches are not rows of values: filter unformatted, give it back
    ds = ds.with_format(None)
    pipeline = build_pipeline(config, detector)
    # the filter reads the text (and id) alone: no other column is decoded (images) or copied into the cache;
    # the annotations are a table of their own, set beside the input's
    read = ds.select_columns([c for c in (config.text_field, config.id_field) if c is not None])

    def annotations() -> Iterator[dict[str, Any]]:
        for d in _decisions(iter(read), pipeline, config):
            yield dict(zip(ANNOTATIONS, _annotations(d)))

    columns = list(ANNOTATIONS)
    kinds = datasets.Features(_annotation_features())
    if len(ds):  # a fingerprint given: the generator (holding the detector) is not hashed
        notes = GeneratorDatasetInputStream(annotations, kinds, fingerprint=generate_random_fingerprint()).read()
        tagged = datasets.concatenate_datasets([ds, notes], axis=1)
    else:  # no rows to set beside: the outputs still have the documented columns
        features = datasets.Features({**ds.features, **kinds})
        tagged = datasets.Dataset.from_dict({name: [] for name in features}, features=features)
    if config.output.annotate_only:
        return tagged.with_format(shown), tagged.select([]).with_format(shown)
    keep = tagged.filter(lambda s: [x is None for x in s], input_columns="hygiene_stage", batched=True,
                         load_from_cache_file=False)
    rejected = tagged.filter(lambda s: [x is not None for x in s], input_columns="hygiene_stage", batched=True,
                             load_from_cache_file=False)
    if not config.output.annotate:
        keep = keep.remove_columns(columns)
    return keep.with_format(shown), rejected.with_format(shown)


def _stream_rows(ds: Any, config: FilterConfig, detector: Detector | None, kept: bool) -> Iterator[dict[str, Any]]:
    """The kept (or rejected) rows of a fresh filter run over ``ds``, as :func:`filter_dataset` writes them."""
    import torch.utils.data

    worker = torch.utils.data.get_worker_info()
    if worker is not None and worker.num_workers > 1:  # one dedup index reads the whole source: not shareable
        raise UserInputError(f"the filter's streams are read whole by one process (dedup spans every row): read "
                             f"them with num_workers=1, not {worker.num_workers}, or filter the shards apart")
    annotate = config.output.annotate or config.output.annotate_only
    for d in filter_records(ds, config, detector):
        if (d.kept or config.output.annotate_only) == kept:  # as filter_dataset: annotating drops nothing
            yield {**d.record, **dict(zip(ANNOTATIONS, _annotations(d)))} if annotate or not kept else d.record


def _filter_stream(ds: Any, config: FilterConfig, detector: Detector | None) -> tuple[Any, Any]:
    """Kept and rejected ``datasets.IterableDataset`` of a streaming ``ds``, rows as :func:`filter_dataset`
    writes them. Each filters ``ds`` afresh, with a dedup index of its own, every time it is read: the
    same rows every time, and reading both runs the filter twice."""
    import datasets
    from datasets.fingerprint import generate_random_fingerprint
    from datasets.io.generator import GeneratorDatasetInputStream

    def features(annotated: bool) -> Any:
        if ds.features is None:
            return None
        out = ds.features.copy()
        if annotated:
            out.update(_annotation_features())
        return out

    def stream(kept: bool, annotated: bool) -> Any:
        # IterableDataset.from_generator's own machinery, with a fingerprint given so that it does not hash
        # (pickle) the dataset, config and detector it is handed: a detector holds unpicklable sessions
        return GeneratorDatasetInputStream(_stream_rows, features(annotated), streaming=True,
                                           gen_kwargs={"ds": ds, "config": config, "detector": detector,
                                                       "kept": kept},
                                           fingerprint=generate_random_fingerprint()).read()

    return stream(True, config.output.annotate or config.output.annotate_only), stream(False, True)
