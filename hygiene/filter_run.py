"""A filter run over files: stream shards through the pipeline, write the outputs, resume after a stop.

Output directory::

    kept.jsonl       records unchanged (plus a "hygiene" field with --annotate); .parquet with format parquet
    rejected.jsonl   each record plus "hygiene": {id, n, stage, reason, scores}
    errors.jsonl     {shard, line, error[, record | raw]} for every record that could not be read
    stats.json       counts per stage and reason, throughput, config, versions
    config.yaml      the effective config (reusable with --config)

While running, outputs are appended under ``DIR/.partial/``; at each checkpoint (a
shard boundary, at most every ``checkpoint_seconds``) the files are synced and their
sizes, the finished shards, the counters and the new dedup-index entries are saved.
``resume`` truncates the files to the last checkpoint, reloads the index and skips
the finished shards, so nothing is written twice. At the end each file is moved
into place with an atomic rename. Invariant: records in = kept + rejected + errors.

Batches stream through the stages in order. With ``workers > 1`` the pure stages
(normalise, quality, MinHash hashing) run in a process pool, a wave of batches at a
time, while the dedup lookups, the detector and the writing stay in this process;
the stream is drained before each checkpoint, so the saved index never runs ahead
of the saved outputs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import platform
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

from tqdm.auto import tqdm

from hygiene import __version__
from hygiene.atomic import write_json
from hygiene.config import FilterConfig, write_config
from hygiene.errors import UserInputError
from hygiene.batch import BatchBuilder
from hygiene.filtering import Pipeline, build_pipeline, row_scores, run_stages, synthetic_threshold
from hygiene.records import (
    Item,
    Shard,
    discover_shards,
    jsonl_to_parquet,
    read_shard,
    shards_outside,
    write_jsonl_line,
)
from hygiene.stages import Detector

OUTPUTS = ("kept", "rejected", "errors")
log = logging.getLogger(__name__)
PARTIAL = ".partial"


@dataclass
class Counts:
    """Running totals of a run (persisted in the checkpoint)."""

    records_in: int = 0
    kept: int = 0
    rejected: int = 0
    errors: int = 0
    by_stage: Counter = field(default_factory=Counter)  # "stage/reason" -> count
    next_n: int = 0  # ordinal of the next readable record
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"records_in": self.records_in, "kept": self.kept, "rejected": self.rejected,
                "errors": self.errors, "by_stage": dict(self.by_stage), "next_n": self.next_n,
                "elapsed_s": self.elapsed_s}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Counts:
        return cls(d["records_in"], d["kept"], d["rejected"], d["errors"], Counter(d["by_stage"]),
                   d["next_n"], d["elapsed_s"])


@dataclass
class _Packet:
    """One batch on its way through the stages, with the records behind it and the errors met reading them."""

    shard: str
    last: bool  # the last batch of its shard
    items: int  # records read (errors included)
    batch: dict[str, list]
    records: list[dict[str, Any]]
    errors: list[dict[str, Any]]


def _worker_pool(workers: int) -> Any:
    """A process pool for the pure stages: forked where the platform can (fast start, nothing to
    re-import; the workers never touch the detector's threads), spawned elsewhere."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method).Pool(workers, initializer=_ignore_sigint)


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the main process, which stops them (no traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _apply(stages: Sequence[Any], packet: _Packet) -> _Packet:
    """Run ``stages`` over a packet's batch (module level, so worker processes can unpickle it)."""
    if packet.records:
        packet.batch = run_stages(stages, packet.batch)
    return packet


class _Sink:
    """The three output files of a run (or nothing, for a dry run)."""

    def __init__(self, directory: Path | None, offsets: dict[str, int] | None = None) -> None:
        self.files: dict[str, IO[bytes]] = {}
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        for name in OUTPUTS:
            path = directory / f"{name}.jsonl"
            fh = path.open("r+b" if path.exists() else "w+b")
            fh.truncate((offsets or {}).get(name, 0))
            fh.seek(0, os.SEEK_END)
            self.files[name] = fh

    def write(self, name: str, record: dict[str, Any]) -> None:
        if self.files:
            write_jsonl_line(self.files[name], record)

    def sync(self) -> dict[str, int]:
        """Flush and fsync every file; their sizes (the checkpoint offsets)."""
        for fh in self.files.values():
            fh.flush()
            os.fsync(fh.fileno())
        return {name: fh.tell() for name, fh in self.files.items()}

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()


def _fingerprint(config: FilterConfig, shards: Sequence[Shard]) -> str:
    """Hash of everything that must not change between a run and its resumption."""
    cfg = config.to_dict()
    for key in ("checkpoint_seconds", "workers"):  # may change between a run and its resumption
        cfg.pop(key)
    blob = json.dumps({"config": cfg, "shards": [s.name for s in shards]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    """Versions of the software that produced an output."""
    import numpy
    import pyarrow

    return {"hygiene": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "pyarrow": pyarrow.__version__}


class FilterRun:
    """One run of the filter over ``inputs`` into ``out_dir`` (``None``: dry run, nothing written)."""

    def __init__(self, inputs: Sequence[str | Path], out_dir: str | Path | None, config: FilterConfig,
                 detector: Detector | None = None, progress: bool = True) -> None:
        self.config = config
        self.out = Path(out_dir) if out_dir is not None else None
        self.shards = shards_outside(discover_shards(inputs), self.out)
        self.inputs = [str(i) for i in inputs]
        self.pipeline: Pipeline = build_pipeline(config, detector)
        self.pipeline.setup()  # loads the detector now: fail early
        self.threshold = synthetic_threshold(self.pipeline)
        self.progress = progress
        self.counts = Counts()
        self.done: list[str] = []
        self.deltas: list[str] = []

    @property
    def partial(self) -> Path:
        assert self.out is not None
        return self.out / PARTIAL

    # -- setup and resumption -------------------------------------------------------------
    def _prepare(self, resume: bool, overwrite: bool) -> dict[str, int]:
        """Check the output directory; on resume restore the checkpoint. Returns the file offsets."""
        assert self.out is not None
        finished = (self.out / "stats.json").exists()
        if self.partial.exists() and not resume and not overwrite:
            raise UserInputError(f"{self.out} holds an interrupted run: pass --resume to continue or --overwrite")
        if finished and not resume and not overwrite:
            raise UserInputError(f"{self.out} already holds a finished run: pass --overwrite or choose another --out")
        if overwrite:
            shutil.rmtree(self.partial, ignore_errors=True)
            for p in self.out.glob("*"):
                if p.name.split(".")[0] in OUTPUTS + ("stats", "config") and p.is_file():
                    p.unlink()
        checkpoint = self.partial / "checkpoint.json"
        if not (resume and checkpoint.exists()):
            shutil.rmtree(self.partial, ignore_errors=True)
            self.partial.mkdir(parents=True)
            write_json(checkpoint, self._checkpoint_state({name: 0 for name in OUTPUTS}))
            return {name: 0 for name in OUTPUTS}
        try:
            state = json.loads(checkpoint.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserInputError(f"unreadable checkpoint {checkpoint}: {exc}") from None
        if state.get("fingerprint") != _fingerprint(self.config, self.shards):
            raise UserInputError(f"cannot resume {self.out}: the inputs or the config differ from the interrupted run")
        self.counts = Counts.from_dict(state["counts"])
        self.done, self.deltas = list(state["done"]), list(state["deltas"])
        for p in self.partial.glob("index-*.npz"):
            if p.name not in self.deltas:
                p.unlink()  # written after the last checkpoint
        for stage in self.pipeline.dedup:
            stage.index.load_deltas([self.partial / d for d in self.deltas if d.startswith(f"index-{stage.name}-")])
        return state["offsets"]

    def _checkpoint_state(self, offsets: dict[str, int]) -> dict[str, Any]:
        return {"fingerprint": _fingerprint(self.config, self.shards), "done": self.done, "deltas": self.deltas,
                "offsets": offsets, "counts": self.counts.to_dict(), "inputs": self.inputs}

    def _checkpoint(self, sink: _Sink, elapsed: float) -> None:
        """Sync outputs, save the new index entries, then record the state (in that order)."""
        offsets = sink.sync()
        k = len(self.deltas) // max(len(self.pipeline.dedup), 1)
        for stage in self.pipeline.dedup:
            fname = f"index-{stage.name}-{k:06d}.npz"
            stage.index.save_delta(self.partial / fname)
            self.deltas.append(fname)
        counts = self.counts.to_dict()
        counts["elapsed_s"] += elapsed
        state = self._checkpoint_state(offsets)
        state["counts"] = counts
        write_json(self.partial / "checkpoint.json", state)

    # -- the loop -------------------------------------------------------------------------
    def _packets(self, shards: Sequence[Shard], deadline: float) -> Iterator[_Packet]:
        """Batches of the shards, in order, each shard ending with a ``last`` packet.

        Stops after the first shard that ends past ``deadline``, so a checkpoint can follow.
        """
        size = self.config.batch_size
        for shard in shards:
            items: list[Item] = []
            for item in read_shard(shard, self.config.text_field):
                items.append(item)
                if len(items) >= size:
                    yield self._pack(shard, items, last=False)
                    items = []
            yield self._pack(shard, items, last=True)
            if time.perf_counter() >= deadline:
                return

    def _pack(self, shard: Shard, items: list[Item], last: bool) -> _Packet:
        """Turn read items into a batch for the stages, setting aside the ones that cannot be filtered."""
        packet = _Packet(shard.name, last, len(items), {}, [], [])
        builder = BatchBuilder(self.config.text_field, self.config.id_field, self.counts.next_n)
        for item in items:
            if item.error is None:
                error = builder.add(item.record, f"{item.shard}:{item.line}")
                if error is None:
                    packet.records.append(item.record)
                    continue
                item = dataclasses.replace(item, error=error)
            elif item.shard_failed:
                log.warning("%s: %s", item.shard, item.error)
            packet.errors.append(item.error_record())
        packet.batch, self.counts.next_n = builder.take(), builder.next_n
        return packet

    def _stream(self, shards: Sequence[Shard], deadline: float, pool: Any) -> Iterator[_Packet]:
        """Packets through every stage, in order.

        With a worker ``pool`` the packets go in waves of two per worker: each pure segment
        of the pipeline maps over the wave in the pool, each other segment runs over it here,
        in order. (Waiting only in this thread keeps Ctrl-C and errors able to stop the pool.)
        """
        packets: Iterator[_Packet] = self._packets(shards, deadline)
        segments = self.pipeline.segments()
        if pool is None:
            for _, stages in segments:
                packets = map(functools.partial(_apply, stages), packets)
            yield from packets
            return
        while wave := list(itertools.islice(packets, 2 * self.config.workers)):
            for pure, stages in segments:
                step = functools.partial(_apply, stages)
                wave = pool.map(step, wave, chunksize=1) if pure else [step(p) for p in wave]
            yield from wave

    def _write(self, packet: _Packet, sink: _Sink) -> None:
        """Write every record of a processed packet where it belongs and count it."""
        cfg, counts = self.config, self.counts
        counts.records_in += packet.items
        for err in packet.errors:
            self._error(sink, err)
        out, columns = packet.batch, self.pipeline.columns
        annotate = cfg.output.annotate or cfg.output.annotate_only
        for k, record in enumerate(packet.records):
            stage, reason = out["stage"][k], out["reason"][k]
            note = {"id": out["id"][k], "n": out["n"][k]}
            if stage is not None:
                note.update(stage=stage, reason=reason)
                counts.by_stage[f"{stage}/{reason}"] += 1
            note["scores"] = row_scores(out, k, columns)
            if stage is None or cfg.output.annotate_only:
                counts.kept += 1
                sink.write("kept", {**record, "hygiene": note} if annotate else record)
            else:
                counts.rejected += 1
                sink.write("rejected", {**record, "hygiene": note})

    def _error(self, sink: _Sink, err: dict[str, Any]) -> None:
        """Write one error record; stop the run once there are more than ``max_errors``."""
        self.counts.errors += 1
        sink.write("errors", err)
        limit = self.config.max_errors
        if limit is not None and self.counts.errors > limit:
            where = f"{err['shard']}:{err['line']}" if err["line"] is not None else err["shard"]
            raise UserInputError(f"more than {limit} unreadable records (last: {where}: {err['error']}); run stopped")

    def run(self, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
        """Process every shard not yet done; write the outputs and return the stats."""
        if self.out is not None and resume and (self.out / "stats.json").exists() and not self.partial.exists():
            return json.loads((self.out / "stats.json").read_text(encoding="utf-8"))  # finished already
        offsets = self._prepare(resume, overwrite) if self.out is not None else {}
        sink = _Sink(self.partial if self.out is not None else None, offsets)
        start = time.perf_counter()
        first_in = self.counts.records_in
        bar = tqdm(total=None, unit="doc", unit_scale=True, desc="hygiene filter", disable=not self.progress,
                   initial=self.counts.records_in, file=sys.stderr)
        workers = self.config.workers
        pool_context = _worker_pool(workers) if workers > 1 else contextlib.nullcontext()
        try:
            with pool_context as pool:
                done = set(self.done)
                remaining = [s for s in self.shards if s.name not in done]
                while remaining:  # one round per checkpoint: drain the stream, then save
                    finished = 0
                    deadline = time.perf_counter() + self.config.checkpoint_seconds
                    for packet in self._stream(remaining, deadline, pool):
                        self._write(packet, sink)
                        bar.update(packet.items)
                        if packet.last:
                            self.done.append(packet.shard)
                            finished += 1
                    remaining = remaining[finished:]
                    if self.out is not None:
                        self._checkpoint(sink, time.perf_counter() - start)
        finally:
            bar.close()
            sink.close()
        elapsed = time.perf_counter() - start
        stats = self._stats(elapsed, self.counts.records_in - first_in)
        if self.out is not None:
            self._finish(stats)
        return stats

    def _stats(self, elapsed: float, processed: int) -> dict[str, Any]:
        c = self.counts
        by_stage: dict[str, dict[str, int]] = {}
        for key, count in sorted(c.by_stage.items()):
            stage, _, reason = key.partition("/")
            by_stage.setdefault(stage, {})[reason] = count
        total_elapsed = c.elapsed_s + elapsed
        return {
            "records_in": c.records_in, "kept": c.kept, "rejected": c.rejected, "errors": c.errors,
            "by_stage": by_stage,
            "annotate_only": self.config.output.annotate_only,
            "shards": len(self.shards),
            "elapsed_s": round(total_elapsed, 3),
            "docs_per_s": round(processed / elapsed, 1) if elapsed > 0 else None,
            "synthetic_threshold": self.threshold,
            "inputs": self.inputs,
            "config": self.config.to_dict(),
            "versions": versions(),
        }

    def _finish(self, stats: dict[str, Any]) -> None:
        """Move the outputs into place (atomic renames), then write stats.json and config.yaml."""
        assert self.out is not None
        fmt = self.config.output.format
        for name in OUTPUTS:
            src = self.partial / f"{name}.jsonl"
            if not src.exists():  # moved already by a finish that was interrupted
                continue
            if fmt == "parquet" and name != "errors":
                jsonl_to_parquet(src, self.out / f"{name}.parquet")
            else:
                os.replace(src, self.out / f"{name}.jsonl")
        write_config(self.out / "config.yaml", self.config)
        write_json(self.out / "stats.json", stats)
        shutil.rmtree(self.partial)


def run_filter(inputs: Sequence[str | Path], out_dir: str | Path | None, config: FilterConfig | None = None, *,
               resume: bool = False, overwrite: bool = False, detector: Detector | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Filter the shards of ``inputs`` into ``out_dir`` (``None``: dry run); return the stats."""
    return FilterRun(inputs, out_dir, config or FilterConfig(), detector, progress).run(resume, overwrite)
