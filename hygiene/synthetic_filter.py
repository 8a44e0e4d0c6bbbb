"""Batch stage that rejects likely machine-generated text using the synthetic-text detector.

The detector is any object with ``predict_proba(texts) -> (n, 2)`` (column 1: the
probability a text is machine-generated) and a calibrated ``threshold_``; by
default it is loaded once per process from ``hygiene.detector.load_detector``.
A document is rejected when its probability exceeds the threshold: the
detector's own (set for a target false-positive rate on human text) unless the
config gives one. "Exceeds", as the detector itself flags, so the calibrated
false-positive rate carries over unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Protocol, Sequence

import numpy as np

from hygiene.batch import active_rows, decisions
from hygiene.batch import texts as batch_texts
from hygiene.config import SyntheticConfig
from hygiene.errors import UserInputError
from hygiene.paths import models_dir


class Detector(Protocol):
    """What the stage needs from a detector."""

    threshold_: float

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """(n, 2) class probabilities; column 1 is 'machine-generated'."""


def load_default_detector(path: str | Path | None = None) -> Detector:
    """Load the detector at ``path`` (default ``models/detector``), or fail with a one-line error."""
    path = Path(path) if path is not None else models_dir() / "detector"
    if not path.exists():
        raise UserInputError(
            f"no synthetic-text detector at {path}: train or install one, pass --detector PATH, "
            "or switch the stage off with --no-synthetic"
        )
    try:
        from hygiene.detector import load_detector
    except ImportError as exc:
        raise UserInputError(f"the synthetic-text detector is unavailable ({exc}); use --no-synthetic") from None
    try:
        return load_detector(str(path))
    except (OSError, ValueError, KeyError) as exc:
        raise UserInputError(f"cannot load the detector at {path}: {exc}") from None


class SyntheticFilter:
    """Batch stage: score undecided documents with the detector; adds ``synthetic_p``."""

    columns = ("synthetic_p",)

    def __init__(self, config: SyntheticConfig | None = None, detector: Detector | None = None,
                 annotate_only: bool = False) -> None:
        self.config = config or SyntheticConfig()
        self._detector = detector
        self.annotate_only = annotate_only

    @property
    def detector(self) -> Detector:
        """The detector, loaded on first use (once per process)."""
        if self._detector is None:
            self._detector = load_default_detector(self.config.model)
        return self._detector

    @property
    def threshold(self) -> float:
        """Probability above which a text is rejected."""
        if self.config.threshold is not None:
            return self.config.threshold
        return float(self.detector.threshold_)

    def __call__(self, batch: Mapping[str, Sequence]) -> dict[str, list]:
        stage, reason = decisions(batch)
        rows = active_rows(batch, self.annotate_only).tolist()
        texts = batch_texts(batch)
        probs: list[float | None] = [None] * len(stage)
        step = self.config.batch_size
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            p = np.asarray(self.detector.predict_proba([texts[i] for i in chunk]), dtype=float)
            if p.shape != (len(chunk), 2):
                raise ValueError(f"detector returned shape {p.shape} for {len(chunk)} texts, expected ({len(chunk)}, 2)")
            for i, value in zip(chunk, p[:, 1].tolist()):
                probs[i] = value
        if rows:
            threshold = self.threshold
            for i in rows:
                if probs[i] > threshold and stage[i] is None:
                    stage[i], reason[i] = "synthetic", "machine_generated"
        return {**batch, "stage": stage, "reason": reason, "synthetic_p": probs}
