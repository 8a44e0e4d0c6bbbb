"""What a filter run writes, on either engine: one layout, one way to count, one stats file.

Output directory::

    kept.jsonl       records unchanged (plus a "hygiene" field with --annotate); .parquet with format parquet
    rejected.jsonl   each record plus "hygiene": {id, n, stage, reason, scores}
    errors.jsonl     {shard, line, error[, record | raw]} for every record that could not be read
    stats.json       counts per stage and reason, throughput, config, versions
    config.yaml      the effective config (reusable with --config)

While running, the three files grow under ``DIR/.partial/``; at the end each is
moved into place (or converted to Parquet) with an atomic rename, then
``config.yaml`` and ``stats.json`` are written, so an interrupted run never leaves a
half-written output. Only these names are ever removed from ``DIR`` (with
``--overwrite``). Invariant: records in = kept + rejected + errors.
"""
from __future__ import annotations

import os
import platform
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

from hygiene import __version__
from hygiene.atomic import write_json
from hygiene.config import FilterConfig, OutputConfig, write_config
from hygiene.errors import UserInputError
from hygiene.filtering import row_scores
from hygiene.records import jsonl_to_parquet

OUTPUTS = ("kept", "rejected", "errors")
PARTIAL = ".partial"


@dataclass
class Counts:
    """Running totals of a run (persisted in the local engine's checkpoint)."""

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


def output_row(record: dict[str, Any], batch: Mapping[str, Sequence], k: int, columns: Sequence[str],
               output: OutputConfig) -> tuple[str, dict[str, Any], str | None]:
    """Where row ``k`` of a decided batch goes (kept or rejected), the record as written there,
    and its decision (``"stage/reason"``, ``None`` when kept)."""
    stage, reason = batch["stage"][k], batch["reason"][k]
    note: dict[str, Any] = {"id": batch["id"][k], "n": batch["n"][k]}
    if stage is not None:
        note.update(stage=stage, reason=reason)
    note["scores"] = row_scores(batch, k, columns)
    decision = None if stage is None else f"{stage}/{reason}"
    if stage is None or output.annotate_only:
        return "kept", {**record, "hygiene": note} if output.annotate or output.annotate_only else record, decision
    return "rejected", {**record, "hygiene": note}, decision


def versions() -> dict[str, str]:
    """Versions of the software that produced an output."""
    import numpy
    import pyarrow

    return {"hygiene": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "pyarrow": pyarrow.__version__}


def run_stats(counts: Counts, config: FilterConfig, *, inputs: Sequence[str], shards: int, elapsed: float,
              processed: int, threshold: float | None, engine: str, **extra: Any) -> dict[str, Any]:
    """``stats.json``: the counts per output and per stage and reason, throughput, config and versions."""
    by_stage: dict[str, dict[str, int]] = {}
    for key, count in sorted(counts.by_stage.items()):
        stage, _, reason = key.partition("/")
        by_stage.setdefault(stage, {})[reason] = count
    return {
        "records_in": counts.records_in, "kept": counts.kept, "rejected": counts.rejected, "errors": counts.errors,
        "by_stage": by_stage, "annotate_only": config.output.annotate_only, "shards": shards,
        "elapsed_s": round(counts.elapsed_s + elapsed, 3),
        "docs_per_s": round(processed / elapsed, 1) if elapsed > 0 else None,
        "synthetic_threshold": threshold, "inputs": list(inputs), "config": config.to_dict(), "engine": engine,
        **extra, "versions": versions(),
    }


class RunOutput:
    """The output directory of one run: checks, the growing files, the final move (``None``: count only)."""

    def __init__(self, directory: str | Path | None, counts: Counts | None = None) -> None:
        self.dir = Path(directory) if directory is not None else None
        self.counts = counts or Counts()
        self.files: dict[str, IO[bytes]] = {}

    @property
    def partial(self) -> Path:
        """Where the outputs grow until the run finishes."""
        assert self.dir is not None
        return self.dir / PARTIAL

    @property
    def finished(self) -> bool:
        """Whether the directory holds a finished run."""
        return self.dir is not None and (self.dir / "stats.json").exists() and not self.partial.exists()

    def prepare(self, resume: bool, overwrite: bool, again: str) -> None:
        """Refuse to replace a run unless ``overwrite`` (``again``: how to continue an interrupted one);
        with ``overwrite`` remove this layout's own files, and nothing else."""
        assert self.dir is not None
        if self.partial.exists() and not resume and not overwrite:
            raise UserInputError(f"{self.dir} holds an interrupted run: pass {again}")
        if (self.dir / "stats.json").exists() and not resume and not overwrite:
            raise UserInputError(f"{self.dir} already holds a finished run: pass --overwrite or choose another --out")
        if overwrite:
            shutil.rmtree(self.partial, ignore_errors=True)
            names = [f"{name}.{fmt}" for name in OUTPUTS for fmt in ("jsonl", "parquet")]
            for name in (*names, "stats.json", "config.yaml"):
                (self.dir / name).unlink(missing_ok=True)

    def open(self, offsets: Mapping[str, int] | None = None) -> None:
        """Open the growing files, cut back to ``offsets`` (a checkpoint), for appending."""
        if self.dir is None:
            return
        self.partial.mkdir(parents=True, exist_ok=True)
        for name in OUTPUTS:
            path = self.partial / f"{name}.jsonl"
            fh = path.open("r+b" if path.exists() else "w+b")
            fh.truncate((offsets or {}).get(name, 0))
            fh.seek(0, os.SEEK_END)
            self.files[name] = fh

    def write(self, name: str, line: bytes, decision: str | None = None) -> None:
        """Append one JSON line (without its newline) to output ``name`` and count it."""
        counts = self.counts
        counts.records_in += 1
        setattr(counts, name, getattr(counts, name) + 1)
        if decision:
            counts.by_stage[decision] += 1
        if self.files:
            self.files[name].write(line + b"\n")

    def sync(self) -> dict[str, int]:
        """Flush and fsync every file; their sizes (the checkpoint offsets)."""
        for fh in self.files.values():
            fh.flush()
            os.fsync(fh.fileno())
        return {name: fh.tell() for name, fh in self.files.items()}

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()
        self.files = {}

    def finish(self, config: FilterConfig, stats: dict[str, Any]) -> None:
        """Move the outputs into place (atomic renames), then write ``config.yaml`` and ``stats.json``."""
        if self.dir is None:
            return
        for name in OUTPUTS:
            src = self.partial / f"{name}.jsonl"
            if not src.exists():  # moved already by a finish that was interrupted
                continue
            if config.output.format == "parquet" and name != "errors":
                jsonl_to_parquet(src, self.dir / f"{name}.parquet")
            else:
                os.replace(src, self.dir / f"{name}.jsonl")
        write_config(self.dir / "config.yaml", config)
        write_json(self.dir / "stats.json", stats)
        shutil.rmtree(self.partial)
