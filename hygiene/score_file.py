"""Score every record of a JSONL file, resumably: per-record features (and P(machine)) as JSONL.

Rows go to ``<output>.partial`` a chunk at a time, each chunk flushed to disk; a rerun
keeps the complete rows already there and continues after them; the finished file
is renamed into place, so ``output`` itself only ever appears whole.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from hygiene.errors import UserInputError

#: texts -> {column: array of len(texts)}
ScoreFn = Callable[[list[str]], dict[str, np.ndarray]]


def read_texts(path: str | os.PathLike, text_field: str = "text") -> Iterator[tuple[int, dict, str]]:
    """``(line number, record, text)`` for each non-blank line (``.gz`` read as gzip); a bad record fails naming
    file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"input not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserInputError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get(text_field), str):
                raise UserInputError(f"{path}:{n}: expected an object with a string {text_field!r} field")
            yield n, rec, rec[text_field]


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
) -> int:
    """Score ``input_path`` into ``output_path`` (one row per record, in order); return the row count."""
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
                out = {"line": n, **({"id": rec["id"]} if "id" in rec else {})}
                for name, values in cols.items():
                    v = values[row].item() if isinstance(values[row], np.generic) else values[row]
                    out[name] = None if isinstance(v, float) and not np.isfinite(v) else v
                fh.write(json.dumps(out) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(part))
    bar.close()
    os.replace(partial, output)
    return len(records)
