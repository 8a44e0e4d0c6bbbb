"""Data-reuse modes: what each generation trains on.

- ``replace``: only the previous generation's samples (Shumailov et al. 2024);
- ``mix``: a fraction ``real_fraction`` of each generation's training set is fresh
  original data, the rest the previous generation's samples (the paper's 10% arm);
- ``accumulate``: all data so far is kept, original included (Gerstgrasser et al. 2024,
  *Is Model Collapse Inevitable?*).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

MODES = ("replace", "mix", "accumulate")


@dataclass(frozen=True)
class Reuse:
    """How a generation's training set is composed from original and synthetic data."""

    mode: str = "replace"
    real_fraction: float = 0.1  # the paper's "10% of the original data kept"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 0.0 <= self.real_fraction <= 1.0:
            raise ValueError(f"real_fraction must be in [0, 1], got {self.real_fraction}")

    def n_real(self, n: int) -> int:
        """How many of ``n`` training items are fresh original data (``mix`` only)."""
        return int(round(self.real_fraction * n)) if self.mode == "mix" else 0

    def compose(
        self,
        rng: np.random.Generator,
        real: np.ndarray,
        synthetic: np.ndarray,
        history: Sequence[np.ndarray] = (),
    ) -> np.ndarray:
        """The next training set, items along axis 0.

        ``real`` is a pool of original data to draw fresh items from (``mix``),
        ``synthetic`` the previous generation's samples, ``history`` every earlier
        training contribution in order, original data first (``accumulate``).
        """
        if self.mode == "replace":
            return synthetic
        if self.mode == "mix":
            n = len(synthetic)
            k = self.n_real(n)
            fresh = real[rng.choice(len(real), size=k, replace=k > len(real))]
            return np.concatenate([fresh, synthetic[: n - k]], axis=0)
        return np.concatenate([*history, synthetic], axis=0)
