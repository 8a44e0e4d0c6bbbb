"""Labelled texts for training, calibrating and evaluating the detector.

Two sources:

- JSONL files (or ``.jsonl.gz``) with ``text`` and ``label`` (``human``, or ``machine``/``synthetic`` as the
  generational corpora write it) and optional ``generator``, ``domain``, ``generation``,
  ``group`` (falling back to ``source_id``: texts derived from one human document share it,
  and splits must keep them together), ``source``;
- the human-text pool (:mod:`hygiene.human_data`) of one split: jsonl documents whole,
  books and plays cut into passages (a whole book is not one document to a crawl filter).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from hygiene.errors import UserInputError
from hygiene.human_data import SOURCES, iter_documents, passages
from hygiene.paths import data_hint
from hygiene.score_file import read_texts

#: label strings accepted in files -> 0 (human) / 1 (machine)
LABEL_VALUES = {"human": 0, "machine": 1, "synthetic": 1}
#: sources whose documents are whole files, cut into passages for calibration
_LONG_SOURCES = ("books", "tinyshakespeare")


@dataclass(frozen=True)
class LabelledText:
    """One text with its label (0 human, 1 machine) and the strata it is evaluated in."""

    text: str
    label: int
    generator: str | None = None
    domain: str | None = None
    generation: str | None = None
    group: str | None = None
    #: where the text comes from (a dataset's repository and path), for leave-one-source-out measures
    source: str | None = None


def read_labelled(path: str | os.PathLike) -> list[LabelledText]:
    """All records of a labelled JSONL file; a bad line fails with its file and line number."""
    path = Path(path)
    out: list[LabelledText] = []
    for n, rec, _ in read_texts(path):
        label = rec.get("label")
        if label not in LABEL_VALUES:
            raise UserInputError(f"{path}:{n}: label is {label!r}; expected one of {sorted(LABEL_VALUES)}")
        group = rec.get("group", rec.get("source_id"))
        out.append(
            LabelledText(
                text=rec["text"],
                label=LABEL_VALUES[label],
                generator=_opt(rec.get("generator")),
                domain=_opt(rec.get("domain")),
                generation=_opt(rec.get("generation")),
                group=_opt(group),
                source=_opt(rec.get("source")),
            )
        )
    if not out:
        raise UserInputError(f"{path}: no records")
    return out


def read_many(paths: Iterable[str | os.PathLike]) -> list[LabelledText]:
    """Records of several labelled files, in order."""
    return [r for p in paths for r in read_labelled(p)]


def human_pool(
    split: str = "calib",
    sources: Sequence[str] = tuple(SOURCES),
    passage_words: int = 200,
    max_passages: int = 20,
    root: str | os.PathLike | None = None,
) -> list[LabelledText]:
    """Human texts of one split of the pool: jsonl documents whole, books/plays as passages."""
    out: list[LabelledText] = []
    for doc in iter_documents(root=root, sources=sources, splits=[split]):
        texts = passages(doc.text, passage_words, max_passages) if doc.source in _LONG_SOURCES else [doc.text]
        out += [LabelledText(t, 0, generator="human", domain=doc.source, group=doc.id) for t in texts]
    if not out:
        raise UserInputError(f"no human text in split {split!r} of sources {list(sources)}"
                             f"{data_hint(root)}")
    return out


def _opt(value: object) -> str | None:
    return None if value is None or value == "" else str(value)
