"""Misspelt copies of training rows, so the detector does not read misspelling as human.

Typing errors raise a text's perplexity under the language models, the direction human text lies in;
an evader who sprinkles typos over machine text moves it towards the human side. Training on copies
of some training rows, human and machine alike, with letters swapped, dropped, doubled or hit on a
neighbouring key, teaches the classifier which evidence survives misspelling; copies of human rows keep
misspelling from becoming a sign of human writing in turn. A copy keeps its row's label and group, so
the group splits (out-of-fold lexical scores, the calibration share) keep a row and its copies together.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Sequence

from hygiene.labelled import LabelledText

#: QWERTY neighbours of each lower-case letter (a slip of the finger)
_NEIGHBOURS = {
    "q": "wa", "w": "qes", "e": "wrd", "r": "etf", "t": "ryg", "y": "tuh", "u": "yij", "i": "uok", "o": "ipl",
    "p": "ol", "a": "qsz", "s": "adw", "d": "sfe", "f": "dgr", "g": "fht", "h": "gjy", "j": "hku", "k": "jli",
    "l": "ko", "z": "xa", "x": "zcs", "c": "xvd", "v": "cbf", "b": "vng", "n": "bmh", "m": "nj",
}
EDITS = ("swap", "drop", "double", "neighbour")


@dataclass(frozen=True)
class TypoCopies:
    """How many training rows get a misspelt copy, and how heavily each is misspelt."""

    #: share of the training rows copied (0: none); a seeded sample over every part
    share: float = 0.0
    #: each copy's chance of an edit per word of four letters or more, drawn uniformly up to this
    max_rate: float = 0.2

    def __post_init__(self) -> None:
        if not (isinstance(self.share, (int, float)) and 0 <= self.share <= 1):
            raise ValueError(f"typo_copies.share must be a fraction in [0, 1], not {self.share!r}")
        if not (isinstance(self.max_rate, (int, float)) and 0 < self.max_rate <= 1):
            raise ValueError(f"typo_copies.max_rate must be in (0, 1], not {self.max_rate!r}")


def misspell(text: str, rate: float, rng: random.Random) -> str:
    """``text`` with one edit (see :data:`EDITS`) in each word of four letters or more with chance ``rate``."""
    words = text.split(" ")
    for i, w in enumerate(words):
        if len(w) < 4 or rng.random() >= rate:
            continue
        j = rng.randrange(len(w) - 1)
        edit = rng.choice(EDITS)
        if edit == "swap":
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        elif edit == "drop":
            words[i] = w[:j] + w[j + 1:]
        elif edit == "double":
            words[i] = w[:j + 1] + w[j] + w[j + 1:]
        else:  # a neighbouring key, in the letter's case; a character with no neighbours stays
            near = _NEIGHBOURS.get(w[j].lower())
            if near:
                c = rng.choice(near)
                words[i] = w[:j] + (c.upper() if w[j].isupper() else c) + w[j + 1:]
    return " ".join(words)


def typo_copies(rows: Sequence[LabelledText], config: TypoCopies, seed: int) -> list[LabelledText]:
    """Misspelt copies of a seeded ``config.share`` of ``rows`` (label, group and the rest kept)."""
    n = round(config.share * len(rows))
    if n == 0:
        return []
    rng = random.Random(f"{seed}:typo-copies")
    picked = sorted(rng.sample(range(len(rows)), n))
    return [dataclasses.replace(rows[i], text=misspell(rows[i].text, rng.uniform(0, config.max_rate), rng))
            for i in picked]
