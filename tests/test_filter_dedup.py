"""Exact and MinHash near-duplicate detection: both hash schemes (datasketch equality, the fast scheme's
Jaccard estimates and tokenisation), the LSH S-curve, index persistence and its scheme."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from datasketch import MinHash

from hygiene.cli import main
from hygiene.config import NearDedupConfig, load_config, write_config
from hygiene.dedup import (HashIndex, MinHasher, band_keys, bucket_sketch, datasketch_signatures,
                           detection_probability, shingle_hashes, shingles)
from hygiene.errors import UserInputError
from hygiene.filter_run import run_filter
from hygiene.stages import ExactDedup, NearDedup
from hygiene.stages.base import seconds_of

SCHEMES = ("fast", "datasketch")


def _words(rng: np.random.Generator, n: int) -> list[str]:
    return ["w" + "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 6)) for _ in range(n)]


def _jaccard(a: str, b: str) -> float:
    sa, sb = set(shingles(a)), set(shingles(b))
    return len(sa & sb) / len(sa | sb)


def test_datasketch_scheme_equals_datasketch_including_short_and_empty_texts() -> None:
    rng = np.random.default_rng(0)
    texts = [" ".join(_words(rng, int(k))) for k in rng.integers(1, 300, 25)]
    texts += ["", "One two.", "a b c d e", "Ünïcödé wörds, ÇA VA? ça va!"]
    for num_perm, seed in ((112, 1), (64, 7)):
        ours, sizes = MinHasher(num_perm, seed, scheme="datasketch").sketch(texts)
        assert sizes.tolist() == [len(shingles(t)) for t in texts]
        for text, sig in zip(texts, ours):
            ref = MinHash(num_perm=num_perm, seed=seed)
            for s in shingles(text):
                ref.update(s.encode("utf-8"))
            assert np.array_equal(sig, ref.hashvalues)


def test_shingles_are_lowercased_word_5grams() -> None:
    assert shingles("The cat, the HAT; a mat!") == ["the cat the hat a", "cat the hat a mat"]
    assert shingles("two words") == ["two words"]
    assert shingles("  ...  ") == []


def _unicode_texts(rng: np.random.Generator, n: int) -> list[str]:
    """Texts over a small vocabulary of words from many scripts, separated by every kind of non-word character."""
    vocab = ["The", "the", "THE", "café", "CAFÉ", "naïve", "straße", "Ωmega", "ωmega", "δέκα", "Σοφία", "москва",
             "МОСКВА", "東京", "ﬁne", "x_y", "42", "٣٤", "½", "𝔘𝔫𝔦", "𝟘𝟙", "İstanbul", "don", "t", "a"]
    seps = [" ", ", ", "—", " “", "” ", "’", "\n\n", "\t", "😀", "·", "–", " \u0301", "\u200b", "...", "\ud800"]
    texts = []
    for _ in range(n):
        k = int(rng.integers(0, 40))
        parts = [str(rng.choice(seps)) if rng.random() < 0.3 else ""]
        for w in rng.choice(vocab, k):
            parts += [str(w), str(rng.choice(seps))]
        texts.append("".join(parts))
    return texts


def test_fast_scheme_hashes_the_same_shingles_as_shingles() -> None:
    """Same words as ``\\w+`` on the lower-cased text, in every script: equal set sizes and equal overlaps."""
    rng = np.random.default_rng(3)
    texts = _unicode_texts(rng, 120) + ["", "one", "One two.", "a b c d e", "a b c d e f", "İ", "É" * 3]
    hashes, offsets = shingle_hashes(texts)
    sets = [set(hashes[offsets[i] : offsets[i + 1]].tolist()) for i in range(len(texts))]
    assert [len(s) for s in sets] == [len(set(shingles(t))) for t in texts]
    assert (np.diff(offsets) == [len(shingles(t)) for t in texts]).all()
    for i in range(0, len(texts) - 1):
        assert len(sets[i] & sets[i + 1]) == len(set(shingles(texts[i])) & set(shingles(texts[i + 1]))), i


def test_fast_scheme_words_hash_alike_across_chunk_boundaries() -> None:
    """A word longer than a hashing chunk, at different offsets, still hashes the same."""
    giant = "Q" * 700_000
    texts = [f"a {giant} b c d e", "zz " * 150_001 + f"A {giant} B c d e", f"{giant}x"]
    hashes, offsets = shingle_hashes(texts)
    first, second = (set(hashes[offsets[i] : offsets[i + 1]].tolist()) for i in range(2))
    assert len(first) == 2 and first <= second
    assert not first & set(hashes[offsets[2] : offsets[3]].tolist())


def test_fast_scheme_estimates_jaccard() -> None:
    """Agreeing slots estimate the shingle sets' Jaccard similarity: each pair within 4.5 standard errors,
    the mean error over all pairs within 4 standard errors of zero."""
    rng = np.random.default_rng(7)
    num_perm, a, b, truth = 112, [], [], []
    for k in range(300):
        words = _words(rng, int(rng.integers(20, 400)))
        edited = list(words)
        for i in rng.choice(len(words), int(rng.uniform(0, 0.3) * len(words)), replace=False):
            edited[i] = f"edit{i}"
        a.append(" ".join(words))
        b.append(" ".join(edited))
        truth.append(_jaccard(a[-1], b[-1]))
    hasher = MinHasher(num_perm, seed=11)
    estimate = (hasher.signatures(a) == hasher.signatures(b)).mean(axis=1)
    truth = np.array(truth)
    se = np.sqrt(truth * (1 - truth) / num_perm) + 1e-9
    assert (np.abs(estimate - truth) <= 4.5 * se + 1.5 / num_perm).all()
    assert abs((estimate - truth).mean()) <= 4 * np.sqrt((se**2).mean() / len(truth))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_lsh_detection_rate_follows_the_s_curve(scheme: str) -> None:
    """Pairs of shingle sets at exact Jaccard s: detected fraction = 1-(1-s^r)^b within 4 binomial s.e."""
    bands, rows, trials = 14, 8, 300
    rng = np.random.default_rng(1)
    for common, unique in ((40, 20), (60, 15), (63, 10), (72, 9), (84, 7), (90, 5)):
        s = common / (common + 2 * unique)
        sets = []
        for t in range(trials):
            shared = [f"{t}-c{j}-{rng.integers(1 << 30)}" for j in range(common)]
            sets.append(shared + [f"{t}-a{j}" for j in range(unique)])
            sets.append(shared + [f"{t}-b{j}" for j in range(unique)])
        if scheme == "datasketch":
            sig = datasketch_signatures(sets, bands * rows, seed=1)
        else:
            ids = {x: h for x, h in zip({x for s_ in sets for x in s_}, rng.integers(0, 1 << 64, 10**6, np.uint64))}
            offsets = np.cumsum([0] + [len(s_) for s_ in sets])
            sig = bucket_sketch(np.array([ids[x] for s_ in sets for x in s_], np.uint64), offsets, bands * rows)
        keys = band_keys(sig, bands, rows)
        detected = (keys[0::2] == keys[1::2]).any(axis=1).mean()
        p = float(detection_probability(s, bands, rows))
        se = np.sqrt(p * (1 - p) / trials)
        assert abs(detected - p) <= 4 * se + 1e-9, (s, detected, p)


def test_bucket_sketch_of_an_empty_set_and_of_tiny_sets() -> None:
    five, seven, nine = np.random.default_rng(0).integers(0, 1 << 64, 3, np.uint64)  # hashes are uniform bits
    hashes = np.array([five, five, seven, nine], np.uint64)
    sig = bucket_sketch(hashes, np.array([0, 0, 1, 2, 4]), 64)
    assert (sig[0] == 0xFFFFFFFF).all()
    assert (sig[1] == sig[2]).all()  # {5} and {5}: every slot agrees
    assert ((sig[3] == sig[1]).mean() == 0) and (sig[3] != 0xFFFFFFFF).all()  # {7, 9} share nothing with {5}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_near_dedup_keeps_one_per_cluster_and_records_it(scheme: str) -> None:
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
    stage = NearDedup(NearDedupConfig(hash_scheme=scheme))
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
    split = stage(stage.prepare(batch))
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
    restored = HashIndex(stage.key_scheme)
    restored.load_deltas([tmp_path / "d0.npz", tmp_path / "d1.npz"])
    again = ExactDedup(index=restored)({"text": ["c", "a", "new"], "n": [5, 6, 7]})
    assert again["exact_duplicate_of"] == [4, 0, None]


def test_saved_index_records_its_scheme_and_refuses_another(tmp_path: Path) -> None:
    texts = [" ".join(f"w{i}" for i in range(k, k + 30)) for k in range(5)]
    fast = NearDedup(NearDedupConfig(hash_scheme="fast"))
    fast({"text": texts, "n": list(range(5))})
    fast.index.save_delta(tmp_path / "d.npz")
    assert "minhash-fast" in str(np.load(tmp_path / "d.npz")["scheme"])
    other = NearDedup(NearDedupConfig(hash_scheme="datasketch"))
    with pytest.raises(UserInputError, match="minhash-fast.*minhash-datasketch"):
        other.index.load_deltas([tmp_path / "d.npz"])
    with pytest.raises(ValueError, match="index of"):
        NearDedup(NearDedupConfig(hash_scheme="datasketch"), index=fast.index)
    same = NearDedup(NearDedupConfig(hash_scheme="fast"))
    same.index.load_deltas([tmp_path / "d.npz"])
    assert same({"text": texts[:1], "n": [9]})["near_cluster"] == [0]


def test_hash_scheme_round_trips_through_config_cli_and_resume(tmp_path: Path, monkeypatch) -> None:
    config = load_config(overrides={"near_dedup.hash_scheme": "datasketch"})
    write_config(tmp_path / "config.yaml", config)
    assert load_config(tmp_path / "config.yaml").near_dedup.hash_scheme == "datasketch"
    assert load_config().near_dedup.hash_scheme == "fast"
    with pytest.raises(UserInputError, match="hash_scheme must be one of fast, datasketch"):
        load_config(overrides={"near_dedup.hash_scheme": "sha1"})

    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(4)
    for s in range(3):
        lines = [json.dumps({"text": " ".join(_words(rng, 40))}) for _ in range(4)]
        (d / f"s{s}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["dedup", str(d), "--out", str(tmp_path / "cli"), "--hash-scheme", "datasketch",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "cli" / "stats.json").read_text())["config"]["near_dedup"]["hash_scheme"] == \
        "datasketch"

    calls = {"n": 0}
    keys = NearDedup.keys

    def interrupted(self: NearDedup, texts: list[str]) -> list[list[int] | None]:
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return keys(self, texts)

    monkeypatch.setattr(NearDedup, "keys", interrupted)
    dedup = {"quality.enabled": False, "synthetic.enabled": False, "checkpoint_seconds": 0.0, "batch_size": 4}
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_filter([d], out, load_config(overrides=dedup), progress=False)
    monkeypatch.setattr(NearDedup, "keys", keys)
    assert list((out / ".partial").glob("index-near_dedup-*.npz"))
    with pytest.raises(UserInputError, match="differ"):
        run_filter([d], out, load_config(overrides={**dedup, "near_dedup.hash_scheme": "datasketch"}), resume=True,
                   progress=False)
    stats = run_filter([d], out, load_config(overrides=dedup), resume=True, progress=False)
    assert stats["records_in"] == 12 and stats["kept"] == 12


def test_hash_index_link_equals_linking_row_by_row() -> None:
    """The vectorised links equal the rule applied one row after another, with sealed runs and pending keys."""

    def one_by_one(index: HashIndex, keys: np.ndarray, ordinals: list[int]) -> list[int]:
        found, out = index.lookup_sorted(keys).tolist(), []
        for row_keys, row_found, n in zip(keys.tolist(), found, ordinals):
            hit = next((v if v >= 0 else index.pending[k] for k, v in zip(row_keys, row_found)
                        if v >= 0 or k in index.pending), -1)  # the first key stored, sealed or pending
            out.append(hit if hit >= 0 else n)
            for k, v in zip(row_keys, row_found):
                if v < 0:
                    index.pending.setdefault(k, out[-1])
        return out

    rng = np.random.default_rng(6)
    fast, slow = HashIndex(flush_every=40), HashIndex(flush_every=40)
    # when entries are sealed (a checkpoint's timing) never changes a link: sealed after every batch, or never
    always, never = HashIndex(flush_every=1), HashIndex(flush_every=10**9)
    n = 0
    for batch in range(30):
        keys = rng.integers(0, 120, (int(rng.integers(1, 25)), 3)).astype(np.uint64)  # many shared keys and chains
        ordinals = list(range(n, n + len(keys)))
        n += len(keys)
        links = fast.link(keys, np.array(ordinals)).tolist()
        assert links == one_by_one(slow, keys, ordinals), batch
        assert fast.pending == slow.pending
        assert always.link(keys, np.array(ordinals)).tolist() == links == never.link(keys, np.array(ordinals)).tolist()
        always.flush()
        for index in (fast, slow):
            index.maybe_compact()
            if batch % 4 == 0:
                index.flush()


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


def test_annotate_only_gives_the_decisions_of_a_real_run():
    """A document an earlier stage rejected never stands for a near-duplicate cluster, also when annotating."""
    from hygiene import filter_records
    from hygiene.config import load_config

    from gopher_docs import make_doc

    words = make_doc(0).split()
    too_long = " ".join(words)                                  # rejected: more words than max_words
    near = " ".join(words[:-3] + ["edited"])                    # within it, a near duplicate of it
    overrides = {"synthetic.enabled": False, "quality.max_words": len(words) - 1}
    real = [d.stage for d in filter_records([too_long, near], load_config(overrides=overrides))]
    annotated = list(filter_records([too_long, near], load_config(overrides={**overrides, "output.annotate_only": True})))
    assert real == ["quality", None]
    assert [d.stage for d in annotated] == real and all(d.kept for d in annotated)
