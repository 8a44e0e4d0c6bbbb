"""Stage: reject documents whose (normalised) text is empty or only whitespace."""
from __future__ import annotations

from hygiene.stages.base import Filter


class RejectEmpty(Filter):
    """Reject an empty text (stage ``input``, reason ``empty_text``): nothing to score downstream."""

    name = "input"

    def score(self, texts: list[str]) -> tuple[list[str | None], dict[str, list]]:
        return ["empty_text" if not t.strip() else None for t in texts], {}
