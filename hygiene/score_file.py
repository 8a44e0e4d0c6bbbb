"""Score every record of an input file, resumably: per-record features (and P(machine)) as JSONL.

The input is any file ``hygiene filter`` reads (JSONL, Parquet, .txt, a saved dataset, or a
directory or glob of them: :mod:`hygiene.records`). Each output row holds the record's ``line``
(or row; with several shards, its ``shard`` too), its fields (all but the text, or those named)
and the scores, so scores join back to records. A record that cannot be scored (unreadable, no
string text) gets a row with ``error`` in its place: every input record has exactly one row.
Rows go to ``<output>.partial`` a chunk at a time, each chunk flushed to disk; a rerun of the same
inputs and settings (recorded beside it in ``<output>.partial.json``) keeps the complete rows already
there and continues after them, another one is refused; the finished file is renamed into place, so
``output`` itself only ever appears whole. An input is never written over, nor an existing output
unless ``overwrite``.
"""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from hygiene.atomic import write_json
from hygiene.batch import check_record
from hygiene.normalize import without_lone_surrogates
from hygiene.errors import UserInputError, error_hint
from hygiene.records import Item, ReadOptions, Shard, discover_shards, dumps_record, read_shard, shard_states

#: texts -> {column: array of len(texts)}
ScoreFn = Callable[[list[str]], dict[str, np.ndarray]]


def _items(shards: Sequence[Shard], text_field: str) -> Iterator[Item]:
    """Every record of ``shards`` as read, in order, an unusable one with its ``error`` set."""
    for shard in shards:
        for item in read_shard(shard, ReadOptions(text_field)):
            if item.error is None:  # the filter's word for a record without a usable text
                item.error = check_record(item.record, text_field, None, "")[2]
            yield item


def read_texts(path: str | os.PathLike, text_field: str = "text") -> Iterator[tuple[int, dict, str]]:
    """``(line or row number, record, text)`` for each record of ``path``, in any input format; a bad record
    fails naming file and line."""
    for item in _items(discover_shards([path]), text_field):
        if item.error is not None:
            raise UserInputError(f"{item.shard}:{item.line}: {item.error}")
        yield item.line, item.record, without_lone_surrogates(item.record[text_field])


@dataclass(frozen=True)
class ScoreCounts:
    """What :func:`score_jsonl` wrote: one row per input record, ``errors`` of them with an ``error``."""

    rows: int
    errors: int
    first_error: str | None = None  # ``shard:line: message`` of the first, for the reader


def check_scored(counts: ScoreCounts, input_path: str | os.PathLike, output_path: str | os.PathLike) -> None:
    """Raise :class:`UserInputError` when a run had nothing to score, as ``filter`` does: no records, or every
    one an error (the output is written either way)."""
    if counts.rows == 0:
        raise UserInputError(f"no records in {input_path}: nothing was scored")
    if counts.errors == counts.rows:
        hint = error_hint(counts.first_error or "")
        raise UserInputError(f"every one of the {counts.rows} records is an error{hint}; see {output_path}")


def _complete_rows(partial: Path) -> int:
    """Number of complete rows in a partial output, cutting off a torn last line."""
    if not partial.is_file():
        return 0
    data = partial.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        partial.write_bytes(keep)
    return keep.count(b"\n")


def check_score_paths(input_path: str | os.PathLike, output_path: str | os.PathLike,
                      overwrite: bool = False) -> list[Shard]:
    """The shards :func:`score_jsonl` would read, or :class:`UserInputError` for what would stop it (a missing
    input, the output among the inputs, an existing output without ``overwrite``): checked before any model
    loads."""
    output = Path(output_path)
    shards = discover_shards([input_path])
    if any(output.resolve() == s.path.resolve() for s in shards):
        raise UserInputError(f"the output {output} is an input: choose another -o")
    if output.exists() and not overwrite:
        raise UserInputError(f"{output} exists: pass --overwrite to replace it, or choose another -o")
    return shards


def score_jsonl(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    score: ScoreFn,
    text_field: str = "text",
    chunk: int = 256,
    progress: bool = True,
    keep_fields: Sequence[str] | None = None,
    settings: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> ScoreCounts:
    """Score ``input_path`` into the JSONL ``output_path``: one row per record, in order (its line, its shard
    when there are several, the ``keep_fields`` of the record, default all but the text, and the scores;
    or ``error`` for a record that cannot be scored). Streams: ``chunk`` records in memory at a time.

    A record field named like one of the row's own columns (``line``, ``shard``, ``error`` or a score) is
    written as ``input_<name>``, so neither hides the other. ``settings`` (what scores, e.g. the detector)
    joins the inputs in what an interrupted run must share with the one that resumes it.
    """
    output = Path(output_path)
    partial = output.with_name(output.name + ".partial")
    marker = output.with_name(output.name + ".partial.json")
    shards = check_score_paths(input_path, output, overwrite)
    state = json.loads(json.dumps({"inputs": shard_states(shards), "text_field": text_field,
                                   "keep_fields": keep_fields, "settings": settings or {}}, default=str))
    if overwrite:
        partial.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
    if partial.exists():
        try:
            same = json.loads(marker.read_text(encoding="utf-8")) == state
        except (OSError, ValueError):
            same = False
        if not same:
            raise UserInputError(f"{partial} holds rows of other inputs or settings: pass --overwrite to start over")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"cannot create the folder of {output}: {exc.strerror or exc}") from None
    write_json(marker, state)
    done = _complete_rows(partial)
    several = len(shards) > 1
    items = _items(shards, text_field)
    rows = errors = 0
    first_error = None

    def count(item: Item) -> None:
        nonlocal rows, errors, first_error
        rows += 1
        if item.error is not None:
            errors += 1
            first_error = first_error or f"{item.shard}:{item.line}: {item.error}"

    for item in itertools.islice(items, done):  # written by an earlier run: counted, not scored again
        count(item)
    bar = tqdm(initial=done, desc="scoring", unit="record", disable=not progress)
    with partial.open("a", encoding="utf-8", errors="backslashreplace") as fh:  # a lone surrogate: its \\u escape
        while part := list(itertools.islice(items, chunk)):
            good = [item for item in part if item.error is None]
            cols = score([without_lone_surrogates(item.record[text_field]) for item in good]) if good else {}
            own = {"line", "shard", "error", *cols}
            row = 0
            for item in part:
                count(item)
                out: dict[str, Any] = {"line": item.line, **({"shard": item.shard} if several else {})}
                rec = item.record if isinstance(item.record, dict) else {}  # an error row's fields too, to join on
                kept = rec if keep_fields is None else {k: rec[k] for k in keep_fields if k in rec}
                out.update((f"input_{k}" if k in own else k, v) for k, v in kept.items()
                           if keep_fields is not None or k != text_field)
                if item.error is not None:
                    out["error"] = item.error
                else:
                    for name, values in cols.items():
                        v = values[row].item() if isinstance(values[row], np.generic) else values[row]
                        out[name] = None if isinstance(v, float) and not np.isfinite(v) else v
                    row += 1
                fh.write(dumps_record(out) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(part))
    bar.close()
    os.replace(partial, output)
    marker.unlink()
    return ScoreCounts(rows, errors, first_error)
