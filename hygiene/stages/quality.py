"""Stage: reject documents failing a Gopher quality or repetition heuristic (:mod:`hygiene.quality`)."""
from __future__ import annotations

from hygiene.config import QualityConfig
from hygiene.quality import checks, quality_failures, quality_scores
from hygiene.stages.base import Filter


class QualityFilter(Filter):
    """Rejects a document failing any check: the first failed one is the reason, and every failed one
    is named; adds a ``quality_<metric>`` column per metric checked."""

    name = "quality"

    def __init__(self, config: QualityConfig | None = None) -> None:
        self.config = config or QualityConfig()
        self.columns = {f"quality_{metric}": float for _, metric, _, _ in checks(self.config)}

    def score(self, texts: list[str]) -> tuple[list[list[str]], dict[str, list]]:
        # no statistics beyond the word count for a text outside the word-count bounds, unless every score is asked for
        scores = quality_scores(texts, self.config, complete=self.annotate_only)
        columns = {}
        for column in self.columns:
            values = scores[column.removeprefix("quality_")].tolist()
            columns[column] = [None if v != v else v for v in values]  # NaN: not computed
        return quality_failures(scores, self.config), columns
