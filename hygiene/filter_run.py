"""The local engine: stream shards through the pipeline in order, write the outputs, resume after a stop.

The output layout is the one both engines write (:mod:`hygiene.run_output`). At each
checkpoint (a batch boundary, about every ``checkpoint_seconds``) the growing files
under ``DIR/.partial/`` are synced and their sizes, the finished shards, how far the
current shard got, the counters and the new dedup-index entries are saved. ``resume``
truncates the files to the last checkpoint, reloads the indexes and skips what was
done, so no finished batch is computed or written twice.

Batches stream through the stages in order. With ``workers > 1`` the pure steps
(normalise, quality, dedup keys, the detector's cheap features, on CPU the
detector) run in a process pool, a wave of batches at a time, two waves in
flight, while the dedup lookups, a GPU detector and the writing stay in this
process; the stream is drained before each checkpoint, so the saved index never
runs ahead of the saved outputs.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from tqdm.auto import tqdm

from hygiene.atomic import write_json
from hygiene.batch import BatchBuilder
from hygiene.config import FilterConfig, load_config
from hygiene.errors import UserInputError, one_line
from hygiene.filtering import Pipeline, build_pipeline, run_stages, synthetic_threshold
from hygiene.records import (Item, ReadOptions, Shard, discover_shards, json_line, read_shard, sample_positions,
                             shard_sizes, shard_states, shards_outside)
from hygiene.run_output import OUTPUTS, Counts, RunOutput, error_outcome, output_rows, run_stats
from hygiene.stages import Detector
from hygiene.stages.base import built_in

log = logging.getLogger(__name__)


@dataclass
class _Packet:
    """One batch on its way through the stages, with the records behind it and the errors met reading them."""

    shard: str
    last: bool  # the last batch of its shard
    items: int  # records read (errors included)
    position: int  # records of the shard read so far, this packet's included
    batch: dict[str, list]
    records: list[dict[str, Any]]
    errors: list[dict[str, Any]]


@dataclass
class _Wave:
    """Packets that go through the pipeline's segments together: ``step`` is the next segment to run,
    ``pending`` the pool's work on the current one."""

    packets: list[_Packet]
    step: int = 0
    pending: Any = None

    def advance(self, segments: list[tuple[bool, list[Any]]], pool: Any, older_step: int) -> bool:
        """Run what may run now: collect the pool's finished work, start the next pure segment in the
        pool, run segments here only once every older wave (the lowest of them at ``older_step``) has
        passed them. Whether anything moved."""
        moved = False
        while self.step < len(segments):
            if self.pending is not None:
                if not self.pending.ready():
                    return moved
                self.packets, self.pending = self.pending.get(), None
                self.step += 1
            elif segments[self.step][0]:
                self.pending = pool.map_async(functools.partial(_apply, segments[self.step][1]), self.packets,
                                              chunksize=1)
            elif older_step > self.step:
                self.packets = [_apply(segments[self.step][1], p) for p in self.packets]
                self.step += 1
            else:
                return moved
            moved = True
        return moved


def _worker_pool(workers: int) -> Any:
    """A process pool for the stages that may run apart: forked where the platform can (fast start,
    nothing to re-import, a detector loaded here is shared copy-on-write), spawned elsewhere."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method).Pool(workers, initializer=_init_worker, initargs=(workers,))


def _init_worker(workers: int) -> None:
    """Workers leave Ctrl-C to the main process, which stops them (no traceback per worker), and share
    the cores among them: a worker's torch uses its share of the threads (with one thread, torch
    never starts the thread pool that a forked child cannot use)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _apply(stages: Sequence[Any], packet: _Packet) -> _Packet:
    """Run ``stages`` over a packet's batch (module level, so worker processes can unpickle it)."""
    if packet.records:
        packet.batch = run_stages(stages, packet.batch)
    return packet


#: Waves of batches in flight with worker processes: with two, the pool maps the pure segments over one
#: wave while this process runs the others over the other (1: each wave through the pipeline in turn).
IN_FLIGHT = 2
#: seconds between checks that the pool's workers are alive while this process waits on them
WAIT_POLL_S = 0.5


def _worker_pids(pool: Any) -> frozenset[int]:
    """The pids of a ``multiprocessing.Pool``'s worker processes. The pool starts another in place of one
    that dies, and the work the dead one held is never done, so a changed set means lost work."""
    return frozenset(p.pid for p in getattr(pool, "_pool", ()))


def _wait(pending: Any, pool: Any, workers: frozenset[int]) -> None:
    """Wait for the pool's work on a wave; a one-line error, not a wait without end, if one of ``workers``
    has died meanwhile (killed, or out of memory)."""
    while not pending.ready():
        pending.wait(WAIT_POLL_S)
        if _worker_pids(pool) != workers:
            raise UserInputError("a worker process died (killed, perhaps for want of memory): continue with "
                                 "--resume, with fewer --workers or a smaller --batch-size")


def _in_waves(packets: Iterator[_Packet], segments: list[tuple[bool, list[Any]]], pool: Any,
              size: int) -> Iterator[_Packet]:
    """``packets`` through every segment, in waves of ``size``, ``IN_FLIGHT`` waves in flight; a segment
    that runs here sees the waves in order. Yields the packets in order."""
    waves: collections.deque[_Wave] = collections.deque()
    read_all = False
    workers = _worker_pids(pool)
    while True:
        while not read_all and len(waves) < IN_FLIGHT:
            wave = list(itertools.islice(packets, size))
            read_all = not wave
            if wave:
                waves.append(_Wave(wave))
        if not waves:
            return
        moved = False
        for older, wave in enumerate(waves):
            moved |= wave.advance(segments, pool, min((w.step for w in itertools.islice(waves, older)),
                                                      default=len(segments)))
        while waves and waves[0].step == len(segments):
            yield from waves.popleft().packets
        if not moved and waves:
            _wait(next(w for w in waves if w.pending is not None).pending, pool, workers)


def _check_picklable(pipeline: Pipeline) -> None:
    """Refuse, in one line, a stage of one's own that worker processes would run but that cannot be sent to
    them (it holds a lock, an open file, ...); this package's stages are made to be sent."""
    for parallel, steps in pipeline.segments():
        for stage in (getattr(step, "__self__", step) for step in steps if parallel):
            if built_in(stage):
                continue
            try:
                pickle.dumps(stage)
            except Exception as exc:  # noqa: BLE001  (whatever pickling raises, the remedy is the same)
                raise UserInputError(f"stage {stage.name} ({type(stage).__qualname__}) cannot be sent to worker "
                                     f"processes ({type(exc).__name__}: {one_line(exc)}): run with --workers 1, or "
                                     "make it picklable") from None


def _fingerprint(config: FilterConfig, shards: Sequence[Shard]) -> str:
    """Hash of everything that must not change between a run and its resumption: the config and each
    shard's name, size and modification time (an input rewritten since is another input)."""
    cfg = config.to_dict()
    for key in ("checkpoint_seconds", "workers", "max_errors"):  # may change between a run and its resumption
        cfg.pop(key)
    blob = json.dumps({"config": cfg, "shards": shard_states(shards)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class FilterRun:
    """One run of the filter over ``inputs`` into ``out_dir`` (``None``: dry run, nothing written)."""

    def __init__(self, inputs: Sequence[str | Path], out_dir: str | Path | None, config: FilterConfig,
                 detector: Detector | None = None, progress: bool = True) -> None:
        self.config = config
        self.output = RunOutput(out_dir)
        self.shards = shards_outside(discover_shards(inputs), self.output.dir)
        self.inputs = [str(i) for i in inputs]
        self.pipeline: Pipeline = build_pipeline(config, detector)
        self.pipeline.setup()  # loads the detector now: fail early
        if config.workers > 1:
            _check_picklable(self.pipeline)
        self.threshold = synthetic_threshold(self.pipeline)
        self.progress = progress
        self.options = ReadOptions(config.text_field, config.txt_unit)
        self.done: list[str] = []
        self.position: dict[str, int] = {}  # a shard begun but not finished -> records of it done
        self.deltas: list[str] = []
        self.to_read = config.limit  # records left to read under --limit (None: all)
        self.sample = (sample_positions(self.shards, self.options, config.sample, config.sample_seed)
                       if config.sample is not None else None)

    @property
    def counts(self) -> Counts:
        """The run's totals so far."""
        return self.output.counts

    # -- setup and resumption -------------------------------------------------------------
    def _restore(self, resume: bool) -> dict[str, int]:
        """Start a checkpoint, or on resume restore the last one. Returns the file offsets."""
        partial = self.output.partial
        checkpoint = partial / "checkpoint.json"
        if not (resume and checkpoint.exists()):
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            write_json(checkpoint, self._checkpoint_state({name: 0 for name in OUTPUTS}))
            return {name: 0 for name in OUTPUTS}
        state = self._saved_state()
        self.output.counts = Counts.from_dict(state["counts"])
        self.done, self.deltas, self.position = list(state["done"]), list(state["deltas"]), dict(state["position"])
        for p in partial.glob("index-*.npz"):
            if p.name not in self.deltas:
                p.unlink()  # written after the last checkpoint
        for stage in self.pipeline.dedup:
            stage.index.load_deltas([partial / d for d in self.deltas if d.startswith(f"index-{stage.name}-")])
        return state["offsets"]

    def _saved_state(self) -> dict[str, Any]:
        """The last checkpoint, refused when the inputs or the config differ from those of the saved run."""
        checkpoint = self.output.partial / "checkpoint.json"
        try:
            state = json.loads(checkpoint.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserInputError(f"unreadable checkpoint {checkpoint}: {exc}; pass --overwrite to start again"
                                 ) from None
        if state.get("fingerprint") != _fingerprint(self.config, self.shards):
            raise UserInputError(
                f"cannot resume {self.output.dir}: the inputs or the config differ from the interrupted run")
        return state

    def _checkpoint_state(self, offsets: dict[str, int]) -> dict[str, Any]:
        return {"fingerprint": _fingerprint(self.config, self.shards), "done": self.done, "deltas": self.deltas,
                "position": self.position, "offsets": offsets, "counts": self.counts.to_dict(), "inputs": self.inputs}

    def _checkpoint(self, elapsed: float) -> None:
        """Sync outputs, save the new index entries, then record the state (in that order)."""
        offsets = self.output.sync()
        k = len(self.deltas) // max(len(self.pipeline.dedup), 1)
        for stage in self.pipeline.dedup:
            fname = f"index-{stage.name}-{k:06d}.npz"
            stage.index.save_delta(self.output.partial / fname)
            self.deltas.append(fname)
        state = self._checkpoint_state(offsets)
        state["counts"]["elapsed_s"] += elapsed
        write_json(self.output.partial / "checkpoint.json", state)

    # -- the loop -------------------------------------------------------------------------
    def _packets(self, shards: Sequence[Shard], deadline: float, size: int) -> Iterator[_Packet]:
        """Batches of ``size`` records of the shards, in order, from where each one stopped; each shard ends
        with a ``last`` packet. Stops after the first packet past ``deadline``, so a checkpoint can follow,
        and once ``limit`` records are read.
        """
        for shard in shards:
            position = start = self.position.get(shard.name, 0)
            chosen = self.sample[shard.name] if self.sample is not None else None
            items: list[Item] = []
            read = read_shard(shard, self.options) if chosen is None or chosen else iter(())
            for position, item in enumerate(itertools.islice(read, start, None), start + 1):
                if chosen is not None and position - 1 not in chosen:
                    continue
                items.append(item)
                if self.to_read is not None:
                    self.to_read -= 1
                if len(items) >= size or self.to_read == 0:
                    yield self._pack(shard, items, False, position)
                    items = []
                    if time.perf_counter() >= deadline or self.to_read == 0:
                        return
            yield self._pack(shard, items, True, position)
            if time.perf_counter() >= deadline:
                return

    def _pack(self, shard: Shard, items: list[Item], last: bool, position: int) -> _Packet:
        """Turn read items into a batch for the stages, setting aside the ones that cannot be filtered."""
        packet = _Packet(shard.name, last, len(items), position, {}, [], [])
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

    def _stream(self, shards: Sequence[Shard], deadline: float, size: int, pool: Any) -> Iterator[_Packet]:
        """Packets through every stage, in order.

        With a worker ``pool`` the packets go in waves of two per worker, two waves in flight: each
        pure segment of the pipeline maps over a wave in the pool, each other segment runs over it
        here, so this process works on one wave (dedup lookups, a GPU model) while the pool works on
        the other. A segment that runs here sees the waves in order, so its decisions are those of
        one process. (Waiting only in this thread keeps Ctrl-C and errors able to stop the pool.)
        """
        packets: Iterator[_Packet] = self._packets(shards, deadline, size)
        segments = self.pipeline.segments()
        if pool is None:
            for _, stages in segments:
                packets = map(functools.partial(_apply, stages), packets)
            yield from packets
            return
        yield from _in_waves(packets, segments, pool, 2 * self.config.workers)

    def _write(self, packet: _Packet) -> None:
        """Write every record of a processed packet where it belongs (counted by the output)."""
        for err in packet.errors:
            self._error(err)
        for name, row, outcome in output_rows(packet.records, packet.batch, tuple(self.pipeline.columns), self.config):
            self.output.write(name, json_line(row), outcome)

    def _error(self, err: dict[str, Any]) -> None:
        """Write one error record; stop the run once there are more than ``max_errors``."""
        self.output.write("errors", json_line(err), error_outcome(err, self.config))
        limit = self.config.max_errors
        if limit is not None and self.counts.errors > limit:
            where = f"{err['shard']}:{err['line']}" if err["line"] is not None else err["shard"]
            message = f"more than {limit} unreadable records (last: {where}: {err['error']}); run stopped"
            if self.output.dir is not None:
                message += (f" (they are in {self.output.partial / 'errors.jsonl'}; to go on, pass --resume with a "
                            "higher --max-errors)")
            raise UserInputError(message)

    def run(self, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
        """Process every shard not yet done; write the outputs and return the stats."""
        if resume and overwrite:
            raise UserInputError("--resume continues the run in --out and --overwrite replaces it: pass one")
        if self.output.dir is None:
            return self._run(resume, overwrite)
        self.output.lock()
        try:
            return self._run(resume, overwrite)
        finally:
            self.output.unlock()

    def _run(self, resume: bool, overwrite: bool) -> dict[str, Any]:
        output = self.output
        if resume and output.finished:
            stats = json.loads((output.dir / "stats.json").read_text(encoding="utf-8"))
            if stats.get("fingerprint") != _fingerprint(self.config, self.shards):
                raise UserInputError(f"{output.dir} holds a finished run of other inputs or another config: pass "
                                     "--overwrite or choose another --out")
            output.check_finished(stats, self.config)
            return stats
        if resume and output.finishing is not None:  # stopped while moving its outputs into place
            self._saved_state()
            return output.complete(self.config, output.finishing)
        offsets: dict[str, int] = {}
        if output.dir is not None:
            output.prepare(resume, overwrite, again="--resume to continue or --overwrite")
            offsets = self._restore(resume)
        output.open(offsets)
        start = time.perf_counter()
        first_in = self.counts.records_in
        if self.to_read is not None:
            self.to_read -= first_in
        sizes = shard_sizes(self.shards, self.options) if self.progress and self.sample is None else None
        total = sum(map(len, self.sample.values())) if self.sample is not None else sizes and sum(sizes)
        if total is not None and self.config.limit is not None:
            total = min(total, self.config.limit)
        # batches small enough that a small run shows progress, never larger than configured
        size = min(self.config.batch_size, max(32, total // 20)) if total is not None else self.config.batch_size
        bar = tqdm(total=total, unit="doc", unit_scale=True, desc="hygiene filter", disable=not self.progress,
                   initial=self.counts.records_in, file=sys.stderr)
        workers = self.config.workers
        pool_context = _worker_pool(workers) if workers > 1 else contextlib.nullcontext()
        try:
            with pool_context as pool:
                remaining = [s for s in self.shards if s.name not in set(self.done)]
                while remaining and self.to_read != 0:  # one round per checkpoint: drain the stream, then save
                    deadline = time.perf_counter() + self.config.checkpoint_seconds
                    for packet in self._stream(remaining, deadline, size, pool):
                        self._write(packet)
                        bar.update(packet.items)
                        if packet.last:
                            self.done.append(packet.shard)
                            self.position.pop(packet.shard, None)
                        else:
                            self.position[packet.shard] = packet.position
                    remaining = [s for s in remaining if s.name not in set(self.done)]
                    if output.dir is not None:
                        self._checkpoint(time.perf_counter() - start)
        finally:
            bar.close()
            output.close()
        elapsed = time.perf_counter() - start
        stats = run_stats(self.counts, self.config, inputs=self.inputs, shards=len(self.shards), elapsed=elapsed,
                          processed=self.counts.records_in - first_in, threshold=self.threshold, engine="local",
                          stages=[stage.name for stage in self.pipeline.stages])
        if output.dir is not None:
            stats["fingerprint"] = _fingerprint(self.config, self.shards)
        output.finish(self.config, stats)
        return stats


def run_filter(inputs: Sequence[str | Path], out_dir: str | Path | None, config: FilterConfig | None = None, *,
               resume: bool = False, overwrite: bool = False, detector: Detector | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Filter the shards of ``inputs`` into ``out_dir`` (``None``: dry run); return the stats.

    Without ``config``, the default profile (:func:`hygiene.config.load_config`).
    """
    return FilterRun(inputs, out_dir, config or load_config(), detector, progress).run(resume, overwrite)
