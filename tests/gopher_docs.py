"""Made-up documents that pass the Gopher quality checks, for filter tests."""
from __future__ import annotations

import numpy as np

STOP = ["the", "of", "and", "to", "with", "that", "have", "be"]


def make_doc(seed: int, words: int = 90) -> str:
    """A document that passes the Gopher checks: varied made-up words with stop words, in sentences."""
    rng = np.random.default_rng(seed)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    out = []
    for i in range(words):
        out.append(STOP[i % len(STOP)] if i % 3 == 0 else "".join(rng.choice(letters, int(rng.integers(4, 9)))))
        if i % 12 == 11:
            out[-1] += "."
    return " ".join(out).capitalize() + "."
