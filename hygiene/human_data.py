"""The human text in the shared data directory, and its fixed train/calib/eval split.

Every pre-2022 human document gets a stable id and a split chosen by a hash of
that id (books by file, so a held-out book is held out whole):

- ``train`` (80%): pre-training the reference language model;
- ``calib`` (10%): calibrating the detector's threshold on human text;
- ``eval`` (10%): measuring false positives on human text (never trained on or calibrated on).

WikiText-2 is not part of this pool: it is the fine-tuning and evaluation text of
the recursive-training simulation, kept disjoint from the base model's data.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from hygiene.errors import UserInputError, one_line
from hygiene.paths import data_dir

SPLITS = ("train", "calib", "eval")
#: source name -> files relative to the data directory (jsonl: one document per line)
SOURCES: dict[str, tuple[str, ...]] = {
    "books": ("books/*.txt",),
    "tinyshakespeare": ("tinyshakespeare/input.txt",),
    "web": ("web/web.jsonl",),
    "news": ("news/reuters21578.jsonl", "news/bbc.jsonl"),
    "forums": ("forums/20newsgroups.jsonl",),
    "docs": ("docs/peps.jsonl",),
}


@dataclass(frozen=True)
class HumanDoc:
    """One human document: stable id, source name, split and text."""

    id: str
    source: str
    split: str
    text: str


def split_of(key: str) -> str:
    """The split of a document id: 80/10/10 by a SHA-1 hash, stable across runs and machines."""
    h = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "train" if h < 80 else ("calib" if h < 90 else "eval")


def check_sources(sources: Iterable[str]) -> None:
    """A one-line error naming the first of ``sources`` that is not a source of the pool (:data:`SOURCES`)."""
    for source in sources:
        if source not in SOURCES:
            raise ValueError(f"unknown human source {source!r}; choose from {sorted(SOURCES)}")


def iter_documents(
    root: str | Path | None = None,
    sources: Iterable[str] = tuple(SOURCES),
    splits: Iterable[str] = SPLITS,
) -> Iterator[HumanDoc]:
    """Yield the human documents of ``sources`` that fall in ``splits``, in a fixed order."""
    root = Path(root) if root is not None else data_dir()
    wanted = set(splits)
    sources = list(sources)
    check_sources(sources)
    for source in sources:
        for pattern in SOURCES[source]:
            for path in sorted(root.glob(pattern)):
                rel = path.relative_to(root).as_posix()
                if path.suffix == ".jsonl":
                    with path.open(encoding="utf-8") as fh:
                        for i, line in enumerate(fh):
                            doc_id = f"{rel}:{i}"
                            split = split_of(doc_id)
                            if split not in wanted:
                                continue
                            text = _line_text(path, i, line)
                            if text.strip():
                                yield HumanDoc(doc_id, source, split, text)
                else:
                    split = "train" if source == "tinyshakespeare" else split_of(rel)
                    if split in wanted:
                        yield HumanDoc(rel, source, split, path.read_text(encoding="utf-8", errors="replace"))


def _line_text(path: Path, i: int, line: str) -> str:
    """The ``text`` of line ``i`` (0-based) of a JSONL file ("" for a blank line): a line that is not a JSON
    object, or whose text is not a string, is a one-line error naming the file and line."""
    if not line.strip():
        return ""
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise UserInputError(f"{path}, line {i + 1}: not JSON ({one_line(exc)})") from exc
    if not isinstance(record, dict):
        raise UserInputError(f"{path}, line {i + 1}: not a JSON object")
    text = record.get("text") or ""
    if not isinstance(text, str):
        raise UserInputError(f"{path}, line {i + 1}: \"text\" is not a string")
    return text


def passages(text: str, words: int = 200, max_passages: int | None = None) -> list[str]:
    """Cut a long text into passages of about ``words`` words along paragraph boundaries."""
    out: list[str] = []
    cur: list[str] = []
    n = 0
    for para in text.split("\n\n"):
        para = " ".join(para.split())
        if not para:
            continue
        cur.append(para)
        n += len(para.split())
        if n >= words:
            out.append("\n\n".join(cur))
            cur, n = [], 0
            if max_passages is not None and len(out) >= max_passages:
                return out
    if cur and n >= words // 2:
        out.append("\n\n".join(cur))
    return out
