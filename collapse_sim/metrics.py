"""The one ``metrics.json`` schema every simulation writes.

``{"experiment": str, "config": {...}, "generations": [int, ...],
"metrics": {NAME: {"mean": [...], "median": [...], "p10": [...], "p90": [...]}},
"summary": {...}}`` with one list entry per generation.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hygiene.atomic import write_json


def spread(values: np.ndarray) -> dict[str, list[float]]:
    """Summarise a ``(runs, generations)`` array over runs: mean, median, p10, p90 per generation.

    NaNs (e.g. a metric undefined for some run) are ignored.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[None, :]
    if not np.isnan(v).any():  # the common case: vectorised over all columns at once
        p10, med, p90 = np.percentile(v, [10, 50, 90], axis=0)
        return {"mean": v.mean(axis=0).tolist(), "median": med.tolist(), "p10": p10.tolist(), "p90": p90.tolist()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "mean": np.nanmean(v, axis=0).tolist(),
            "median": np.nanmedian(v, axis=0).tolist(),
            "p10": np.nanpercentile(v, 10, axis=0).tolist(),
            "p90": np.nanpercentile(v, 90, axis=0).tolist(),
        }


@dataclass
class SimulationResult:
    """The result of one simulation, in the shared schema (see module docstring)."""

    experiment: str
    config: dict[str, Any]
    generations: list[int]
    metrics: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, values: np.ndarray) -> None:
        """Add metric ``name`` from a ``(runs, generations)`` array."""
        self.metrics[name] = spread(values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "config": self.config,
            "generations": list(self.generations),
            "metrics": self.metrics,
            "summary": self.summary,
        }

    def save(self, out_dir: str | Path) -> Path:
        """Write ``metrics.json`` atomically into ``out_dir``; return its path."""
        path = Path(out_dir) / "metrics.json"
        write_json(path, self.to_dict())
        return path


def config_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict from a config dataclass (or mapping)."""
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise TypeError(f"not a config: {type(cfg).__name__}")
