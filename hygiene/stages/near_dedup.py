"""Stage: MinHash LSH near-duplicate removal, one document kept per cluster (:mod:`hygiene.dedup`)."""
from __future__ import annotations

from hygiene.config import NearDedupConfig
from hygiene.dedup import HashIndex, MinHasher, band_keys, shingles
from hygiene.stages.base import KeyedDedup


class NearDedup(KeyedDedup):
    """A document's keys are its LSH band keys; one shared band links it to an earlier document.

    A document linked to an earlier one joins that one's cluster and is rejected;
    otherwise it starts a cluster. Chains of near-duplicates end in one cluster. Adds
    ``near_cluster``: the ``n`` of the cluster's kept document (its own for a text
    without words, which has no keys).
    """

    name = "near_dedup"
    reason = "near_duplicate"
    columns = {"near_cluster": int}

    def __init__(self, config: NearDedupConfig | None = None, index: HashIndex | None = None) -> None:
        super().__init__(index)
        self.config = config or NearDedupConfig()
        self.hasher = MinHasher(self.config.num_perm, self.config.seed, self.config.ngram)

    def keys(self, texts: list[str]) -> list[list[int] | None]:
        sh = [shingles(t, self.config.ngram) for t in texts]
        keys = band_keys(self.hasher.signatures_of_shingles(sh), self.config.bands, self.config.rows).tolist()
        return [k if s else None for s, k in zip(sh, keys)]

    def mark(self, n: int, earliest: int) -> int:
        return earliest
