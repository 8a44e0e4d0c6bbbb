"""Score every record of an input file, resumably: per-record features (and P(machine)) as JSONL.

The input is any file ``hygiene filter`` reads (JSONL, Parquet, .txt, a saved dataset:
:mod:`hygiene.records`). Each output row holds the record's ``line`` (or row), its
fields (all but the text, or those named) and the scores, so scores join back to records.
Rows go to ``<output>.partial`` a chunk at a time, each chunk flushed to disk; a rerun
keeps the complete rows already there and continues after them; the finished file
is renamed into place, so ``output`` itself only ever appears whole.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from hygiene.errors import UserInputError
from hygiene.records import ReadOptions, discover_shards, dumps_record, read_shard

#: texts -> {column: array of len(texts)}
ScoreFn = Callable[[list[str]], dict[str, np.ndarray]]


def read_texts(path: str | os.PathLike, text_field: str = "text") -> Iterator[tuple[int, dict, str]]:
    """``(line or row number, record, text)`` for each record of ``path``, in any input format; a bad record
    fails naming file and line."""
    for shard in discover_shards([path]):
        for item in read_shard(shard, ReadOptions(text_field)):
            if item.error is not None:
                raise UserInputError(f"{item.shard}:{item.line}: {item.error}")
            if not isinstance(item.record.get(text_field), str):
                raise UserInputError(f"{item.shard}:{item.line}: expected a string {text_field!r} field")
            yield item.line, item.record, item.record[text_field]


def _complete_rows(partial: Path) -> int:
    """Number of complete rows in a partial output, cutting off a torn last line."""
    if not partial.is_file():
        return 0
    data = partial.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        partial.write_bytes(keep)
    return keep.count(b"\n")


def score_jsonl(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    score: ScoreFn,
    text_field: str = "text",
    chunk: int = 256,
    progress: bool = True,
    keep_fields: Sequence[str] | None = None,
) -> int:
    """Score ``input_path`` into the JSONL ``output_path`` (one row per record, in order: its line, the
    ``keep_fields`` of the record, default all but the text, and the scores); return the row count."""
    output = Path(output_path)
    partial = output.with_name(output.name + ".partial")
    output.parent.mkdir(parents=True, exist_ok=True)
    done = _complete_rows(partial)
    records = list(read_texts(input_path, text_field))
    bar = tqdm(total=len(records), initial=done, desc="scoring", unit="record", disable=not progress)
    with partial.open("a", encoding="utf-8") as fh:
        for start in range(done, len(records), chunk):
            part = records[start : start + chunk]
            cols = score([t for _, _, t in part])
            for row, (n, rec, _) in enumerate(part):
                kept = rec if keep_fields is None else {k: rec[k] for k in keep_fields if k in rec}
                out = {"line": n, **{k: v for k, v in kept.items() if keep_fields is not None or k != text_field}}
                for name, values in cols.items():
                    v = values[row].item() if isinstance(values[row], np.generic) else values[row]
                    out[name] = None if isinstance(v, float) and not np.isfinite(v) else v
                fh.write(dumps_record(out) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(part))
    bar.close()
    os.replace(partial, output)
    return len(records)
