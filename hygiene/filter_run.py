"""The local engine: stream shards through the pipeline in order, write the outputs, resume after a stop.

The output layout is the one both engines write (:mod:`hygiene.run_output`). At each
checkpoint (a shard boundary, at most every ``checkpoint_seconds``) the growing files
under ``DIR/.partial/`` are synced and their sizes, the finished shards, the counters
and the new dedup-index entries are saved. ``resume`` truncates the files to the last
checkpoint, reloads the indexes and skips the finished shards, so nothing is
written twice.

Batches stream through the stages in order. With ``workers > 1`` the pure steps
(normalise, quality, dedup keys) run in a process pool, a wave of batches at a
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
from hygiene.config import FilterConfig
from hygiene.errors import UserInputError
from hygiene.filtering import Pipeline, build_pipeline, run_stages, synthetic_threshold
from hygiene.records import Item, Shard, discover_shards, json_line, read_shard, shards_outside
from hygiene.run_output import OUTPUTS, Counts, RunOutput, output_row, run_stats
from hygiene.stages import Detector

log = logging.getLogger(__name__)


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


def _fingerprint(config: FilterConfig, shards: Sequence[Shard]) -> str:
    """Hash of everything that must not change between a run and its resumption."""
    cfg = config.to_dict()
    for key in ("checkpoint_seconds", "workers"):  # may change between a run and its resumption
        cfg.pop(key)
    blob = json.dumps({"config": cfg, "shards": [s.name for s in shards]}, sort_keys=True, default=str)
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
        self.threshold = synthetic_threshold(self.pipeline)
        self.progress = progress
        self.done: list[str] = []
        self.deltas: list[str] = []

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
        try:
            state = json.loads(checkpoint.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserInputError(f"unreadable checkpoint {checkpoint}: {exc}") from None
        if state.get("fingerprint") != _fingerprint(self.config, self.shards):
            raise UserInputError(
                f"cannot resume {self.output.dir}: the inputs or the config differ from the interrupted run")
        self.output.counts = Counts.from_dict(state["counts"])
        self.done, self.deltas = list(state["done"]), list(state["deltas"])
        for p in partial.glob("index-*.npz"):
            if p.name not in self.deltas:
                p.unlink()  # written after the last checkpoint
        for stage in self.pipeline.dedup:
            stage.index.load_deltas([partial / d for d in self.deltas if d.startswith(f"index-{stage.name}-")])
        return state["offsets"]

    def _checkpoint_state(self, offsets: dict[str, int]) -> dict[str, Any]:
        return {"fingerprint": _fingerprint(self.config, self.shards), "done": self.done, "deltas": self.deltas,
                "offsets": offsets, "counts": self.counts.to_dict(), "inputs": self.inputs}

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

    def _write(self, packet: _Packet) -> None:
        """Write every record of a processed packet where it belongs (counted by the output)."""
        for err in packet.errors:
            self._error(err)
        for k, record in enumerate(packet.records):
            name, row, decision = output_row(record, packet.batch, k, tuple(self.pipeline.columns),
                                             self.config.output)
            self.output.write(name, json_line(row), decision)

    def _error(self, err: dict[str, Any]) -> None:
        """Write one error record; stop the run once there are more than ``max_errors``."""
        self.output.write("errors", json_line(err))
        limit = self.config.max_errors
        if limit is not None and self.counts.errors > limit:
            where = f"{err['shard']}:{err['line']}" if err["line"] is not None else err["shard"]
            raise UserInputError(f"more than {limit} unreadable records (last: {where}: {err['error']}); run stopped")

    def run(self, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
        """Process every shard not yet done; write the outputs and return the stats."""
        output = self.output
        if resume and output.finished:
            return json.loads((output.dir / "stats.json").read_text(encoding="utf-8"))
        offsets: dict[str, int] = {}
        if output.dir is not None:
            output.prepare(resume, overwrite, again="--resume to continue or --overwrite")
            offsets = self._restore(resume)
        output.open(offsets)
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
                        self._write(packet)
                        bar.update(packet.items)
                        if packet.last:
                            self.done.append(packet.shard)
                            finished += 1
                    remaining = remaining[finished:]
                    if output.dir is not None:
                        self._checkpoint(time.perf_counter() - start)
        finally:
            bar.close()
            output.close()
        elapsed = time.perf_counter() - start
        stats = run_stats(self.counts, self.config, inputs=self.inputs, shards=len(self.shards), elapsed=elapsed,
                          processed=self.counts.records_in - first_in, threshold=self.threshold, engine="local")
        output.finish(self.config, stats)
        return stats


def run_filter(inputs: Sequence[str | Path], out_dir: str | Path | None, config: FilterConfig | None = None, *,
               resume: bool = False, overwrite: bool = False, detector: Detector | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Filter the shards of ``inputs`` into ``out_dir`` (``None``: dry run); return the stats."""
    return FilterRun(inputs, out_dir, config or FilterConfig(), detector, progress).run(resume, overwrite)
