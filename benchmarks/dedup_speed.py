"""Dedup against its anchors: ``hygiene dedup`` (both hash schemes) vs datasketch and rensa, whole job and recall.

Corpus: ``--docs`` book passages of the human pool (about 316 words each), one JSONL shard.
Every engine does the same **whole job**: read the shard, drop exact duplicates (a 64-bit hash
of the text), MinHash LSH near dedup (112 permutations, 14 bands x 8 rows, lower-cased word
5-grams), write the kept and the rejected records as JSONL. The engines:

- ``hygiene dedup``: :func:`hygiene.filter_run.run_filter` with quality and the detector off, as
  the command runs it, ``near_dedup.hash_scheme`` ``fast`` and ``datasketch``. It also
  NFKC-normalises every text and writes ``stats.json``; its per-stage seconds are printed, and the
  fast scheme runs once more with ``--no-normalize``, the peers' work.
- datasketch: ``MinHash.bulk`` over each batch's shingles (:func:`hygiene.dedup.shingles`),
  then ``MinHashLSH(params=(14, 8)).query`` / ``insert`` per document.
- rensa ``RMinHashLSH``: ``RMinHash.from_token_sets`` per batch, then ``RMinHashLSH.query`` /
  ``insert`` per document; rensa ``RMinHashDeduplicator.add_pairs`` (candidates from 14 LSH
  bands, kept when their estimated Jaccard is below 0.72, where the 14x8 S-curve crosses 1/2).

Each engine runs ``--repeats`` times, in rotating order; the best run counts (the machine may be
shared). Then **recall on 5-word edits**: ``--pairs`` passages and copies of them with 5 words
replaced by new ones; a copy is found when it shares an LSH band with its original (for rensa:
``RMinHashLSH.query``), beside the S-curve's expectation ``mean(1-(1-J^8)^14)`` over the pairs'
exact shingle Jaccard J. Prints two tables and writes ``dedup_speed.json`` to ``--out``.

    .venv/bin/python benchmarks/dedup_speed.py [--docs 6500] [--pairs 2000] [--repeats 3] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from hygiene.config import load_config
from hygiene.dedup import MinHasher, band_keys, detection_probability, shingles
from hygiene.filter_run import run_filter
from hygiene.human_data import iter_documents, passages

BANDS, ROWS, BATCH = 14, 8, 1000
NUM_PERM = BANDS * ROWS
#: rensa's deduplicator checks candidates against an estimated Jaccard: where 1-(1-s^8)^14 = 1/2
RENSA_THRESHOLD = 0.72
#: rensa is a peer for this benchmark only (``pip install rensa``); without it its rows are left out
HAS_RENSA = importlib.util.find_spec("rensa") is not None


def book_passages(n: int) -> list[str]:
    """The first ``n`` passages (about 200 words, cut at paragraphs) of the human pool's books, 100 a book at most."""
    out: list[str] = []
    for doc in iter_documents(sources=("books",)):
        out += passages(doc.text, 200, max_passages=100)
        if len(out) >= n:
            break
    return out[:n]


def read_shard(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def write_split(out: Path, records: list[dict], kept: list[bool]) -> None:
    """The peers' outputs: kept and rejected records as JSONL, as ``hygiene dedup`` writes them."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "kept.jsonl").open("w", encoding="utf-8") as k, (out / "rejected.jsonl").open("w", encoding="utf-8") as r:
        for record, keep in zip(records, kept):
            (k if keep else r).write(json.dumps(record) + "\n")


def exact_keep(texts: list[str]) -> list[bool]:
    """First occurrence of each text (64-bit BLAKE2b), as the peers' exact-dedup step."""
    seen: set[bytes] = set()
    keep = []
    for t in texts:
        h = hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        keep.append(h not in seen)
        seen.add(h)
    return keep


def lsh_job(shard: Path, out: Path, lsh: Any, signatures: Callable[[list[str]], Iterable[Any]]) -> int:
    """The peers' whole job around an LSH index with ``query`` / ``insert``: read, exact dedup, a batch of
    ``signatures`` at a time (query, then insert the documents with no near duplicate), write; returns
    the documents dropped."""
    records = read_shard(shard)
    texts = [r["text"] for r in records]
    keep = exact_keep(texts)
    for start in range(0, len(texts), BATCH):
        rows = [i for i in range(start, min(start + BATCH, len(texts))) if keep[i]]
        for i, m in zip(rows, signatures([texts[i] for i in rows])):
            if lsh.query(m):
                keep[i] = False
            else:
                lsh.insert(i, m)
    write_split(out, records, keep)
    return keep.count(False)


def datasketch_job(shard: Path, out: Path) -> int:
    """datasketch ``MinHash.bulk`` + ``MinHashLSH`` whole job; returns the documents dropped."""
    from datasketch import MinHash, MinHashLSH

    return lsh_job(shard, out, MinHashLSH(num_perm=NUM_PERM, params=(BANDS, ROWS)), lambda texts: MinHash.bulk(
        [[s.encode("utf-8") for s in shingles(t)] for t in texts], num_perm=NUM_PERM, seed=1))


def rensa_lsh_job(shard: Path, out: Path) -> int:
    """rensa ``RMinHash.from_token_sets`` + ``RMinHashLSH`` whole job; returns the documents dropped."""
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold=RENSA_THRESHOLD, num_perm=NUM_PERM, num_bands=BANDS)
    return lsh_job(shard, out, lsh, lambda texts: RMinHash.from_token_sets([shingles(t) for t in texts], NUM_PERM, 1))


def rensa_dedup_job(shard: Path, out: Path) -> int:
    """rensa ``RMinHashDeduplicator.add_pairs`` whole job; returns the documents dropped."""
    from rensa import RMinHashDeduplicator

    records = read_shard(shard)
    texts = [r["text"] for r in records]
    keep = exact_keep(texts)
    dedup = RMinHashDeduplicator(threshold=RENSA_THRESHOLD, num_perm=NUM_PERM, use_lsh=True, num_bands=BANDS, seed=1)
    for start in range(0, len(texts), BATCH):
        rows = [i for i in range(start, min(start + BATCH, len(texts))) if keep[i]]
        for i, new in zip(rows, dedup.add_pairs((str(i), shingles(texts[i])) for i in rows)):
            keep[i] = bool(new)
    write_split(out, records, keep)
    return keep.count(False)


def hygiene_job(scheme: str, stage_seconds: dict[str, dict[str, float]], normalize: bool = True
                ) -> Callable[[Path, Path], int]:
    """``hygiene dedup`` with ``scheme`` (``normalize``: Unicode normalisation on, the default); each run's
    seconds per stage go into ``stage_seconds``."""

    def job(shard: Path, out: Path) -> int:
        config = load_config(overrides={"quality.enabled": False, "synthetic.enabled": False,
                                        "near_dedup.hash_scheme": scheme, "normalize.enabled": normalize})
        stats = run_filter([shard], out, config, overwrite=True, progress=False)
        seconds = {s["name"]: s["seconds"] for s in stats["stages"] if s["seconds"]}
        stage_seconds[scheme if normalize else f"{scheme}, --no-normalize"] = {**seconds, "run": stats["elapsed_s"]}
        return stats["rejected"]

    return job


def edited_pairs(texts: list[str], rng: np.random.Generator, edits: int = 5) -> tuple[list[str], np.ndarray]:
    """A copy of each text with ``edits`` words (at distinct random places) replaced by new ones, and each
    pair's exact shingle Jaccard similarity."""
    copies, sims = [], []
    for text in texts:
        words = text.split()
        for i in rng.choice(len(words), edits, replace=False):
            words[i] = f"edit{rng.integers(1 << 40)}"
        copy = " ".join(words)
        a, b = set(shingles(text)), set(shingles(copy))
        copies.append(copy)
        sims.append(len(a & b) / len(a | b))
    return copies, np.array(sims)


def recall(originals: list[str], copies: list[str]) -> dict[str, float]:
    """Fraction of copies found as near-duplicates of their original, per engine."""
    from datasketch import MinHash

    def found(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
        return float((band_keys(sig_a, BANDS, ROWS) == band_keys(sig_b, BANDS, ROWS)).any(axis=1).mean())

    out = {}
    for scheme in ("fast", "datasketch"):
        hasher = MinHasher(NUM_PERM, seed=1, scheme=scheme)
        out[f"hygiene {scheme}"] = found(hasher.signatures(originals), hasher.signatures(copies))

    def bulk(texts: list[str]) -> np.ndarray:
        return np.array([m.hashvalues for m in MinHash.bulk([[s.encode() for s in shingles(t)] for t in texts],
                                                            num_perm=NUM_PERM, seed=1)])

    out["datasketch MinHash.bulk + MinHashLSH"] = found(bulk(originals), bulk(copies))
    if not HAS_RENSA:
        return out
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold=RENSA_THRESHOLD, num_perm=NUM_PERM, num_bands=BANDS)
    for i, m in enumerate(RMinHash.from_token_sets([shingles(t) for t in originals], NUM_PERM, 1)):
        lsh.insert(i, m)
    hits = [i in lsh.query(m) for i, m in enumerate(RMinHash.from_token_sets([shingles(t) for t in copies], NUM_PERM, 1))]
    out["rensa RMinHashLSH"] = float(np.mean(hits))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=6500)
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write dedup_speed.json here")
    args = ap.parse_args()
    texts = book_passages(args.docs)
    stage_seconds: dict[str, dict[str, float]] = {}
    engines: dict[str, Callable[[Path, Path], int]] = {
        "hygiene dedup, hash_scheme fast": hygiene_job("fast", stage_seconds),
        "hygiene dedup, hash_scheme fast, --no-normalize (the peers' work)": hygiene_job("fast", stage_seconds, False),
        "hygiene dedup, hash_scheme datasketch": hygiene_job("datasketch", stage_seconds),
        "datasketch MinHash.bulk + MinHashLSH": datasketch_job,
    }
    if HAS_RENSA:
        engines.update({"rensa RMinHash.from_token_sets + RMinHashLSH": rensa_lsh_job,
                        "rensa RMinHashDeduplicator.add_pairs": rensa_dedup_job})
    else:
        print("rensa is not installed (pip install rensa): its rows are left out")
    names = list(engines)
    best: dict[str, tuple[float, float]] = {n: (np.inf, np.inf) for n in names}
    dropped: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "passages.jsonl"
        shard.write_text("".join(json.dumps({"text": t, "i": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
        for rep in range(args.repeats):
            for name in names[rep % len(names):] + names[: rep % len(names)]:
                wall, cpu = time.perf_counter(), time.process_time()
                dropped[name] = engines[name](shard, Path(tmp) / f"out{names.index(name)}")
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    rates = {n: {"docs_per_s": len(texts) / best[n][0], "docs_per_cpu_s": len(texts) / best[n][1],
                 "dropped": dropped[n]} for n in names}
    ours = rates[names[0]]
    words = float(np.mean([len(t.split()) for t in texts]))
    print(f"whole job on {len(texts)} book passages (mean {words:.0f} words), best of {args.repeats} runs")
    print("| engine | docs/s (wall) | docs per CPU-second | dropped | fast scheme's speed-up (wall / CPU) |")
    print("|---|---:|---:|---:|---|")
    for n in names:
        r = rates[n]
        r["speedup"] = ours["docs_per_s"] / r["docs_per_s"]
        r["speedup_cpu"] = ours["docs_per_cpu_s"] / r["docs_per_cpu_s"]
        print(f"| {n} | {r['docs_per_s']:,.0f} | {r['docs_per_cpu_s']:,.0f} | {r['dropped']} | "
              f"{r['speedup']:.2f}x / {r['speedup_cpu']:.2f}x |")
    for scheme, seconds in stage_seconds.items():
        print(f"hygiene dedup ({scheme}), seconds per stage and for the whole run, its last run: "
              + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()))

    rng = np.random.default_rng(args.seed)
    originals = [texts[i] for i in sorted(rng.choice(len(texts), min(args.pairs, len(texts)), replace=False))]
    copies, sims = edited_pairs(originals, rng)
    expected = float(detection_probability(sims, BANDS, ROWS).mean())
    found = recall(originals, copies)
    se = float(np.sqrt(expected * (1 - expected) / len(originals)))
    print(f"\nrecall on {len(originals)} passages with 5 words replaced (mean Jaccard {sims.mean():.3f}; "
          f"S-curve expectation {expected:.3f} +- {se:.3f})")
    print("| engine | found |\n|---|---:|")
    for n, v in found.items():
        print(f"| {n} | {v:.3f} |")
    result = {"docs": len(texts), "mean_words": words, "repeats": args.repeats, "bands": BANDS, "rows": ROWS,
              "ngram": 5, "whole_job": rates, "hygiene_stage_seconds": stage_seconds,
              "recall_5_word_edits": {"pairs": len(originals), "mean_jaccard": float(sims.mean()),
                                      "s_curve_expectation": expected, "binomial_se": se, "found": found},
              "versions": {p: importlib.metadata.version(p) for p in ("numpy", "datasketch", "rensa")
                           if importlib.util.find_spec(p) is not None}}
    if args.out:
        from hygiene.atomic import write_json

        write_json(args.out / "dedup_speed.json", result)


if __name__ == "__main__":
    main()
