"""MinHash signatures: hygiene's two hash schemes vs datasketch (``MinHash.update`` per shingle and ``MinHash.bulk``).

Same documents (real web and news pages), same shingles, same 112 permutations:
prints documents per wall second and per CPU second of each (CPU time is steadier on a
shared machine) and the ratios, checks the ``datasketch`` scheme's signatures are identical to
datasketch's, then checks detection behaviour of both schemes on pairs with injected word
edits: the measured LSH detection rate per Jaccard bin against 1-(1-s^r)^b. Writes JSON and a
PNG plot with --out.

    .venv/bin/python benchmarks/minhash_speed.py [--docs 1000] [--pairs 4000] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from datasketch import MinHash

from hygiene.dedup import MinHasher, band_keys, detection_probability, shingles
from hygiene.human_data import iter_documents


def real_docs(n: int) -> list[str]:
    """The first ``n`` web and news documents of the human pool (all splits)."""
    docs = []
    for doc in iter_documents(sources=("web", "news")):
        docs.append(doc.text)
        if len(docs) == n:
            break
    return docs


def datasketch_update(texts: list[str], num_perm: int, seed: int) -> np.ndarray:
    """datasketch, one ``MinHash.update`` call per shingle."""
    out = []
    for text in texts:
        m = MinHash(num_perm=num_perm, seed=seed)
        for s in shingles(text):
            m.update(s.encode("utf-8"))
        out.append(m.hashvalues)
    return np.array(out)


def datasketch_bulk(texts: list[str], num_perm: int, seed: int) -> np.ndarray:
    """datasketch ``MinHash.bulk`` over every text's shingles at once."""
    sets = [[s.encode("utf-8") for s in shingles(t)] for t in texts]
    return np.array([m.hashvalues for m in MinHash.bulk(sets, num_perm=num_perm, seed=seed)])


def edited_pairs(docs: list[str], n_pairs: int, rng: np.random.Generator) -> tuple[list[str], list[str], np.ndarray]:
    """(originals, copies with a random fraction of words replaced, exact shingle Jaccard of each pair)."""
    a, b, sims = [], [], []
    long_docs = [d.split() for d in docs if len(d.split()) >= 150]
    for k in range(n_pairs):
        words = long_docs[k % len(long_docs)][:300]
        edited = list(words)
        frac = rng.uniform(0.0, 0.08)  # ~1 edit in 5-gram shingles changes up to 5 shingles
        for i in rng.choice(len(words), max(1, int(frac * len(words))), replace=False):
            edited[i] = f"x{rng.integers(1 << 30)}"
        sa, sb = set(shingles(" ".join(words))), set(shingles(" ".join(edited)))
        a.append(" ".join(words))
        b.append(" ".join(edited))
        sims.append(len(sa & sb) / len(sa | sb))
    return a, b, np.array(sims)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=4000)
    ap.add_argument("--bands", type=int, default=14)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None, help="write minhash_speed.json and minhash_scurve.png here")
    args = ap.parse_args()
    num_perm = args.bands * args.rows
    docs = real_docs(args.docs)
    n_shingles = sum(len(shingles(d)) for d in docs)
    hashers = {scheme: MinHasher(num_perm, seed=1, scheme=scheme) for scheme in ("fast", "datasketch")}
    methods = {"datasketch MinHash.update per shingle": lambda: datasketch_update(docs, num_perm, 1),
               "datasketch MinHash.bulk": lambda: datasketch_bulk(docs, num_perm, 1),
               "hygiene MinHasher, scheme datasketch": lambda: hashers["datasketch"].signatures(docs),
               "hygiene MinHasher, scheme fast": lambda: hashers["fast"].signatures(docs)}
    timings, sigs = {}, {}
    for name, method in methods.items():
        t, c = time.perf_counter(), time.process_time()
        sigs[name] = method()
        timings[name] = (time.perf_counter() - t, time.process_time() - c)
    names = list(methods)
    identical = all(np.array_equal(sigs[names[2]], sigs[n]) for n in names[:2])

    rng = np.random.default_rng(0)
    a, b, sims = edited_pairs(docs, args.pairs, rng)
    edges = np.linspace(0.5, 1.0, 11)
    detection: dict[str, list[dict]] = {}
    for scheme, hasher in hashers.items():
        keys_a = band_keys(hasher.signatures(a), args.bands, args.rows)
        keys_b = band_keys(hasher.signatures(b), args.bands, args.rows)
        detected = (keys_a == keys_b).any(axis=1)
        rows = detection[scheme] = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            m = (sims >= lo) & (sims < hi)
            if m.sum() < 20:
                continue
            theory = float(detection_probability(sims[m], args.bands, args.rows).mean())
            se = float(np.sqrt(theory * (1 - theory) / m.sum()))
            rate = float(detected[m].mean())
            rows.append({"jaccard": [round(lo, 2), round(hi, 2)], "pairs": int(m.sum()), "detected": rate,
                         "theory": theory, "z": (rate - theory) / se if se > 0 else 0.0})

    print(f"{len(docs)} documents, {n_shingles} shingles, {num_perm} permutations")
    print("| method | docs/s (wall) | docs per CPU-second | shingles per CPU-second |\n|---|---|---|---|")
    for name, (wall, cpu) in timings.items():
        print(f"| {name} | {len(docs) / wall:.0f} | {len(docs) / cpu:.0f} | {n_shingles / cpu:.0f} |")
    bulk, fast = timings[names[1]], timings[names[3]]
    print(f"scheme fast vs MinHash.bulk: {bulk[0] / fast[0]:.1f}x wall, {bulk[1] / fast[1]:.1f}x CPU; "
          f"scheme datasketch signatures identical to datasketch's: {identical}")
    for scheme, rows in detection.items():
        print(f"\nLSH {args.bands}x{args.rows} on {args.pairs} edited pairs, scheme {scheme}")
        print("| Jaccard | pairs | detected | 1-(1-s^r)^b | z |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['jaccard'][0]:.2f}-{r['jaccard'][1]:.2f} | {r['pairs']} | {r['detected']:.3f} | "
                  f"{r['theory']:.3f} | {r['z']:+.1f} |")
    result = {"docs": len(docs), "shingles": n_shingles, "num_perm": num_perm, "bands": args.bands, "rows": args.rows,
              "docs_per_s": {n: len(docs) / w for n, (w, _) in timings.items()},
              "docs_per_cpu_s": {n: len(docs) / c for n, (_, c) in timings.items()},
              "identical": identical, "detection": detection}
    print(json.dumps({k: v for k, v in result.items() if k != "detection"}))
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from hygiene.atomic import atomic_open, write_json

        write_json(args.out / "minhash_speed.json", result)
        s = np.linspace(0, 1, 200)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(s, detection_probability(s, args.bands, args.rows), label="1-(1-s^r)^b")
        for (scheme, rows), marker in zip(detection.items(), "os"):
            mids = [np.mean(r["jaccard"]) for r in rows]
            ax.plot(mids, [r["detected"] for r in rows], marker, fillstyle="none", label=f"measured, scheme {scheme}")
        ax.set(xlabel="Jaccard similarity of 5-gram shingles", ylabel="detected as near-duplicate",
               title=f"MinHash LSH {args.bands}x{args.rows}")
        ax.legend()
        fig.tight_layout()
        with atomic_open(args.out / "minhash_scurve.png", "wb") as fh:
            fig.savefig(fh, format="png", dpi=120)


if __name__ == "__main__":
    main()
