"""Stage: MinHash LSH near-duplicate removal, one document kept per cluster (:mod:`hygiene.dedup`)."""
from __future__ import annotations

from hygiene.config import NearDedupConfig
from hygiene.dedup import HashIndex, MinHasher, band_keys
from hygiene.stages.base import KeyedDedup


class NearDedup(KeyedDedup):
    """A document's keys are its LSH band keys; one shared band links it to an earlier document.

    A document linked to an earlier one joins that one's cluster and is rejected;
    otherwise it starts a cluster. Chains of near-duplicates end in one cluster. Adds
    ``near_cluster``: the ``n`` of the cluster's kept document (its own for a text
    without words, which has no keys). ``hash_scheme`` picks the signatures: ``fast``
    or ``datasketch`` (equal to datasketch's MinHash).
    """

    name = "near_dedup"
    reason = "near_duplicate"
    columns = {"near_cluster": int}

    def __init__(self, config: NearDedupConfig | None = None, index: HashIndex | None = None) -> None:
        self.config = config or NearDedupConfig()
        super().__init__(index)
        self.hasher = MinHasher(self.config.num_perm, self.config.seed, self.config.ngram, self.config.hash_scheme)

    @property
    def key_scheme(self) -> str:
        c = self.config
        return f"minhash-{c.hash_scheme} bands={c.bands} rows={c.rows} ngram={c.ngram} seed={c.seed}"

    def keys(self, texts: list[str]) -> list[list[int] | None]:
        signatures, sizes = self.hasher.sketch(texts)
        keys = band_keys(signatures, self.config.bands, self.config.rows).tolist()
        return [k if n else None for n, k in zip(sizes.tolist(), keys)]

    def mark(self, n: int, earliest: int) -> int:
        return earliest
