"""The corpus filter on a Ray cluster (``hygiene filter --engine ray``): same stages, same decisions.

The local engine streams records in order and keeps dedup state in one process. Here
the same stage objects (:func:`hygiene.filtering.build_pipeline`) run as Ray Data
``map_batches`` over the whole corpus. The engine knows three kinds of stage, by
what each declares, never by its class:

- a **pure** stage runs inside the fused ``map_batches`` of its neighbours;
- a stage that is **not pure** (it loads a model: the detector) runs on an actor
  pool, each actor calling ``setup`` once (on a GPU with ``gpus_per_worker``), after
  its ``prepare`` step (the detector's cheap features) in the fused ``map_batches``;
- a :class:`~hygiene.stages.KeyedDedup` (exact and near dedup) becomes a global step
  with its own rule, "the earliest document sharing a key wins", where "earliest" is
  the ordinal ``n`` the local engine would give (shards in order, records in order):
  its keys are added in parallel (its ``prepare`` step), exploded to one row per key and
  grouped (min ``n`` and count); a document whose first key (in key order) was
  seen in an earlier document is linked to that document. Links form a forest;
  its trees are the clusters, found by pointer jumping, and the root, the one
  kept document, is every member's earliest (``resolve``), as in the local engine.

Only the keys seen more than once, and the duplicates' (``n``, parent) pairs, come
back to the driver (16 bytes each) and are broadcast to the workers; documents
never leave their blocks for dedup.

The output lines are made on the workers and written by the driver into the layout
the local engine writes (:mod:`hygiene.run_output`): ``kept``, ``rejected`` and
``errors`` files, ``stats.json`` and ``config.yaml``. An interrupted run leaves no
half-written output, and starts over (no resumption on this engine). ``--limit`` and
``--sample`` read the records the local engine reads: the driver picks each shard's
positions (:func:`hygiene.records.sample_positions`, :func:`hygiene.records.limit_quotas`)
and each read task keeps only those.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hygiene.config import FilterConfig, load_config
from hygiene.errors import UserInputError
from hygiene.filtering import Pipeline, build_pipeline, synthetic_threshold
from hygiene.records import (ReadOptions, discover_shards, json_line, limit_quotas, sample_positions,
                             shards_outside)
from hygiene.run_output import Outcome, RunOutput, error_outcome, output_rows, run_stats
from hygiene.stages import Detector, KeyedDedup, Stage
from hygiene.stages.base import FAILED, built_in, own_errors, seconds_of, timed

Step = Callable[[dict[str, list]], dict[str, list]]
#: Arrow types of the engine's own columns; score columns get theirs from the stages' declared types
_TYPES = {"n": pa.int64(), "id": pa.string(), "text": pa.binary(), "record": pa.binary(),
          "stage": pa.string(), "reason": pa.string(), FAILED: pa.list_(pa.string()), "output": pa.string(),
          "line": pa.binary(), "outcome": pa.string()}
#: Arrow types of the Python types stages declare (``list[int]``: 64-bit hash keys, unsigned)
_ARROW = {float: pa.float64(), int: pa.int64(), str: pa.string(), bool: pa.bool_(),
          list[int]: pa.list_(pa.uint64()), list[float]: pa.list_(pa.float64())}


@dataclass
class RayConfig:
    """Where and how wide the Ray engine runs."""

    address: str | None = None  # a running cluster ("auto", "ray://head:10001"); None: RAY_ADDRESS or a local Ray
    workers: int | None = None  # tasks/actors per stage; None: as many as the cluster's CPUs allow
    gpus_per_worker: float = 0.0  # GPUs for each detector actor (0: CPU); the other stages use none


def connect(address: str | None = None) -> float:
    """Join (or start) Ray unless already connected; the seconds it took."""
    try:
        import ray
    except ImportError:
        raise UserInputError("the Ray engine needs Ray: pip install 'collapse-hygiene[ray]'") from None

    if ray.is_initialized():
        return 0.0
    start = time.perf_counter()
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserInputError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
    return time.perf_counter() - start


# -- batches: Arrow tables in Ray, dict[str, list] for the stages ------------------------------
def to_batch(table: pa.Table) -> dict[str, list]:
    """The stages' batch (text as ``str``) from an Arrow block."""
    from hygiene.ray_io import decode

    batch = table.to_pydict()
    if "text" in batch:
        batch["text"] = [decode(t) for t in batch["text"]]
    return batch


def to_table(batch: Mapping[str, Sequence], types: Mapping[str, pa.DataType]) -> pa.Table:
    """An Arrow block from a batch, with the ``types`` of the columns named there (text as UTF-8 bytes)."""
    from hygiene.ray_io import encode

    arrays = {}
    for name, values in batch.items():
        if name == "text":
            values = [encode(t) for t in values]
        arrays[name] = pa.array(values, type=types.get(name))
    return pa.table(arrays)


def column_types(pipeline: Pipeline) -> dict[str, pa.DataType]:
    """Arrow types of the engine's columns and of those the stages write: scores and prepared columns."""
    types = {name: _ARROW[kind] for name, kind in pipeline.columns.items() if kind in _ARROW}
    types.update({name: _ARROW[kind] for stage in pipeline.stages for name, kind in stage.prepared_columns.items()})
    types.update({seconds_of(stage.name): pa.float64() for stage in pipeline.stages})
    return {**_TYPES, **types}


def apply_steps(table: pa.Table, steps: Sequence[Step], types: Mapping[str, pa.DataType]) -> pa.Table:
    """Run ``steps`` over one block (the batch function every ``map_batches`` here calls).

    The ``record`` column stays in Arrow unless a step reads it (stages never drop rows).
    """
    carry = "record" in table.column_names and not any(getattr(s, "reads_record", False) for s in steps)
    batch = to_batch(table.drop_columns(["record"]) if carry else table)
    for step in steps:
        batch = step(batch)
    out = to_table(batch, types)
    return out.append_column("record", table["record"]) if carry else out


def _where(table: pa.Table, column: str, valid: bool) -> pa.Table:
    """Rows whose ``column`` is set (``valid=True``) or null (``valid=False``)."""
    mask = pc.is_valid(table[column]) if valid else pc.is_null(table[column])
    return table.filter(mask)


def _collect(ds: Any, columns: Sequence[str]) -> list[np.ndarray]:
    """Columns of a (small) dataset as numpy arrays on the driver."""
    parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for c in columns:
            parts[c].append(block[c].to_numpy(zero_copy_only=False))
    return [np.concatenate(parts[c]) if parts[c] else np.empty(0) for c in columns]


def _shard_summary(table: pa.Table) -> pa.Table:
    """Per shard in a block: the largest usable-record rank ``k`` and the number of errors."""
    return table.group_by("shard").aggregate([("k", "max"), ("error", "count")])  # columns shard, k_max, error_count


def _error_lines(table: pa.Table, config: FilterConfig) -> pa.Table:
    """The error rows of a block as output rows for ``errors``."""
    lines = _where(table, "error", True)["error"]
    outcomes = [error_outcome(json.loads(line), config).to_json() for line in lines.to_pylist()]
    return pa.table({"output": pa.array(["errors"] * len(lines), pa.string()), "line": lines,
                     "outcome": pa.array(outcomes, pa.string())})


def repeated_keys(ds: Any, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Keys of ``ds`` seen more than once, sorted, with the smallest ``n`` of each."""
    from ray.data.aggregate import Count, Min

    grouped = ds.groupby(key).aggregate(Min("n"), Count())
    repeated = grouped.map_batches(lambda t: t.filter(pc.greater(t["count()"], 1)), batch_format="pyarrow",
                                   batch_size=None)
    keys, first = _collect(repeated, [key, "min(n)"])
    order = np.argsort(keys)
    return keys[order].astype(np.int64), first[order].astype(np.int64)


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found, value) for each query key in a sorted table."""
    if len(sorted_keys) == 0:
        return np.zeros(query.shape, bool), np.zeros(query.shape, np.int64)
    pos = np.minimum(np.searchsorted(sorted_keys, query), len(sorted_keys) - 1)
    return sorted_keys[pos] == query, values[pos]


def cluster_roots(child: np.ndarray, parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted children and the root of each in the parent forest (pointer jumping, log(depth) rounds)."""
    order = np.argsort(child)
    child, root = child[order].astype(np.int64), parent[order].astype(np.int64)
    while True:
        has, up = _lookup(child, root, root)
        if not has.any():
            return child, root
        root = np.where(has, up, root)


# -- the steps around the stages ---------------------------------------------------------------
@dataclass
class AssignOrdinals:
    """Give each readable record the ordinal ``n`` the local engine would: shard offset + rank in shard."""

    offsets: np.ndarray

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        n = self.offsets[np.asarray(batch["shard"], np.int64)] + np.asarray(batch["k"], np.int64)
        rest = {k: v for k, v in batch.items() if k not in ("shard", "line", "k")}
        return {"id": rest.pop("id"), "n": n.tolist(), **rest}


def explode_keys(table: pa.Table, column: str) -> pa.Table:
    """One row (``key``, ``n``) per key of each document that has keys."""
    table = _where(table, column, True)
    keys = table[column].combine_chunks()
    parents = pc.list_parent_indices(keys)
    key = pc.cast(pc.list_flatten(keys), pa.int64(), safe=False)  # same bits, signed: Ray sorts int64
    return pa.table({"key": key, "n": pc.take(table["n"], parents)})


@dataclass
class Parents:
    """The parent of each duplicate: the first ``n`` of its first key (in key order) seen before it."""

    column: str
    keys: np.ndarray
    first: np.ndarray

    def __call__(self, table: pa.Table) -> pa.Table:
        table = _where(table, self.column, True)
        n = table["n"].to_numpy()
        if len(n) == 0:
            return pa.table({"n": pa.array([], pa.int64()), "parent": pa.array([], pa.int64())})
        flat = pc.list_flatten(table[self.column].combine_chunks()).to_numpy()
        keys = flat.view(np.int64).reshape(len(n), -1)
        found, first = _lookup(self.keys, self.first, keys)
        earlier = found & (first < n[:, None])
        has = earlier.any(axis=1)
        key = earlier.argmax(axis=1)
        return pa.table({"n": n[has], "parent": first[np.flatnonzero(has), key[has]]})


@dataclass
class Resolve:
    """A dedup stage's decisions, given the root of every linked document (``child`` sorted)."""

    stage: KeyedDedup
    child: np.ndarray
    root: np.ndarray

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        return timed(self.stage.name, self._resolve, batch)

    def _resolve(self, batch: dict[str, list]) -> dict[str, list]:
        found, root = _lookup(self.child, self.root, np.asarray(batch["n"], np.int64))
        return self.stage.resolve(batch, np.where(found, root, np.asarray(batch["n"], np.int64)).tolist())


class StageActor:
    """An actor running one stage that is not pure (a model), set up once per actor."""

    def __init__(self, stage: Stage, types: Mapping[str, pa.DataType]) -> None:
        self.stage, self.types = stage, types
        with own_errors(stage, "could not set up"):
            stage.setup()

    def __call__(self, table: pa.Table) -> pa.Table:
        return apply_steps(table, [self.stage], self.types)


@dataclass
class OutputLines:
    """The line each record gets in ``kept`` or ``rejected``, as the local engine writes it."""

    config: FilterConfig
    columns: tuple[str, ...]
    reads_record = True

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        from hygiene.ray_io import decode

        lines, outputs, outcomes = [], [], []
        records = (json.loads(decode(raw)) for raw in batch["record"])
        for name, row, outcome in output_rows(records, batch, self.columns, self.config):
            outputs.append(name)
            lines.append(json_line(row))
            outcomes.append(outcome.to_json())
        return {"output": outputs, "line": lines, "outcome": outcomes}


# -- the run -----------------------------------------------------------------------------------
class RayFilterRun:
    """One run of the filter over ``inputs`` on Ray into ``out_dir`` (``None``: dry run)."""

    def __init__(self, inputs: Sequence[str | Path], out_dir: str | Path | None, config: FilterConfig,
                 ray_config: RayConfig | None = None, detector: Detector | None = None,
                 progress: bool = True) -> None:
        self.config, self.ray = config, ray_config or RayConfig()
        self.output = RunOutput(out_dir)
        self.shards = shards_outside(discover_shards(inputs), self.output.dir)
        self.inputs = [str(i) for i in inputs]
        self.pipeline = build_pipeline(config, detector)
        self.pipeline.setup()  # loads the detector now: fail early
        self.threshold = synthetic_threshold(self.pipeline)
        self.types = column_types(self.pipeline)
        self.progress = progress
        # --sample and --limit: the records the local engine would read (positions and counts per shard)
        options = ReadOptions(config.text_field, config.txt_unit)
        self.positions = (sample_positions(self.shards, options, config.sample, config.sample_seed)
                          if config.sample is not None else None)
        self.quotas = limit_quotas(self.shards, options, config.limit) if config.limit is not None else None
        self._documents: Any = None  # the readable records, between reading and the first stages

    def _map(self, ds: Any, steps: Sequence[Step]) -> Any:
        """``ds`` through ``steps`` as one ``map_batches`` (nothing if no steps)."""
        if not steps:
            return ds
        return ds.map_batches(apply_steps, fn_args=(list(steps), self.types), batch_size=self.config.batch_size,
                              batch_format="pyarrow", concurrency=self.ray.workers)

    def _pool_size(self) -> int:
        """Actors for a stage that is not pure: ``workers``, else as many as the cluster's CPUs (or GPUs) allow."""
        import ray

        if self.ray.workers:
            return self.ray.workers
        resources = ray.cluster_resources()
        if self.ray.gpus_per_worker > 0:
            return max(1, int(resources.get("GPU", 0) // self.ray.gpus_per_worker))
        return max(1, int(resources.get("CPU", 1)))

    def _read(self) -> tuple[Any, np.ndarray, np.ndarray]:
        """Read every shard once (materialised); (error lines, ordinal offset of each shard, errors per shard).

        The readable records are left in ``self._documents`` for :meth:`_decide`, which takes
        them over, so the read blocks are freed once the first stages have materialised.
        """
        import ray.data

        from hygiene.ray_io import ShardDatasource

        source = ShardDatasource(self.shards, self.config, self.positions, self.quotas)
        rows = ray.data.read_datasource(source).materialize()
        docs = rows.map_batches(lambda t: _where(t, "error", False).drop_columns(["error"]),
                                batch_format="pyarrow", batch_size=None)
        errors = rows.map_batches(_error_lines, fn_args=(self.config,), batch_format="pyarrow",
                                  batch_size=None).materialize()
        shard, last, bad = _collect(rows.map_batches(_shard_summary, batch_format="pyarrow", batch_size=None),
                                    ["shard", "k_max", "error_count"])
        usable = np.zeros(len(self.shards), np.int64)
        np.maximum.at(usable, shard.astype(np.int64), last.astype(np.int64) + 1)
        n_errors = np.zeros(len(self.shards), np.int64)
        np.add.at(n_errors, shard.astype(np.int64), bad.astype(np.int64))
        self._documents = docs
        return errors, np.concatenate([[0], np.cumsum(usable)[:-1]]), n_errors

    def _decide(self, offsets: np.ndarray) -> Any:
        """Every stage of the pipeline over the documents read; the output lines (``output``, ``line``, ``decision``)."""
        steps: list[Step] = [AssignOrdinals(offsets)]
        ds, self._documents = self._documents, None
        for stage in self.pipeline.stages:
            if isinstance(stage, KeyedDedup):
                ds = self._map(ds, [*steps, stage.prepared]).materialize()
                steps = [self._dedup(ds, stage)]
            elif stage.pure:
                steps.append(stage)
            else:
                if stage.prepared_columns:
                    steps.append(stage.prepared)
                ds = self._map(ds, steps).map_batches(
                    StageActor, fn_constructor_args=(stage, self.types), batch_size=self.config.batch_size,
                    batch_format="pyarrow", concurrency=self._pool_size(), num_gpus=self.ray.gpus_per_worker or None)
                steps = []
        steps.append(OutputLines(self.config, tuple(self.pipeline.columns)))
        return self._map(ds, steps)

    @staticmethod
    def _dedup(ds: Any, stage: KeyedDedup) -> Resolve:
        """The global step of a dedup stage over a dataset holding its keys: each document's root."""
        keyed = ds.select_columns([stage.key_column, "n"])
        keys, first = repeated_keys(keyed.map_batches(explode_keys, fn_args=(stage.key_column,),
                                                      batch_format="pyarrow", batch_size=None), "key")
        parents = keyed.map_batches(Parents(stage.key_column, keys, first), batch_format="pyarrow", batch_size=None)
        return Resolve(stage, *cluster_roots(*_collect(parents, ["n", "parent"])))

    def run(self, overwrite: bool = False) -> dict[str, Any]:
        """Filter every shard; write the outputs and return the stats.

        Ray Data's own log lines are held back while it runs (they stay in Ray's session logs): a stage's
        error reaches the caller as one line, not after Ray's logged traceback of it; any other failure
        still raises with its traceback."""
        import ray.data  # noqa: F401  (it sets up its logging on import: what is changed here comes after)

        data_log = logging.getLogger("ray.data")
        level = data_log.level
        data_log.setLevel(logging.CRITICAL)
        try:
            return self._run(overwrite)
        finally:
            data_log.setLevel(level)
            self.output.unlock()

    def _run(self, overwrite: bool) -> dict[str, Any]:
        import ray
        import ray.data

        output = self.output
        if output.dir is not None:
            output.prepare(False, overwrite, again="--overwrite (the Ray engine restarts)")
        startup = connect(self.ray.address)
        _ship_user_stages(self.pipeline)
        context = ray.data.DataContext.get_current()
        saved = context.enable_progress_bars, context.shuffle_strategy, context.raise_original_map_exception
        context.enable_progress_bars = self.progress
        context.shuffle_strategy = ray.data.context.ShuffleStrategy.SORT_SHUFFLE_PULL_BASED  # tasks, no actors
        context.raise_original_map_exception = True  # a stage's UserInputError reaches here, for one line
        start = time.perf_counter()
        output.open()
        try:
            errors, offsets, n_errors = self._read()
            limit = self.config.max_errors
            if limit is not None and n_errors.sum() > limit:
                where = self.shards[int(np.flatnonzero(n_errors)[0])].name
                raise UserInputError(f"more than {limit} unreadable records (the first in {where}); run stopped")
            lines = self._decide(offsets).union(errors)
            for block in lines.iter_batches(batch_size=None, batch_format="pyarrow"):
                for name, line, outcome in zip(*(block[c].to_pylist() for c in ("output", "line", "outcome"))):
                    output.write(name, line, Outcome.from_json(outcome))
        except Exception as exc:
            user = _user_error(exc)
            if user is None:
                raise
            raise user from None
        finally:
            self._documents = None
            context.enable_progress_bars, context.shuffle_strategy, context.raise_original_map_exception = saved
            output.close()
        elapsed = time.perf_counter() - start
        cluster = {"address": self.ray.address, "workers": self.ray.workers, "gpus_per_worker": self.ray.gpus_per_worker,
                   "startup_s": round(startup, 3), "cluster_cpus": ray.cluster_resources().get("CPU"),
                   "version": ray.__version__}
        stats = run_stats(output.counts, self.config, inputs=self.inputs, shards=len(self.shards), elapsed=elapsed,
                          processed=output.counts.records_in, threshold=self.threshold, engine="ray",
                          stages=[stage.name for stage in self.pipeline.stages], ray=cluster)
        output.finish(self.config, stats)
        return stats


def _user_error(exc: BaseException) -> UserInputError | None:
    """The :class:`UserInputError` a task raised (a stage's one-line error), from inside the exceptions Ray
    wraps it in, or ``None``."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        if isinstance(e, UserInputError) and getattr(e, "cause", None) is None:  # not Ray's wrapper of one
            return UserInputError(str(e).splitlines()[0])  # Ray appends lines of its own (attempts made)
        seen.add(id(e))
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None


def _ship_user_stages(pipeline: Pipeline) -> None:
    """Send the code of stages defined outside this package with the job, so workers need not import it."""
    from ray import cloudpickle

    for stage in pipeline.stages:
        if not built_in(stage):
            cloudpickle.register_pickle_by_value(sys.modules[type(stage).__module__])


def run_filter_ray(inputs: Sequence[str | Path], out_dir: str | Path | None, config: FilterConfig | None = None,
                   ray_config: RayConfig | None = None, *, resume: bool = False, overwrite: bool = False,
                   detector: Detector | None = None, progress: bool = True) -> dict[str, Any]:
    """Filter the shards of ``inputs`` on Ray into ``out_dir`` (``None``: dry run); return the stats.

    ``resume`` is refused: a Ray run that stops starts over (its outputs appear only at the end).
    """
    if resume:
        raise UserInputError("the Ray engine cannot resume an interrupted run: rerun with --overwrite")
    config = config or load_config()
    return RayFilterRun(inputs, out_dir, config, ray_config, detector, progress).run(overwrite)
