"""Stage: reject documents failing a Gopher quality or repetition heuristic (:mod:`hygiene.quality`)."""
from __future__ import annotations

from hygiene.config import QualityConfig
from hygiene.quality import checks, quality_reasons, quality_scores
from hygiene.stages.base import Filter


class QualityFilter(Filter):
    """The first failed Gopher check is the reason; adds a ``quality_<metric>`` column per metric checked."""

    name = "quality"

    def __init__(self, config: QualityConfig | None = None) -> None:
        self.config = config or QualityConfig()
        self.columns = {f"quality_{metric}": float for _, metric, _, _ in checks(self.config)}

    def score(self, texts: list[str]) -> tuple[list[str | None], dict[str, list]]:
        # the costly n-gram statistics only for texts that pass the rest, unless every score is asked for
        scores = quality_scores(texts, self.config, complete=self.annotate_only)
        columns = {}
        for column in self.columns:
            values = scores[column.removeprefix("quality_")].tolist()
            columns[column] = [None if v != v else v for v in values]  # NaN: not computed
        return quality_reasons(scores, self.config), columns
