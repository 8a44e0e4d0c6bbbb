"""Exact and MinHash near-duplicate detection: datasketch equality, the LSH S-curve, index persistence."""
from __future__ import annotations

import numpy as np
import pytest
from datasketch import MinHash

from hygiene.config import NearDedupConfig
from hygiene.dedup import HashIndex, MinHasher, band_keys, detection_probability, shingles
from hygiene.stages import ExactDedup, NearDedup
from hygiene.stages.base import seconds_of


def _words(rng: np.random.Generator, n: int) -> list[str]:
    return ["w" + "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 6)) for _ in range(n)]


def test_signatures_equal_datasketch_including_short_and_empty_texts() -> None:
    rng = np.random.default_rng(0)
    texts = [" ".join(_words(rng, int(k))) for k in rng.integers(1, 300, 25)]
    texts += ["", "One two.", "a b c d e", "Ünïcödé wörds, ÇA VA? ça va!"]
    for num_perm, seed in ((112, 1), (64, 7)):
        ours = MinHasher(num_perm, seed).signatures(texts)
        for text, sig in zip(texts, ours):
            ref = MinHash(num_perm=num_perm, seed=seed)
            for s in shingles(text):
                ref.update(s.encode("utf-8"))
            assert np.array_equal(sig, ref.hashvalues)


def test_shingles_are_lowercased_word_5grams() -> None:
    assert shingles("The cat, the HAT; a mat!") == ["the cat the hat a", "cat the hat a mat"]
    assert shingles("two words") == ["two words"]
    assert shingles("  ...  ") == []


def test_lsh_detection_rate_follows_the_s_curve() -> None:
    """Pairs of shingle sets at exact Jaccard s: detected fraction = 1-(1-s^r)^b within 4 binomial s.e."""
    bands, rows, trials = 14, 8, 300
    hasher = MinHasher(bands * rows, seed=1)
    rng = np.random.default_rng(1)
    for common, unique in ((40, 20), (60, 15), (63, 10), (72, 9), (84, 7), (90, 5)):
        s = common / (common + 2 * unique)
        sets = []
        for t in range(trials):
            shared = [f"{t}-c{j}-{rng.integers(1 << 30)}" for j in range(common)]
            sets.append(shared + [f"{t}-a{j}" for j in range(unique)])
            sets.append(shared + [f"{t}-b{j}" for j in range(unique)])
        keys = band_keys(hasher.signatures_of_shingles(sets), bands, rows)
        detected = (keys[0::2] == keys[1::2]).any(axis=1).mean()
        p = float(detection_probability(s, bands, rows))
        se = np.sqrt(p * (1 - p) / trials)
        assert abs(detected - p) <= 4 * se + 1e-9, (s, detected, p)


def test_near_dedup_keeps_one_per_cluster_and_records_it() -> None:
    rng = np.random.default_rng(2)
    base = _words(rng, 400)
    edited = list(base)
    for i in rng.choice(400, 4, replace=False):  # 4 word edits: Jaccard ~0.95
        edited[i] = "edit" + str(i)
    other = _words(rng, 400)
    chain = list(edited)
    for i in rng.choice(400, 4, replace=False):
        chain[i] = "again" + str(i)
    texts = [" ".join(t) for t in (base, other, edited, chain)]
    stage = NearDedup(NearDedupConfig())
    out = stage({"text": texts, "n": [10, 11, 12, 13]})
    assert out["stage"] == [None, None, "near_dedup", "near_dedup"]
    assert out["near_cluster"] == [10, 11, 10, 10]


def test_hashing_split_from_the_index_gives_the_same_decisions() -> None:
    """The keys (pure, parallelisable), then the index lookups, equal the stage alone."""
    rng = np.random.default_rng(5)
    base = [_words(rng, 60) for _ in range(6)]
    texts = [" ".join(w) for w in base] + [" ".join(base[2][:-1] + ["zz"]), "", " ".join(base[0])]
    batch = {"text": texts, "n": list(range(len(texts))), "stage": [None] * 8 + ["quality"], "reason": [None] * 9}
    whole = NearDedup()(batch)
    stage = NearDedup()
    split = stage(stage.add_keys(batch))
    untimed = seconds_of(stage.name)  # the time each took differs
    assert {k: v for k, v in whole.items() if k != untimed} == {k: v for k, v in split.items() if k != untimed}
    assert len(whole[untimed]) == len(split[untimed]) == len(texts)
    assert whole["stage"][6] == "near_dedup" and whole["near_cluster"][6] == 2
    assert whole["near_cluster"][7] == 7 and whole["near_cluster"][8] is None  # no words; not scored
    assert "near_dedup_keys" not in whole


def test_exact_dedup_across_batches_and_restored_index(tmp_path) -> None:
    stage = ExactDedup()
    first = stage({"text": ["a", "b", "a"], "n": [0, 1, 2]})
    assert first["stage"] == [None, None, "exact_dedup"] and first["exact_duplicate_of"] == [None, None, 0]
    stage.index.save_delta(tmp_path / "d0.npz")
    second = stage({"text": ["b", "c"], "n": [3, 4]})
    stage.index.save_delta(tmp_path / "d1.npz")
    assert second["exact_duplicate_of"] == [1, None]
    restored = HashIndex()
    restored.load_deltas([tmp_path / "d0.npz", tmp_path / "d1.npz"])
    again = ExactDedup(index=restored)({"text": ["c", "a", "new"], "n": [5, 6, 7]})
    assert again["exact_duplicate_of"] == [4, 0, None]


def test_hash_index_first_value_wins_after_compaction() -> None:
    index = HashIndex(flush_every=3)
    keys = np.array([5, 9, 1, 7], dtype=np.uint64)
    for k, v in zip(keys.tolist(), range(4)):
        index.pending.setdefault(k, v)
        index.maybe_compact()
    index.pending.setdefault(9, 99)  # 9 is already merged; a caller checks lookup_sorted first
    assert index.lookup_sorted(keys).tolist() == [0, 1, 2, -1]
    delta = index.flush()
    pairs = sorted((k, v) for keys_, values in delta for k, v in zip(keys_.tolist(), values.tolist()))
    assert pairs == [(1, 2), (5, 0), (7, 3), (9, 1), (9, 99)]


@pytest.mark.parametrize("s", [0.3, 0.75, 0.95])
def test_detection_probability_matches_formula(s: float) -> None:
    assert detection_probability(s, 14, 8) == pytest.approx(1 - (1 - s**8) ** 14)


def test_hash_index_runs_merge_without_losing_precedence() -> None:
    index = HashIndex(flush_every=2, max_runs=2)
    rng = np.random.default_rng(4)
    keys = rng.integers(0, 50, 200).astype(np.uint64)
    first: dict[int, int] = {}
    for value, key in enumerate(keys.tolist()):
        if index.lookup_sorted(np.array([key], np.uint64))[0] < 0:
            index.pending.setdefault(key, value)
        first.setdefault(key, value)
        index.maybe_compact()
        if value % 7 == 0:
            index.flush()  # a checkpoint: runs become saved, and saved runs get merged
    assert len(index.runs) <= 2 + 7
    index.flush()
    found = index.lookup_sorted(np.array(list(first), np.uint64))
    assert found.tolist() == list(first.values())
