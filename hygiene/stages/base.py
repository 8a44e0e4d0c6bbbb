"""The block a filter pipeline is made of: a :class:`Stage` over a batch of columns.

A stage keeps its parameters in ``__init__``, names the score columns it writes
(``columns``: name -> Python type), and ``process(batch)`` returns the batch with
its decisions and columns added. A stage never drops a row: it sets ``stage`` and
``reason`` on the documents it rejects, and later stages leave those alone (with
``annotate_only`` every filter scores every document; dedup still indexes only the documents no earlier
stage rejected, so the decisions are a real run's). Three shapes:

- :class:`Stage`: any batch-to-batch step (normalisation rewrites the ``text`` column);
- :class:`Filter`: one question per document: ``score(texts)`` gives, per text, the
  reason to reject it (``None``: keep), or every rule it fails (a list; empty: keep),
  and its scores; the base picks the rows and writes the decisions: ``reason`` is the
  first rule, the ``failed`` column names them all;
- :class:`KeyedDedup`: "the earliest document sharing a key wins" (exact and near
  dedup). It needs the whole corpus, so it says how it runs globally: ``prepare``
  adds its keys (per batch, in parallel), then ``resolve`` given each document's earliest
  document. The local engine finds those with a growing :class:`~hygiene.dedup.HashIndex`,
  the Ray engine with a group-by over all keys.

Every call adds the seconds it took, shared out over the batch's rows, to the column
``seconds_of(name)``, so the stats can say where a run spends its time on either engine.

``pure`` says whether a stage is a cheap function of its batch alone (it may run in
any worker process); a stage that is not (it loads a model, or holds an index)
runs in the caller's process locally and, on Ray, on actors that call ``setup`` once.
``per_process`` says that a stage that is not pure may still run in the local engine's
worker processes, each holding its own copy of what it loads (a model, once per process);
one that holds state across batches (a dedup index) may not.

``prepare(batch)`` is a stage's optional pure first step: columns that need nothing
loaded once per process (dedup keys; the detector's cheap features), computed in
worker processes (locally) or the fused ``map_batches`` (Ray) before the stage itself
runs wherever it runs. ``prepared_columns`` names them; ``process`` consumes and drops
them, and computes them itself when they are absent.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence, Sized

import numpy as np

from hygiene.batch import Batch, active_rows, decisions
from hygiene.dedup import HashIndex
from hygiene.errors import UserInputError, one_line

#: the column holding every rule a rejected document fails (a list of names)
FAILED = "failed"


def built_in(part: Any) -> bool:
    """Whether ``part`` (a stage, a detector) is one of this package's (else one of the user's: its errors are
    theirs to mend, and the Ray engine ships its code with the job)."""
    return type(part).__module__.split(".")[0] == "hygiene"


@contextlib.contextmanager
def own_errors(part: Any, doing: str, what: str | None = None) -> Iterator[None]:
    """Turn an exception from a part of one's own (a stage; a stand-in detector) into a one-line
    :class:`UserInputError` naming it (``what``, default ``stage <name> (<class>)``) and what it was ``doing``;
    one from this package's parts keeps its traceback (a bug here)."""
    try:
        yield
    except UserInputError:
        raise
    except Exception as exc:
        if built_in(part):
            raise
        what = what or f"stage {part.name} ({type(part).__qualname__})"
        raise UserInputError(f"{what} {doing}: {type(exc).__name__}: {one_line(exc)}") from exc


def seconds_of(stage: str) -> str:
    """The column holding each row's share of the seconds ``stage`` spent on its batch."""
    return f"seconds.{stage}"


def timed(stage: str, step: Callable[[Batch], dict[str, list]], batch: Batch) -> dict[str, list]:
    """``step(batch)``, its seconds added to the rows' ``seconds_of(stage)`` column."""
    start = time.perf_counter()
    out = step(batch)
    n = len(out["text"])
    share = (time.perf_counter() - start) / max(n, 1)
    column = seconds_of(stage)
    out[column] = [t + share for t in out.get(column) or [0.0] * n]
    return out


class Stage:
    """One step of the filter: parameters in ``__init__``, ``process(batch) -> batch``."""

    #: the value of ``stage`` in the documents it rejects, and its name in the stats
    name: ClassVar[str] = ""
    #: the score columns it writes (name -> Python type: float, int or str)
    columns: Mapping[str, type] = {}
    #: a cheap function of its batch alone: may run in worker processes
    pure: ClassVar[bool] = True
    #: not pure, but each worker process may hold its own copy of what it loads (no state across batches)
    per_process: bool = False
    #: score every document and drop nothing (set by the pipeline for the whole run)
    annotate_only: bool = False
    #: the columns ``prepare`` adds (name -> Python type), consumed by ``process``; empty: no prepare step
    prepared_columns: Mapping[str, Any] = {}

    def setup(self) -> None:
        """Load what the stage needs (a model) now, so a run fails before it starts, not midway."""

    def process(self, batch: Batch) -> dict[str, list]:
        """The batch with this stage's decisions and columns added."""
        raise NotImplementedError

    def prepare(self, batch: Batch) -> dict[str, list]:
        """The batch with ``prepared_columns`` added (pure: runs in any process), timed."""
        return batch

    def __call__(self, batch: Batch) -> dict[str, list]:
        """A stage is a batch function (``datasets.map(batched=True)``, Ray ``map_batches``), timed.

        An exception from a stage of one's own (a class defined outside this package) is a one-line
        :class:`UserInputError` naming the stage (:func:`own_errors`), and so is a batch returned with a
        column of another length: a stage never drops or adds a row."""
        with own_errors(self, "failed"):
            return self._same_rows(batch, timed(self.name, self.process, batch))

    def prepared(self, batch: Batch) -> dict[str, list]:
        """:meth:`prepare`, held to the same rules as a call: a one-line error naming the stage, every row kept."""
        with own_errors(self, "failed to prepare"):
            return self._same_rows(batch, self.prepare(batch))

    def _same_rows(self, batch: Batch, out: dict[str, list]) -> dict[str, list]:
        n = len(batch["text"])
        for column, values in out.items():
            if len(values) != n:
                raise UserInputError(f"stage {self.name} ({type(self).__qualname__}) returned {len(values)} rows of "
                                     f"{column!r} for a batch of {n}: a stage never drops or adds a row (it rejects "
                                     "with stage and reason)")
        return out

    def _check_count(self, what: str, values: Sized, texts: int) -> None:
        """A one-line error unless the stage gave one of ``what`` per text (a stage of one's own may not)."""
        if len(values) != texts:
            raise UserInputError(f"stage {self.name} returned {len(values)} {what} for {texts} texts")


class Filter(Stage):
    """A stage that answers one question per document: score the undecided ones, reject some with a reason."""

    def score(self, texts: list[str]) -> tuple[Sequence[str | Sequence[str] | None], Mapping[str, Sequence[Any]]]:
        """Per text, the reason to reject it (``None``: keep it) or every rule it fails (empty: keep it),
        and each of ``columns`` per text. A filter with ``prepared_columns`` is called as
        ``score(texts, prepared)``: those of its columns the batch holds, per text (``None`` where absent)."""
        raise NotImplementedError

    def process(self, batch: Batch) -> dict[str, list]:
        if any(c not in batch for c in self.prepared_columns):  # not prepared ahead (the library's own loop)
            batch = self.prepare(batch)
        rows = active_rows(batch, self.annotate_only).tolist()
        text = batch["text"]
        prepared = ([{c: [batch[c][i] for i in rows] for c in self.prepared_columns if c in batch}]
                    if self.prepared_columns else [])
        reasons, scores = self.score([text[i] for i in rows], *prepared)
        self._check_count("reasons", reasons, len(rows))
        for column in self.columns:
            if column not in scores:
                raise UserInputError(f"stage {self.name} returned no {column!r} scores (it names that column)")
            self._check_count(f"{column!r} scores", scores[column], len(rows))
        stage, reason = decisions(batch)
        out = {k: v for k, v in batch.items() if k not in self.prepared_columns}
        failed = list(batch.get(FAILED) or [None] * len(stage))
        for column in self.columns:
            values: list[Any] = [None] * len(stage)
            for i, value in zip(rows, scores[column]):
                values[i] = value
            out[column] = values
        for i, why in zip(rows, reasons):
            rules = [why] if isinstance(why, str) else list(why or ())
            if rules and stage[i] is None:
                stage[i], reason[i], failed[i] = self.name, rules[0], rules
        out["stage"], out["reason"], out[FAILED] = stage, reason, failed
        return out


class KeyedDedup(Stage):
    """A dedup stage: documents sharing a key are duplicates, and the earliest one (smallest ``n``) is kept.

    A subclass gives ``keys(texts)`` (the same number of uint64 keys for each text, or
    ``None`` for a text with none), ``reason``, and ``mark(n, earliest)``, the value of
    its one score column for a document given the earliest document it is linked to.
    Links chain: a document's earliest is the earliest document of its first key
    already seen, so near-duplicates of near-duplicates share one kept document.
    """

    pure = False
    #: the ``reason`` of a rejected duplicate
    reason: ClassVar[str] = "duplicate"

    def __init__(self, index: HashIndex | None = None) -> None:
        self.index = index if index is not None else HashIndex(self.key_scheme)
        if self.index.scheme != self.key_scheme:
            raise ValueError(f"{self.name}: an index of {self.index.scheme!r} keys, not {self.key_scheme!r}")

    @property
    def key_scheme(self) -> str:
        """How the keys are made, parameters included: recorded with the saved index, checked on resume."""
        return self.name

    @property
    def key_column(self) -> str:
        """The column ``prepare`` writes and ``resolve`` removes."""
        return f"{self.name}_keys"

    def keys(self, texts: list[str]) -> list[list[int] | None]:
        """The keys of each text (``None``: no key; the document is its own earliest)."""
        raise NotImplementedError

    def mark(self, n: int, earliest: int) -> Any:
        """This stage's score for document ``n`` whose earliest linked document is ``earliest``."""
        raise NotImplementedError

    @property
    def prepared_columns(self) -> dict[str, Any]:  # type: ignore[override]
        return {self.key_column: list[int]}

    def prepare(self, batch: Batch) -> dict[str, list]:
        """The batch with the keys of the rows this stage decides (pure: runs anywhere), timed."""
        return timed(self.name, self._add_keys, batch)

    def _add_keys(self, batch: Batch) -> dict[str, list]:
        # the undecided rows only, also when annotating: a document an earlier stage rejected never joins the
        # index, so it never stands for a cluster, and --annotate-only gives the decisions of a real run
        rows = active_rows(batch).tolist()
        text = batch["text"]
        keys: list[list[int] | None] = [None] * len(text)
        found = self.keys([text[i] for i in rows])
        self._check_count("keys", found, len(rows))
        for i, row_keys in zip(rows, found):
            keys[i] = row_keys
        return {**batch, self.key_column: keys}

    def resolve(self, batch: Batch, earliest: Sequence[int]) -> dict[str, list]:
        """Decisions and the score column, given each row's earliest linked document (its own ``n`` if none)."""
        stage, reason = decisions(batch)
        column: list[Any] = [None] * len(stage)
        for i in active_rows(batch).tolist():  # as _add_keys: the undecided rows
            n = int(batch["n"][i])
            column[i] = self.mark(n, int(earliest[i]))
            if earliest[i] != n and stage[i] is None:
                stage[i], reason[i] = self.name, self.reason
        out = {k: v for k, v in batch.items() if k != self.key_column}
        (name,) = self.columns
        return {**out, "stage": stage, "reason": reason, name: column}

    def process(self, batch: Batch) -> dict[str, list]:
        """Resolve one batch against the index of every earlier batch, then add its keys to the index."""
        if self.key_column not in batch:
            batch = self._add_keys(batch)
        ordinals = [int(n) for n in batch["n"]]
        earliest = list(ordinals)
        keyed = [i for i, k in enumerate(batch[self.key_column]) if k is not None]
        if keyed:
            keys = np.array([batch[self.key_column][i] for i in keyed], dtype=np.uint64)
            linked = self.index.link(keys, np.array([ordinals[i] for i in keyed], np.int64))
            for i, value in zip(keyed, linked.tolist()):
                earliest[i] = value
            self.index.maybe_compact()
        return self.resolve(batch, earliest)
