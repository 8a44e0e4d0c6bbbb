"""The default filter on the example crawl with the detector's cascade on, against scoring every document in full.

Both runs in this process, one after the other, on the same documents (the example crawl: human pages,
exact and near duplicates, machine pages; ``examples/crawl``). Baseline: the same filter with
``synthetic.cascade: false``, which is what the filter did before the cascade. Prints documents per
second (wall and CPU) of each, the ratio, how many documents the two runs decide differently, and the
synthetic pages each removes; writes ``cascade_speed.json`` and ``cascade_speed.md`` to ``--out``.

    .venv/bin/python benchmarks/cascade_speed.py [--limit N] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

from hygiene.atomic import atomic_open, write_json
from hygiene.config import load_config
from hygiene.filter_run import FilterRun

CRAWL = Path(__file__).resolve().parents[1] / "examples" / "crawl"


def decisions(out: Path) -> dict[str, str]:
    """Each record id's outcome: ``kept`` or its rejection reason."""
    result = {}
    for name in ("kept", "rejected"):
        for line in (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            result[rec["id"]] = "kept" if name == "kept" else rec["hygiene"]["reason"]
    return result


def timed(crawl: Path, out: Path, limit: int | None, cascade: bool) -> dict:
    """One run of the default filter: docs/s (wall, CPU) and every record's outcome."""
    config = load_config(overrides={"synthetic.cascade": cascade, "limit": limit})
    run = FilterRun([crawl], out, config, progress=False)
    t, c = time.perf_counter(), time.process_time()
    stats = run.run()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    n = stats["records_in"]
    return {"docs": n, "docs_per_s": n / wall, "docs_per_cpu_s": n / cpu, "outcome": decisions(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crawl", type=Path, default=CRAWL / "crawl.jsonl.gz")
    ap.add_argument("--truth", type=Path, default=CRAWL / "truth.jsonl.gz")
    ap.add_argument("--limit", type=int, default=None, help="the first N documents only [all]")
    ap.add_argument("--out", type=Path, default=None, help="folder for cascade_speed.json and .md")
    args = ap.parse_args()
    with gzip.open(args.truth, "rt", encoding="utf-8") as fh:
        kind = {r["id"]: r["kind"] for r in map(json.loads, fh)}
    with tempfile.TemporaryDirectory() as tmp:
        cascade = timed(args.crawl, Path(tmp) / "cascade", args.limit, True)
        full = timed(args.crawl, Path(tmp) / "full", args.limit, False)
    differ = [i for i, o in full["outcome"].items() if cascade["outcome"].get(i) != o]

    def removed(run: dict) -> int:
        return sum(o == "machine_generated" and kind.get(i, "").startswith("synthetic") for i, o in run["outcome"].items())

    def human_removed(run: dict) -> int:
        return sum(o == "machine_generated" and kind.get(i) == "human" for i, o in run["outcome"].items())

    result = {"docs": full["docs"], "cascade_docs_per_s": cascade["docs_per_s"], "full_docs_per_s": full["docs_per_s"],
              "cascade_docs_per_cpu_s": cascade["docs_per_cpu_s"], "full_docs_per_cpu_s": full["docs_per_cpu_s"],
              "ratio_wall": cascade["docs_per_s"] / full["docs_per_s"],
              "ratio_cpu": cascade["docs_per_cpu_s"] / full["docs_per_cpu_s"],
              "decisions_differ": len(differ), "decisions_differ_share": len(differ) / max(full["docs"], 1),
              "synthetic_removed": {"cascade": removed(cascade), "full": removed(full)},
              "human_removed_as_machine": {"cascade": human_removed(cascade), "full": human_removed(full)},
              "synthetic_pages": sum(k.startswith("synthetic") for i, k in kind.items() if i in full["outcome"])}
    table = "\n".join([
        f"Default filter (human profile) on the example crawl, {result['docs']} documents, one process",
        "",
        "| run | docs/s (wall) | docs per CPU-second | synthetic pages removed | human pages removed as machine |",
        "|---|---|---|---|---|",
        f"| baseline: every document scored in full (`synthetic.cascade: false`) | {full['docs_per_s']:.1f} | "
        f"{full['docs_per_cpu_s']:.1f} | {result['synthetic_removed']['full']} of {result['synthetic_pages']} | "
        f"{result['human_removed_as_machine']['full']} |",
        f"| cascade (default) | {cascade['docs_per_s']:.1f} | {cascade['docs_per_cpu_s']:.1f} | "
        f"{result['synthetic_removed']['cascade']} of {result['synthetic_pages']} | "
        f"{result['human_removed_as_machine']['cascade']} |",
        "",
        f"ratio cascade / full: {result['ratio_wall']:.1f}x wall, {result['ratio_cpu']:.1f}x CPU; decisions that "
        f"differ: {len(differ)} of {result['docs']} ({result['decisions_differ_share']:.2%})",
    ])
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "cascade_speed.json", result)
        with atomic_open(args.out / "cascade_speed.md") as fh:
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
