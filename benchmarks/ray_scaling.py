"""Ray engine scaling: documents/s with 1 and 2 Ray workers against the local engine, on the same corpus.

The corpus: real news, forum and web documents plus an exact copy and a one-word edit
of every tenth, so both dedup steps have work. Stages: normalise, exact dedup, Gopher
quality, MinHash near dedup (no detector: none is needed to compare the engines, and
on CPU it would dominate every run alike). Each configuration runs in a fresh process:

- ``local``: :func:`hygiene.filter_run.run_filter`, one process (the baseline);
- ``ray-1`` / ``ray-2``: ``ray.init(num_cpus=W)`` and ``RayConfig(workers=W)``.

Ray's start-up (``ray.init``) is timed on its own and left out of the rates. Besides
wall-clock rates it reports documents per CPU-second, the CPU time of the driver and
of every process under it (Ray's workers, raylet, GCS) read from ``/proc``, because
wall time is distorted when the machine is shared. Two corpus sizes separate Ray's fixed
cost per run from its cost per document. Ratios compare runs of this script.

    .venv/bin/python benchmarks/ray_scaling.py [--docs 1000 3000] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> dict[int, float]:
    """CPU seconds (user + system) of ``root`` and each live descendant, from /proc."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / TICKS
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier += kids
    return {p: cpu[p] for p in tree if p in cpu}


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the process tree spent between two snapshots (processes started in between count fully)."""
    return sum(t - before.get(p, 0.0) for p, t in after.items())


def build_corpus(path: Path, n: int, seed: int = 0) -> int:
    """Write ``n`` real documents plus an exact and a near copy of every tenth; return the record count."""
    from hygiene.human_data import iter_documents

    per: dict[str, list[str]] = {s: [] for s in ("news", "forums", "web")}
    for source, docs in per.items():
        for doc in iter_documents(sources=(source,)):
            docs.append(doc.text)
            if len(docs) >= n:
                break
    texts = [d for group in zip(*per.values()) for d in group][:n]
    rng = np.random.default_rng(seed)
    extra = []
    for t in texts[::10]:
        words = t.split()
        words[int(rng.integers(len(words)))] = "edited"
        extra += [t, " ".join(words)]
    records = texts + extra
    order = rng.permutation(len(records))
    with path.open("w", encoding="utf-8") as fh:
        for i in order:
            fh.write(json.dumps({"text": records[i]}) + "\n")
    return len(records)


def measure(engine: str, workers: int, corpus: Path, out: Path) -> dict:
    """One configuration (run in this process): wall and CPU seconds, start-up apart."""
    from hygiene.config import load_config

    config = load_config(overrides={"synthetic.enabled": False})
    me = os.getpid()
    startup = 0.0
    if engine == "ray":
        import ray

        from hygiene.ray_engine import RayConfig, run_filter_ray

        t = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - t
        before, t = tree_cpu_seconds(me), time.perf_counter()
        stats = run_filter_ray([corpus], out, config, RayConfig(workers=workers), progress=False)
    else:
        from hygiene.filter_run import run_filter

        before, t = tree_cpu_seconds(me), time.perf_counter()
        stats = run_filter([corpus], out, config, progress=False)
    wall = time.perf_counter() - t
    cpu = cpu_since(before, tree_cpu_seconds(me))
    return {"engine": engine, "workers": workers, "records": stats["records_in"], "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "startup_s": round(startup, 2), "by_stage": stats["by_stage"],
            "docs_per_s": round(stats["records_in"] / wall, 1), "docs_per_cpu_s": round(stats["records_in"] / cpu, 1)}


def run_all(sizes: list[int], tmp: str) -> list[dict]:
    """Every configuration at every corpus size, each in a fresh process."""
    results = []
    for docs in sizes:
        corpus = Path(tmp) / f"corpus{docs}.jsonl"
        records = build_corpus(corpus, docs)
        print(f"corpus: {records} records ({docs} real documents + exact and near copies of every tenth)")
        for engine, workers in (("local", 1), ("ray", 1), ("ray", 2)):
            out = f"{tmp}/{engine}{workers}-{docs}"
            cmd = [sys.executable, __file__, "--one", engine, str(workers), str(corpus), out]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            r = json.loads(line)
            results.append(r)
            print(f"  {engine:5s} workers={workers}: {r['docs_per_s']:7.1f} docs/s wall, {r['docs_per_cpu_s']:7.1f} "
                  f"docs per CPU-s (wall {r['wall_s']} s, CPU {r['cpu_s']} s, Ray start-up {r['startup_s']} s)")
        same = [r["by_stage"] for r in results[-3:]]
        assert all(b == same[0] for b in same), "the engines disagree"
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[1000, 3000],
                        help="Corpus sizes (real documents); two or more give the marginal cost per document.")
    parser.add_argument("--out", type=Path, default=None, help="Write ray_scaling.json here.")
    parser.add_argument("--one", nargs=4, metavar=("ENGINE", "WORKERS", "CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        engine, workers, corpus, out = args.one
        print(json.dumps(measure(engine, int(workers), Path(corpus), Path(out))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        results = run_all(sorted(args.docs), tmp)
    largest = results[-3:]
    local = largest[0]
    print(f"at {local['records']} records:")
    for r in largest[1:]:
        print(f"  ray workers={r['workers']} / local: {r['docs_per_s'] / local['docs_per_s']:.2f}x wall, "
              f"{r['docs_per_cpu_s'] / local['docs_per_cpu_s']:.2f}x per CPU-second")
    print(f"  ray 2 workers / 1 worker: {largest[2]['docs_per_s'] / largest[1]['docs_per_s']:.2f}x wall")
    if len(args.docs) > 1:  # fixed cost and cost per document from the smallest and largest corpus
        for small, big in zip(results[:3], largest):
            per_doc = (big["cpu_s"] - small["cpu_s"]) / (big["records"] - small["records"])
            per_doc_wall = (big["wall_s"] - small["wall_s"]) / (big["records"] - small["records"])
            fixed = big["cpu_s"] - per_doc * big["records"]
            print(f"  {big['engine']:5s} workers={big['workers']}: marginal {1 / per_doc:7.1f} docs per CPU-s, "
                  f"{1 / per_doc_wall:7.1f} docs/s wall; fixed {fixed:5.1f} CPU-s per run (start-up apart)")
    if args.out:
        from hygiene.atomic import write_json

        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "ray_scaling.json", {"runs": results})


if __name__ == "__main__":
    main()
