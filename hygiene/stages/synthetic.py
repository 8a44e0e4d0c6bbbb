"""Stage: reject likely machine-generated text using the synthetic-text detector.

The detector is any object with ``predict_proba(texts) -> (n, 2)`` (column 1: the
probability a text is machine-generated) and a calibrated ``threshold_``; by
default it is loaded once per process from ``hygiene.detector.load_detector``.
A document is rejected when its probability exceeds the threshold: the
detector's own (set for a target false-positive rate on human text) unless the
config gives one. "Exceeds", as the detector itself flags, so the calibrated
false-positive rate carries over unchanged.

Its ``prepare`` step computes the detector's cheap features (text statistics and the
lexical score: no language model) in worker processes, so that with ``--workers`` and
the language models on a GPU the main process runs only the models and the classifier.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from hygiene.batch import Batch, active_rows
from hygiene.config import SyntheticConfig
from hygiene.errors import UserInputError
from hygiene.paths import detector_path
from hygiene.stages.base import Filter, own_errors, timed

#: the column ``prepare`` writes: each undecided row's cheap features (the detector's ``first_pass_features``)
FIRST_PASS = "synthetic_first_pass"


class Detector(Protocol):
    """What the stage needs from a detector."""

    threshold_: float

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """(n, 2) class probabilities; column 1 is 'machine-generated'."""


def load_default_detector(path: str | Path | None = None, device: str | None = None, cascade: bool = True,
                          autocast: str | None = None, backend: str = "auto") -> Detector:
    """Load the detector at ``path`` (default ``models/detector``) onto ``device``, or fail with a one-line error."""
    path = detector_path(path)
    if not path.exists():
        raise UserInputError(
            f"no synthetic-text detector at {path}: train or install one, pass --detector PATH, "
            "or switch the stage off (synthetic.enabled=false; hygiene filter --no-synthetic)"
        )
    try:
        from hygiene.detector import load_detector
    except ImportError as exc:
        raise UserInputError(f"the synthetic-text detector is unavailable ({exc}); switch the stage off "
                             "(--no-synthetic, or synthetic.enabled=false)") from None
    from hygiene.lm import autocast_dtype, select_device

    select_device(device)  # an unknown or absent device: its own one-line error
    try:
        autocast_dtype(autocast)
    except ValueError as exc:
        raise UserInputError(f"synthetic.autocast: {exc}") from None
    if backend == "onnxruntime":
        from hygiene.onnx_lm import check_available

        check_available()
    try:
        return load_detector(str(path), device=device, cascade=cascade, autocast=autocast, backend=backend)
    except (OSError, ValueError, KeyError) as exc:
        raise UserInputError(f"cannot load the detector at {path}: {exc}") from None


#: detectors this process loaded, by (directory, device, cascade, autocast, backend)
_LOADED: dict[tuple[str | None, str | None, bool, str | None, str], Detector] = {}


class SyntheticFilter(Filter):
    """Score undecided documents with the detector; reject those above the threshold. Adds ``synthetic_p``, and
    ``synthetic_settled`` (1: the cascade's first pass decided, no language model read the text; 0: scored in
    full) where the detector says which (``last_settled_``). A text the detector cannot judge (P(machine) NaN:
    too short) passes, with neither."""

    name = "synthetic"
    columns = {"synthetic_p": float, "synthetic_settled": int}
    pure = False  # one model per process

    def __init__(self, config: SyntheticConfig | None = None, detector: Detector | None = None) -> None:
        self.config = config or SyntheticConfig()
        if detector is not None and not callable(getattr(detector, "predict_proba", None)):
            raise UserInputError(f"a detector needs a predict_proba(texts) method; {type(detector).__name__} has none")
        if detector is not None and self.config.threshold is None and not hasattr(detector, "threshold_"):
            raise UserInputError(f"{type(detector).__name__} has no threshold_: give it one, or set "
                                 f"synthetic.threshold")
        self._given = detector
        self._loaded: Detector | None = None

    def __getstate__(self) -> dict:
        """Pickled without a detector it loaded itself: each process loads its own, once."""
        return {**self.__dict__, "_loaded": None}

    @property
    def per_process(self) -> bool:
        """On CPU each worker process scores with its own copy; a GPU stays with the main process."""
        from hygiene.lm import select_device

        return self._given is None and select_device(self.config.device).type == "cpu"

    @property
    def cascade(self) -> bool:
        """Whether the detector's first pass settles texts: as configured, else on a CPU only (on a GPU, scoring
        every text was faster, with the same decisions: ``benchmarks/device_filter.py``)."""
        if self.config.cascade is not None:
            return self.config.cascade
        from hygiene.lm import select_device

        return select_device(self.config.device).type == "cpu"

    @property
    def detector(self) -> Detector:
        """The given detector, else the configured one, loaded on first use (once per process)."""
        if self._given is not None:
            return self._given
        if self._loaded is None:
            key = (self.config.model, self.config.device, self.cascade, self.config.autocast, self.config.backend)
            if key not in _LOADED:  # a process loads it once, however often the stage is unpickled
                _LOADED[key] = load_default_detector(*key)
            self._loaded = _LOADED[key]
        return self._loaded

    @property
    def prepared_columns(self) -> dict[str, type]:  # type: ignore[override]
        """The cheap features, computed ahead in worker processes; not for a detector passed in, which stays
        whole in the caller's process."""
        return {} if self._given is not None else {FIRST_PASS: list[float]}

    @property
    def first_pass_detector(self) -> Detector:
        """The detector this process holds, else one loaded on the CPU for its cheap features alone (a worker
        process never touches the GPU, and no language model is loaded until one scores)."""
        if self._given is not None:
            return self._given
        key = (self.config.model, self.config.device, self.cascade, self.config.autocast, self.config.backend)
        if key not in _LOADED:
            key = (self.config.model, "cpu", self.cascade, self.config.autocast, self.config.backend)
            if key not in _LOADED:
                _LOADED[key] = load_default_detector(*key)
        return _LOADED[key]

    def prepare(self, batch: Batch) -> dict[str, list]:
        return timed(self.name, self._add_first_pass, batch)

    def _add_first_pass(self, batch: Batch) -> dict[str, list]:
        rows = active_rows(batch, self.annotate_only).tolist()
        values: list[list[float] | None] = [None] * len(batch["text"])
        first_pass = getattr(self.first_pass_detector, "first_pass_features", None) if rows else None
        if first_pass is not None:
            text = batch["text"]
            for i, row in zip(rows, first_pass([text[i] for i in rows]).tolist()):
                values[i] = row
        return {**batch, FIRST_PASS: values}

    @property
    def threshold(self) -> float:
        """Probability above which a text is rejected."""
        if self.config.threshold is not None:
            return self.config.threshold
        return float(self.detector.threshold_)

    def setup(self) -> None:
        self.detector  # noqa: B018  (load it now)

    def score(self, texts: list[str], prepared: dict[str, list] | None = None) -> tuple[list[str | None], dict[str, list]]:
        probs: list[float] = []
        settled: list[int | None] = []
        first = (prepared or {}).get(FIRST_PASS)
        step = self.config.batch_size
        for start in range(0, len(texts), step):
            chunk = texts[start : start + step]
            ahead = first[start : start + step] if first is not None else [None]
            given = {"first": np.array(ahead, dtype=float)} if all(v is not None for v in ahead) else {}
            with own_errors(self.detector, "failed", f"detector {type(self.detector).__qualname__}"):
                p = np.asarray(self.detector.predict_proba(chunk, **given), dtype=float)
            if p.shape != (len(chunk), 2):
                raise UserInputError(f"detector {type(self.detector).__qualname__} returned shape {p.shape} for "
                                     f"{len(chunk)} texts, expected ({len(chunk)}, 2): [P(human), P(machine)] per text")
            judged = ~np.isnan(p[:, 1])  # a text too short to judge is not judged, and passes
            probs += [float(v) if ok else None for v, ok in zip(p[:, 1], judged)]
            mask = getattr(self.detector, "last_settled_", None)
            settled += ([int(v) if ok else None for v, ok in zip(mask, judged)]
                        if mask is not None and len(mask) == len(chunk) else [None] * len(chunk))
        threshold = self.threshold if probs else None
        return (["machine_generated" if p is not None and p > threshold else None for p in probs],
                {"synthetic_p": probs, "synthetic_settled": settled})
