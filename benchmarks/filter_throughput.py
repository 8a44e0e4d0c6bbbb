"""End-to-end filter throughput and dedup memory on real documents.

1. documents/s of ``run_filter`` over a JSONL shard of real news, forum and web
   documents: dedup only, dedup + quality (in one process and with 2 worker
   processes), and with the detector when one is
   installed; baseline in the same run: a datasketch dedup loop (``MinHash.update``
   per shingle, ``MinHashLSH`` query + insert, same 14x8 bands) on the same documents.
2. peak memory of dedup-only runs over 25k/50k/100k short documents (passages
   of ~60 words from books and news), each in a fresh process, extrapolated
   linearly to 1M, with the dedup-index size that dominates it.

    .venv/bin/python benchmarks/filter_throughput.py [--docs 5000] [--short 100000] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hygiene.config import load_config
from hygiene.filter_run import FilterRun
from hygiene.human_data import iter_documents, passages
from hygiene.paths import models_dir


def write_corpus(path: Path, texts: list[str]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"text": t, "i": i}) + "\n")


def real_documents(n: int) -> list[str]:
    """``n`` documents interleaving news, forum and web texts."""
    per = {s: [] for s in ("news", "forums", "web")}
    for source in per:
        for doc in iter_documents(sources=(source,)):
            per[source].append(doc.text)
            if len(per[source]) >= n:
                break
    return [d for group in zip(*per.values()) for d in group][:n]


def short_documents(n: int) -> list[str]:
    """``n`` passages of about 60 words from books and news."""
    out: list[str] = []
    for doc in iter_documents(sources=("news", "books")):
        out += passages(doc.text, words=60)
        if len(out) >= n:
            break
    return out[:n]


def timed_run(corpus: Path, out: Path, **overrides) -> tuple[float, float, dict]:
    """(docs per wall second, docs per CPU second, stats) of one run of the filter.

    CPU seconds are reported too because the 2 cores may be shared with other work.
    """
    config = load_config(overrides=overrides)
    run = FilterRun([corpus], out, config, progress=False)
    t, c = time.perf_counter(), time.process_time()
    stats = run.run()
    n = stats["records_in"]
    return n / (time.perf_counter() - t), n / (time.process_time() - c), stats


def datasketch_dedup(texts: list[str], bands: int, rows: int) -> tuple[float, float]:
    """(docs per wall second, per CPU second) of the plain datasketch near-dedup loop (normalised text, same shingles and bands)."""
    from datasketch import MinHash, MinHashLSH

    from hygiene.dedup import shingles
    from hygiene.normalize import normalize_text

    lsh = MinHashLSH(num_perm=bands * rows, params=(bands, rows))
    t, c = time.perf_counter(), time.process_time()
    for i, text in enumerate(texts):
        m = MinHash(num_perm=bands * rows, seed=1)
        for s in shingles(normalize_text(text)):
            m.update(s.encode("utf-8"))
        if not lsh.query(m):
            lsh.insert(str(i), m)
    return len(texts) / (time.perf_counter() - t), len(texts) / (time.process_time() - c)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: reset at exec, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_memory(corpus: Path, out: Path) -> None:
    """Child process: dedup-only run; print peak RSS and index size as JSON."""
    base = peak_rss_mb()
    config = load_config(overrides={"quality.enabled": False, "synthetic.enabled": False})
    run = FilterRun([corpus], out, config, progress=False)
    stats = run.run()
    peak = peak_rss_mb()
    entries = sum(len(stage.index) for stage in run.pipeline.dedup)
    print(json.dumps({"docs": stats["records_in"], "peak_rss_mb": peak, "start_rss_mb": base,
                      "index_entries": entries, "index_mb": entries * 16 / 2**20,
                      "docs_per_s": stats["docs_per_s"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--baseline-docs", type=int, default=1000)
    ap.add_argument("--detector-docs", type=int, default=500)
    ap.add_argument("--short", type=int, default=100_000)
    ap.add_argument("--out", type=Path, default=None, help="write filter_throughput.json here")
    ap.add_argument("--measure-memory", nargs=2, metavar=("CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure_memory:
        measure_memory(Path(args.measure_memory[0]), Path(args.measure_memory[1]))
        return
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        texts = real_documents(args.docs)
        write_corpus(tmp / "docs.jsonl", texts)
        words = sum(len(t.split()) for t in texts) / len(texts)
        off = {"quality.enabled": False, "synthetic.enabled": False}
        dedup = timed_run(tmp / "docs.jsonl", tmp / "o1", **off)
        dq = timed_run(tmp / "docs.jsonl", tmp / "o2", **{"synthetic.enabled": False})
        dq2 = timed_run(tmp / "docs.jsonl", tmp / "o2w", **{"synthetic.enabled": False, "workers": 2})
        sub = texts[: args.baseline_docs]
        write_corpus(tmp / "sub.jsonl", sub)
        near = timed_run(tmp / "sub.jsonl", tmp / "o3", **off, **{"exact_dedup.enabled": False})
        base = datasketch_dedup(sub, 14, 8)
        result["throughput"] = {"docs": len(texts), "mean_words": words,
                                "dedup_docs_per_s": dedup[0], "dedup_docs_per_cpu_s": dedup[1],
                                "dedup_quality_docs_per_s": dq[0], "dedup_quality_docs_per_cpu_s": dq[1],
                                "dedup_quality_2_workers_docs_per_s": dq2[0],
                                "kept": dq[2]["kept"], "near_dedup_subset_docs_per_s": near[0],
                                "datasketch_subset_docs_per_s": base[0], "ratio_vs_datasketch": near[0] / base[0],
                                "ratio_vs_datasketch_cpu": near[1] / base[1]}
        print(f"{len(texts)} real documents (mean {words:.0f} words), one process")
        print("| run | docs/s (wall) | docs per CPU-second |\n|---|---|---|")
        print(f"| dedup (exact + MinHash LSH) | {dedup[0]:.0f} | {dedup[1]:.0f} |")
        print(f"| dedup + Gopher quality | {dq[0]:.0f} | {dq[1]:.0f} |")
        print(f"| dedup + Gopher quality, --workers 2 | {dq2[0]:.0f} | (main process only) |")
        print(f"| near dedup only, {len(sub)} docs | {near[0]:.0f} | {near[1]:.0f} |")
        print(f"| baseline: datasketch MinHash.update + MinHashLSH, same {len(sub)} docs | {base[0]:.0f} | {base[1]:.0f} |")
        print(f"ratio near dedup vs datasketch: {near[0] / base[0]:.1f}x wall, {near[1] / base[1]:.1f}x CPU")
        if (models_dir() / "detector").exists():
            write_corpus(tmp / "det.jsonl", texts[: args.detector_docs])
            det = timed_run(tmp / "det.jsonl", tmp / "o4")
            det_base = timed_run(tmp / "det.jsonl", tmp / "o5", **{"synthetic.enabled": False})
            result["throughput"].update(with_detector_docs_per_s=det[0], with_detector_docs_per_cpu_s=det[1],
                                        without_detector_same_docs_per_s=det_base[0])
            print(f"| dedup + quality + detector, {args.detector_docs} docs | {det[0]:.1f} | {det[1]:.1f} |")
            print(f"| same docs without the detector | {det_base[0]:.0f} | {det_base[1]:.0f} |")
        else:
            print("no detector installed under models/detector: detector throughput not measured")

        short = short_documents(args.short)
        rows = []
        for n in sorted({args.short // 4, args.short // 2, args.short}):
            write_corpus(tmp / f"short{n}.jsonl", short[:n])
            proc = subprocess.run([sys.executable, __file__, "--measure-memory", str(tmp / f"short{n}.jsonl"),
                                   str(tmp / f"m{n}")], capture_output=True, text=True, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        docs = np.array([r["docs"] for r in rows], float)
        peak = np.array([r["peak_rss_mb"] for r in rows])
        slope, intercept = np.polyfit(docs, peak, 1)
        last = rows[-1]
        index_mb_per_doc = last["index_mb"] / last["docs"]
        # past the dict bound, only the sorted index runs grow: 16 bytes an entry
        model_1m = last["peak_rss_mb"] + (1e6 - last["docs"]) * index_mb_per_doc
        result["memory"] = {"runs": rows, "linear_fit_mb_per_1k_docs": slope * 1000, "linear_fit_fixed_mb": intercept,
                            "linear_fit_1m_mb": intercept + slope * 1e6, "model_1m_mb": model_1m,
                            "index_mb_at_1m": index_mb_per_doc * 1e6}
        print("\ndedup-only peak memory, short documents (~60 words)")
        print("| docs | peak RSS MB | dedup index MB | docs/s |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r['docs']} | {r['peak_rss_mb']:.0f} | {r['index_mb']:.1f} | {r['docs_per_s']:.0f} |")
        print(f"1M docs: {model_1m:.0f} MB = peak at {last['docs']} + index growth "
              f"({index_mb_per_doc * 1e6:.0f} MB of sorted runs at 1M); "
              f"linear fit over the runs (upper bound, it includes the pending dict filling up): "
              f"{intercept:.0f} MB + {slope * 1000:.2f} MB per 1k docs -> {intercept + slope * 1e6:.0f} MB")
    print(json.dumps(result))
    if args.out:
        from hygiene.atomic import write_json

        write_json(args.out / "filter_throughput.json", result)


if __name__ == "__main__":
    main()
