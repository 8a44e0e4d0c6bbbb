"""Labelled generational corpora: human text and what each model generation wrote.

A corpus directory holds the same rows twice: ``hf/`` (a Hugging Face dataset,
``save_to_disk``) and ``corpus.jsonl``. One row per text, with the fields of
:class:`CorpusRow`. ``split_corpus`` cuts it into train/validation/test by
``source_id``: a human block and every continuation written after it share a
``source_id`` and so always land in the same split.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence

from datasets import Dataset, DatasetDict, load_from_disk

from collapse_sim.resume import reading
from hygiene.atomic import atomic_open
from hygiene.errors import UserInputError

LABELS = ("human", "synthetic")
SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class CorpusRow:
    """One text of a generational corpus."""

    text: str  # the text itself (for synthetic rows: the continuation only, prompt excluded)
    generation: int  # 0 = human; k >= 1 = written by model generation k - 1 (the training data of generation k)
    label: str  # "human" or "synthetic"
    generator: str  # "human", or "<model path> (generation k-1)"
    decoding: str  # "beam" / "sample" / "greedy"; "" for human text
    mode: str  # "replace" / "mix" / "accumulate"; "" for human text
    seed: int  # the run's seed
    prompt: str  # the human block this text continues; "" for human rows
    source_id: str  # the human block it came from ("<file>:<block index>")

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {self.label!r}")
        if (self.label == "human") != (self.generation == 0):
            raise ValueError(f"generation {self.generation} does not fit label {self.label!r}")


COLUMNS = tuple(f.name for f in fields(CorpusRow))


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished directory into place, replacing an older one."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)


def _save_dataset(ds: Dataset | DatasetDict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.save_to_disk(str(tmp))
    _replace_dir(tmp, path)


def _write_jsonl(ds: Dataset, path: Path) -> None:
    with atomic_open(path, "w") as fh:
        for row in ds:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_corpus(rows: Iterable[CorpusRow], out_dir: str | Path) -> Dataset:
    """Write ``rows`` to ``out_dir/hf`` (HF dataset) and ``out_dir/corpus.jsonl``; return the dataset."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = [asdict(r) for r in rows]
    ds = Dataset.from_dict({c: [r[c] for r in records] for c in COLUMNS})
    _save_dataset(ds, out_dir / "hf")
    _write_jsonl(ds, out_dir / "corpus.jsonl")
    return ds


def load_corpus(corpus_dir: str | Path) -> Dataset:
    """The corpus saved in ``corpus_dir`` (a run's ``corpus/``); a clear error when there is none."""
    path = Path(corpus_dir) / "hf"
    if not (path / "dataset_info.json").is_file():
        raise FileNotFoundError(f"no corpus at {path} (expected a dataset written by write_corpus)")
    with reading(path, "rebuild it (collapse-sim corpus RUN --rebuild)"):
        ds = load_from_disk(str(path))
    missing = set(COLUMNS) - set(ds.column_names)
    if missing:
        raise ValueError(f"corpus at {path} lacks columns {sorted(missing)}")
    return ds


def _check_fractions(fractions: Sequence[float]) -> None:
    """Refuse split ``fractions`` that make no split: not three finite, non-negative numbers with a positive,
    finite sum (NaN or infinity would put a source id in no split)."""
    ok = len(fractions) == len(SPLIT_NAMES) and all(math.isfinite(f) and f >= 0 for f in fractions)
    if not ok or not 0 < sum(fractions) < math.inf:
        raise UserInputError(f"split fractions {tuple(fractions)}: need three finite, non-negative numbers "
                             "with a positive sum (train, validation, test)")


def split_of_source(source_id: str, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """The split of a ``source_id``, chosen by a SHA-1 hash: stable across runs and machines."""
    _check_fractions(fractions)
    u = int(hashlib.sha1(source_id.encode("utf-8")).hexdigest()[:12], 16) / 16**12
    bounds = [sum(fractions[: i + 1]) / sum(fractions) for i in range(len(fractions))]
    return next(name for name, b in zip(SPLIT_NAMES, bounds) if u < b)


def split_rows(source_ids: Sequence[str], texts: Sequence[str],
               fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> list[str]:
    """The split of each row: its source's (:func:`split_of_source`), except that no text is in two splits: a
    text written word for word for sources of different splits (degenerate beam outputs repeat across
    prompts) goes, every copy of it, to the earliest of those splits (train, then validation), so a
    held-out split never holds a text the training split has."""
    assignment = [split_of_source(s, fractions) for s in source_ids]
    earliest: dict[str, str] = {}
    for text, split in zip(texts, assignment):
        earliest[text] = min(earliest.get(text, split), split, key=SPLIT_NAMES.index)
    return [earliest[text] for text in texts]


def split_corpus(
    corpus_dir: str | Path, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, int]:
    """Split the corpus (:func:`split_rows`) into ``corpus_dir/splits`` (HF) and ``<split>.jsonl``; return row
    counts."""
    _check_fractions(fractions)
    corpus_dir = Path(corpus_dir)
    ds = load_corpus(corpus_dir)
    assignment = split_rows(ds["source_id"], ds["text"], fractions)
    parts = DatasetDict(
        {name: ds.select([i for i, a in enumerate(assignment) if a == name]) for name in SPLIT_NAMES}
    )
    _save_dataset(parts, corpus_dir / "splits")
    for name, part in parts.items():
        _write_jsonl(part, corpus_dir / f"{name}.jsonl")
    return {name: len(part) for name, part in parts.items()}
