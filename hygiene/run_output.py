"""What a filter run writes, on either engine: one layout, one way to count, one stats file.

Output directory::

    kept.jsonl       records unchanged (plus a "hygiene" field with --annotate); .parquet with format parquet
    rejected.jsonl   each record plus "hygiene": {id, n, stage, reason, scores}
    errors.jsonl     {shard, line, error[, record | raw]} for every record that could not be read
    stats.json       per stage: records in and out, seconds, counts per reason, the same per input
                     group, example ids per reason; per group: kept, rejected, errors and a
                     histogram of P(machine); throughput, config, versions
    config.yaml      the effective config (reusable with --config)

While running, the three files grow under ``DIR/.partial/``; at the end each is
moved into place (or converted to Parquet) with an atomic rename, then
``config.yaml`` and ``stats.json`` are written, so an interrupted run never leaves a
half-written output; ``.partial/`` is then renamed and removed. Only these names are ever
removed from ``DIR`` (with ``--overwrite``), and a file of these names that no run wrote is
never replaced without it. Invariant: records in = kept + rejected + errors.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

try:
    import fcntl
except ImportError:  # not on Windows: runs on one folder are not locked against each other there
    fcntl = None  # type: ignore[assignment]

import pyarrow.parquet as pq

from hygiene import __version__
from hygiene.atomic import write_json
from hygiene.config import FilterConfig, write_config
from hygiene.errors import UserInputError, error_hint, one_line
from hygiene.batch import has_score
from hygiene.records import PARTIAL, jsonl_to_parquet
from hygiene.report import detector_rates
from hygiene.stages.base import FAILED, seconds_of

OUTPUTS = ("kept", "rejected", "errors")
#: the detector stage's name: its scores are ``<name>_p`` (P(machine)) and ``<name>_settled``
DETECTOR = "synthetic"
#: written into PARTIAL once a run is done and before its outputs move: a resume then only completes the move
FINISHING = "finishing.json"
#: what PARTIAL is renamed to once the outputs are in place, then removed
REMOVED = ".partial-removed"
#: fields a record's group is read from when no group field is named, the first one present
GROUP_FIELDS = ("source", "dataset")
NO_GROUP, OTHER_GROUPS = "(none)", "(other)"
MAX_GROUPS = 50  # groups the stats name: the largest; the rest are counted together as OTHER_GROUPS
#: groups counted apart while a run goes (new ones past it go to OTHER_GROUPS at once): up to this many
#: groups the stats are the same whatever order the records were written in, so on either engine
MAX_TRACKED_GROUPS = 10_000
EXAMPLES = 5  # example ids kept per reason: those of the earliest documents
HISTOGRAM_BINS = 20  # bins of P(machine) over [0, 1]


def _lines(path: Path) -> int:
    """The records of a JSONL file this layout wrote: its newlines (each record ends with one)."""
    n = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def group_of(record: Any, group_field: str | None) -> str:
    """The group ``record`` is counted in: its ``group_field`` (default: the first of :data:`GROUP_FIELDS` present)."""
    if not isinstance(record, Mapping):
        return NO_GROUP
    name = group_field or next((f for f in GROUP_FIELDS if f in record), None)
    value = record.get(name) if name is not None else None
    return NO_GROUP if value is None else str(value)[:200]


@dataclass
class Outcome:
    """What the stats need to know of one record: its decision, id, ordinal, group, P(machine), seconds per stage."""

    decision: str | None = None  # "stage/reason"; None when kept (or for an error)
    id: str | None = None
    n: int | None = None
    group: str = NO_GROUP
    p_machine: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    #: 1 when the detector's cascade settled it in its first pass, 0 when the language models scored it
    settled: int | None = None

    def to_json(self) -> str:
        import json

        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        import json

        return cls(**json.loads(text))


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
    groups: dict[str, Counter] = field(default_factory=dict)  # group -> output name or "stage/reason" -> count
    examples: dict[str, list[list]] = field(default_factory=dict)  # "stage/reason" -> [[n, id], ...], earliest first
    seconds: Counter = field(default_factory=Counter)  # stage -> seconds
    p_machine: dict[str, list[int]] = field(default_factory=dict)  # group -> histogram of P(machine)
    #: records the detector's first pass settled, and those the language models scored
    first_pass: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"records_in": self.records_in, "kept": self.kept, "rejected": self.rejected,
                "errors": self.errors, "by_stage": dict(self.by_stage), "next_n": self.next_n,
                "elapsed_s": self.elapsed_s, "groups": {g: dict(c) for g, c in self.groups.items()},
                "examples": self.examples, "seconds": dict(self.seconds), "p_machine": self.p_machine,
                "first_pass": dict(self.first_pass)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Counts:
        return cls(d["records_in"], d["kept"], d["rejected"], d["errors"], Counter(d["by_stage"]),
                   d["next_n"], d["elapsed_s"], {g: Counter(c) for g, c in d["groups"].items()},
                   d["examples"], Counter(d["seconds"]), d["p_machine"], Counter(d.get("first_pass", {})))

    def add(self, name: str, outcome: Outcome) -> None:
        """Count one record written to output ``name``."""
        self.records_in += 1
        setattr(self, name, getattr(self, name) + 1)
        group = (outcome.group if outcome.group in self.groups or len(self.groups) < MAX_TRACKED_GROUPS
                 else OTHER_GROUPS)
        tally = self.groups.setdefault(group, Counter())
        tally["records_in"] += 1
        tally[name] += 1
        if outcome.decision:
            self.by_stage[outcome.decision] += 1
            tally[outcome.decision] += 1
            examples = self.examples.setdefault(outcome.decision, [])
            if len(examples) < EXAMPLES or outcome.n < examples[-1][0]:
                examples.append([outcome.n, outcome.id])
                examples.sort()
                del examples[EXAMPLES:]
        self.seconds.update(outcome.seconds)
        if outcome.settled is not None:
            self.first_pass["settled" if outcome.settled else "scored"] += 1
        if outcome.p_machine is not None:
            hist = self.p_machine.setdefault(group, [0] * HISTOGRAM_BINS)
            hist[min(int(outcome.p_machine * HISTOGRAM_BINS), HISTOGRAM_BINS - 1)] += 1


def output_rows(records: Iterable[dict[str, Any]], batch: Mapping[str, Sequence], columns: Sequence[str],
                config: FilterConfig) -> Iterator[tuple[str, dict[str, Any], Outcome]]:
    """For each row of a decided batch, in order (``records``: the batch's records): where it goes (kept or
    rejected), the record as written there, and its :class:`Outcome`. A rejected record's note names the
    first failed rule (``reason``) and all of them (``failed``). Which score and timing columns the batch
    holds is looked up once per batch, not per row."""
    output = config.output
    scores = [c for c in columns if c in batch]
    prefix = seconds_of("")
    timing = [(name, name.removeprefix(prefix)) for name in batch if name.startswith(prefix)]
    failed_rules = batch.get(FAILED)
    for k, record in enumerate(records):
        stage, reason = batch["stage"][k], batch["reason"][k]
        note: dict[str, Any] = {"id": batch["id"][k], "n": batch["n"][k]}
        if stage is not None:
            failed = failed_rules[k] if failed_rules is not None else None
            note.update(stage=stage, reason=reason, failed=list(failed) if failed else [reason])
        note["scores"] = {c: batch[c][k] for c in scores if has_score(batch[c][k])}
        # the detector's P(machine) and first pass count where a real run's detector reads the record: with
        # annotate_only every record is scored, also those an earlier stage would have rejected
        read = stage is None or stage == DETECTOR
        outcome = Outcome(None if stage is None else f"{stage}/{reason}", note["id"], note["n"],
                          group_of(record, config.group_field), note["scores"].get(f"{DETECTOR}_p") if read else None,
                          {stage_name: batch[name][k] for name, stage_name in timing},
                          note["scores"].get(f"{DETECTOR}_settled") if read else None)
        if stage is None or output.annotate_only:
            yield "kept", _annotated(record, note) if output.annotate or output.annotate_only else record, outcome
        else:
            yield "rejected", _annotated(record, note), outcome


def _annotated(record: dict[str, Any], note: dict[str, Any]) -> dict[str, Any]:
    """``record`` with the filter's ``hygiene`` note; a ``hygiene`` field of the record's own is kept as
    ``input_hygiene`` (or ``input_input_hygiene``, and so on, if that name is taken too), so nothing of the
    input is lost."""
    if "hygiene" not in record:
        return {**record, "hygiene": note}
    own = "input_hygiene"
    while own in record:
        own = "input_" + own
    return {**{k: v for k, v in record.items() if k != "hygiene"}, own: record["hygiene"], "hygiene": note}


def error_outcome(error: Mapping[str, Any], config: FilterConfig) -> Outcome:
    """The :class:`Outcome` of an ``errors`` row: counted in the group of its record when it was read."""
    return Outcome(group=group_of(error.get("record"), config.group_field))


def versions() -> dict[str, str]:
    """Versions of the software that produced an output."""
    import numpy
    import pyarrow

    found = {"hygiene": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
             "pyarrow": pyarrow.__version__}
    # what ran the detector, where this process loaded it
    return found | {name: sys.modules[name].__version__ for name in ("torch", "transformers", "onnxruntime")
                    if name in sys.modules}


def named_groups(counts: Counts) -> tuple[dict[str, Counter], dict[str, list[int]]]:
    """The per-group tallies and P(machine) histograms the stats show: the :data:`MAX_GROUPS` largest groups
    (most records; ties by name), the rest summed as :data:`OTHER_GROUPS`."""
    order = sorted((g for g in counts.groups if g != OTHER_GROUPS), key=lambda g: (-counts.groups[g]["records_in"], g))
    named = set(order[:MAX_GROUPS])
    groups: dict[str, Counter] = {}
    hists: dict[str, list[int]] = {}
    for g, tally in counts.groups.items():
        shown = g if g in named else OTHER_GROUPS
        groups.setdefault(shown, Counter()).update(tally)
        if g in counts.p_machine:
            hist = hists.setdefault(shown, [0] * HISTOGRAM_BINS)
            hists[shown] = [a + b for a, b in zip(hist, counts.p_machine[g])]
    return groups, hists


def stage_stats(counts: Counts, stages: Sequence[str], annotate_only: bool) -> list[dict[str, Any]]:
    """Per stage, in pipeline order: records in and out, seconds, counts per reason, per group and reason,
    and example ids per reason."""
    out = []
    reaching = counts.records_in - counts.errors
    groups, _ = named_groups(counts)
    for name in stages:
        reasons = {key.partition("/")[2]: n for key, n in sorted(counts.by_stage.items())
                   if key.partition("/")[0] == name}
        by_group = {group: {key.partition("/")[2]: n for key, n in sorted(tally.items())
                            if key.partition("/")[0] == name}
                    for group, tally in sorted(groups.items())}
        dropped = 0 if annotate_only else sum(reasons.values())
        out.append({"name": name, "records_in": reaching, "records_out": reaching - dropped,
                    "seconds": round(counts.seconds.get(name, 0.0), 6), "reasons": reasons,
                    "by_group": {g: r for g, r in by_group.items() if r},
                    "examples": {reason: [i for _, i in counts.examples[f"{name}/{reason}"]] for reason in reasons}})
        reaching -= dropped
    return out


def run_stats(counts: Counts, config: FilterConfig, *, inputs: Sequence[str], shards: int, elapsed: float,
              processed: int, threshold: float | None, engine: str, stages: Sequence[str],
              **extra: Any) -> dict[str, Any]:
    """``stats.json``: the counts per output, per stage and reason and per group, throughput, config and versions."""
    by_stage: dict[str, dict[str, int]] = {}
    for key, count in sorted(counts.by_stage.items()):
        stage, _, reason = key.partition("/")
        by_stage.setdefault(stage, {})[reason] = count
    named, hists = named_groups(counts)
    groups = {g: {name: tally.get(name, 0) for name in ("records_in", *OUTPUTS)} for g, tally in sorted(named.items())}
    return {
        "records_in": counts.records_in, "kept": counts.kept, "rejected": counts.rejected, "errors": counts.errors,
        "by_stage": by_stage, "stages": stage_stats(counts, stages, config.output.annotate_only),
        "profile": config.profile, "group_field": config.group_field or "|".join(GROUP_FIELDS),
        "groups": groups, "p_machine_histogram": {"bins": HISTOGRAM_BINS, "by_group": dict(sorted(hists.items()))},
        "detector_first_pass": {"settled": counts.first_pass.get("settled", 0),
                                "scored": counts.first_pass.get("scored", 0)},
        "annotate_only": config.output.annotate_only, "shards": shards,
        "elapsed_s": round(counts.elapsed_s + elapsed, 3),
        "docs_per_s": round(processed / elapsed, 1) if elapsed > 0 else None,
        "synthetic_threshold": threshold,
        # the rates the report's machine-share estimate needs, as the detector stood when it ran
        "detector_rates": asdict(detector_rates(config.synthetic.model, threshold)) if threshold is not None else None,
        "inputs": list(inputs), "config": config.to_dict(), "engine": engine,
        **extra, "versions": versions(),
    }


def group_field_warning(stats: Mapping[str, Any]) -> str | None:
    """A warning when the run was told a group field (``group_field``) that no record has: every record is
    then counted in one group, most likely through a misspelt name."""
    field = stats["config"].get("group_field")
    if field and stats["records_in"] > stats["errors"] and set(stats["groups"]) <= {NO_GROUP}:
        return f"no record has the group field {field!r}: every record is counted in {NO_GROUP}"
    return None


def check_outcome(stats: Mapping[str, Any], where: str | Path | None) -> None:
    """Raise :class:`UserInputError` when a run had nothing to filter: no records, or every one an error."""
    if stats["records_in"] == 0:
        raise UserInputError(f"no records in {', '.join(stats['inputs'])}: nothing was filtered")
    if stats["errors"] == stats["records_in"]:
        hint, see = "", ""
        if where is not None:
            see = f"; see {Path(where) / 'errors.jsonl'}"
            with contextlib.suppress(OSError, ValueError, KeyError), \
                    (Path(where) / "errors.jsonl").open(encoding="utf-8") as fh:
                hint = error_hint(json.loads(fh.readline())["error"])
        raise UserInputError(f"every one of the {stats['records_in']} records is an error{hint}{see}")


class RunOutput:
    """The output directory of one run: checks, the growing files, the final move (``None``: count only)."""

    def __init__(self, directory: str | Path | None, counts: Counts | None = None) -> None:
        self.dir = Path(directory) if directory is not None else None
        self.counts = counts or Counts()
        self.files: dict[str, IO[bytes]] = {}
        self._lock: int | None = None

    @property
    def partial(self) -> Path:
        """Where the outputs grow until the run finishes."""
        assert self.dir is not None
        return self.dir / PARTIAL

    @property
    def finished(self) -> bool:
        """Whether the directory holds a finished run."""
        return self.dir is not None and (self.dir / "stats.json").exists() and not self.partial.exists()

    def lock(self) -> None:
        """Create the directory and hold it for this run (until :meth:`unlock` or the process ends): a second
        run on the same directory is refused, where it would interleave its writes with this one's."""
        assert self.dir is not None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserInputError(f"cannot create the output folder {self.dir}: {exc.strerror or exc}") from None
        if fcntl is None or self._lock is not None:  # no advisory locks on this system, or held already
            return
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserInputError(f"another run is writing to {self.dir}: wait for it to end, or choose another "
                                 "--out") from None
        self._lock = fd

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def prepare(self, resume: bool, overwrite: bool, again: str) -> None:
        """Refuse to replace a run, or any file of this layout's names, unless ``overwrite`` (``again``: how to
        continue an interrupted run); with ``overwrite`` remove this layout's own files, and nothing else."""
        self.lock()
        if self.partial.exists() and not resume and not overwrite:
            raise UserInputError(f"{self.dir} holds an interrupted run: pass {again}")
        if (self.dir / "stats.json").exists() and not resume and not overwrite:
            raise UserInputError(f"{self.dir} already holds a finished run: pass --overwrite or choose another --out")
        names = [*(f"{name}.{fmt}" for name in OUTPUTS for fmt in ("jsonl", "parquet")),
                 "stats.json", "config.yaml", "report.html"]  # the page describes the old run
        if overwrite:
            for trash in (self.partial, self.dir / REMOVED):
                shutil.rmtree(trash, ignore_errors=True)
            for name in names:
                (self.dir / name).unlink(missing_ok=True)
        elif not self.partial.exists():
            there = [name for name in names if (self.dir / name).exists()]
            if there:
                raise UserInputError(f"{self.dir} holds {there[0]}, which this run would replace: pass --overwrite "
                                     "or choose another --out")

    def open(self, offsets: Mapping[str, int] | None = None) -> None:
        """Open the growing files, cut back to ``offsets`` (a checkpoint), for appending. A file shorter than
        its offset (removed or cut since the checkpoint) is refused: its records are lost."""
        if self.dir is None:
            return
        self.partial.mkdir(parents=True, exist_ok=True)
        offsets = offsets or {}
        for name in OUTPUTS:
            path = self.partial / f"{name}.jsonl"
            size = path.stat().st_size if path.exists() else 0
            if size < offsets.get(name, 0):
                self.close()
                raise UserInputError(f"cannot resume {self.dir}: {path} holds {size} bytes where its checkpoint "
                                     f"wrote {offsets[name]} (changed since); pass --overwrite to start again")
            fh = path.open("r+b" if path.exists() else "w+b")
            fh.truncate(offsets.get(name, 0))
            fh.seek(0, os.SEEK_END)
            self.files[name] = fh

    def write(self, name: str, line: bytes, outcome: Outcome) -> None:
        """Append one JSON line (without its newline) to output ``name`` and count it."""
        self.counts.add(name, outcome)
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

    @property
    def finishing(self) -> dict[str, Any] | None:
        """The stats of a run that was stopped while moving its outputs into place (None: no such run)."""
        marker = self.partial / FINISHING if self.dir is not None else None
        if marker is None or not marker.is_file():
            return None
        return json.loads(marker.read_text(encoding="utf-8"))

    def finish(self, config: FilterConfig, stats: dict[str, Any]) -> None:
        """Record the stats (from here on a resumed run only completes this), then :meth:`complete`."""
        if self.dir is None:
            return
        write_json(self.partial / FINISHING, stats)
        self.complete(config, stats)

    def complete(self, config: FilterConfig, stats: dict[str, Any]) -> dict[str, Any]:
        """Move the outputs not moved yet into place (atomic renames), then write ``config.yaml`` and
        ``stats.json``; returns ``stats``."""
        assert self.dir is not None
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
        # renamed in one step, then removed: a stop inside the removal leaves a finished run, never a
        # checkpoint without its finishing marker (which a resume would take for a run to continue)
        shutil.rmtree(self.dir / REMOVED, ignore_errors=True)
        os.replace(self.partial, self.dir / REMOVED)
        shutil.rmtree(self.dir / REMOVED)
        return stats

    def check_finished(self, stats: Mapping[str, Any], config: FilterConfig) -> None:
        """Refuse a finished run whose output files no longer hold the records its ``stats.json`` counts
        (removed, cut or added to since)."""
        assert self.dir is not None
        for name in OUTPUTS:
            parquet = config.output.format == "parquet" and name != "errors"
            path = self.dir / f"{name}.{'parquet' if parquet else 'jsonl'}"
            try:
                n = pq.ParquetFile(path).metadata.num_rows if parquet else _lines(path)
            except (OSError, ValueError) as exc:
                raise UserInputError(f"{self.dir} holds a finished run whose {path.name} cannot be read "
                                     f"({one_line(exc)}): pass --overwrite to run again") from None
            if n != stats.get(name):
                raise UserInputError(f"{self.dir} holds a finished run whose {path.name} holds {n} records where "
                                     f"its stats.json counts {stats.get(name)}: pass --overwrite to run again")
