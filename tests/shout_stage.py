"""A stage defined outside the package, as a user writes one: reject text that shouts."""
from __future__ import annotations

from hygiene.stages import Filter


class Shout(Filter):
    """Reject a text whose share of upper-case letters is above ``max_share``."""

    name = "shout"
    columns = {"upper_share": float}

    def __init__(self, max_share: float = 0.5) -> None:
        self.max_share = max_share

    def score(self, texts: list[str]) -> tuple[list[str | None], dict[str, list]]:
        share = [sum(c.isupper() for c in t) / max(sum(c.isalpha() for c in t), 1) for t in texts]
        return ["too_loud" if s > self.max_share else None for s in share], {"upper_share": share}
