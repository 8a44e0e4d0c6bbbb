"""The default filter on the example crawl with the detector's cascade on, against scoring every document in full.

Runs one after the other, on the same documents (the example crawl, ``examples/crawl``:
human pages, boilerplate, exact and near duplicates, machine pages, with its truth file). Baseline: the
default (human) profile with ``synthetic.cascade: false``, which is what the filter did before the
cascade. Then the default with the cascade and torch, in one process (torch on every core) and in two worker
processes (one thread each, with torch and with ONNX Runtime; batches of :data:`WORKER_BATCH` records), the
gopher profile with it (the pre-``human`` default: the crawl's removals to compare), the default with the cascade and the shipped fast detector
(``detector-fast``: its language models read 160 tokens a text, the default's 256), and the default with
the cascade and ``--autocast bfloat16`` (the language models' products in bfloat16: pays on a CPU with
bfloat16 instructions) or ONNX Runtime running them (the default where it is installed; exported before the
clock starts), each with the documents it decides differently from the cascade with torch. CPU seconds count this process and its finished worker processes. Prints
documents per second (wall and CPU), the ratio, the documents
the two default runs decide differently, and what each run removes of each kind of page; writes
``cascade_speed.json`` and ``cascade_speed.md`` to ``--out``.

Then an upper bound on what any band of this first pass could settle: the baseline's full decisions on
the documents the detector read, against the first pass's scores of the same (normalised) texts, and
the widest band fitted on those very documents (an oracle: it sees the decisions it is measured on) at
several shares of decisions allowed to differ. What it leaves to the language models bounds the
cascade's gain from below, whatever held-out data its band is fitted on.

    .venv/bin/python benchmarks/cascade_speed.py [--limit N] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import gzip
import json
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from hygiene.config import load_config
from hygiene.detector import cascade_band, load_detector
from hygiene.filter_run import FilterRun
from hygiene.normalize import normalize_text

from _results import save  # benchmarks/_results.py, beside this script

CRAWL = Path(__file__).resolve().parents[1] / "examples" / "crawl"
#: (label, profile, cascade, worker processes, detector: None for the default, autocast: None for float32,
#: what runs the language models)
RUNS = (("human profile, every document scored in full (baseline)", "human", False, 1, None, None, "torch"),
        ("human profile, cascade, torch (the default without onnxruntime)", "human", True, 1, None, None, "torch"),
        ("human profile, cascade, --workers 2 (one torch thread each)", "human", True, 2, None, None, "torch"),
        ("human profile, cascade, onnxruntime, --workers 2 (one thread each)", "human", True, 2, None, None,
         "onnxruntime"),
        ("gopher profile, cascade", "gopher", True, 1, None, None, "torch"),
        ("human profile, cascade, --detector detector-fast", "human", True, 1, "detector-fast", None, "torch"),
        ("human profile, cascade, --autocast bfloat16", "human", True, 1, None, "bfloat16", "torch"),
        ("human profile, cascade, onnxruntime (the default where it is installed)", "human", True, 1, None, None,
         "onnxruntime"))
#: records per batch in the runs with worker processes: a wave's four batches are then fair shares of the
#: crawl (its 1,548 records in batches of 1,000 leave one of two workers idle for half the run)
WORKER_BATCH = 250
#: shares of the detector's documents whose decision the oracle band may change
ORACLE_BOUNDS = (0.005, 0.01, 0.02, 0.05)


def records(out: Path) -> dict[str, tuple[str, str, float | None]]:
    """Each record id's outcome, text and detector P(machine) (None where the detector did not read it; kept
    records carry it with ``output.annotate``)."""
    result = {}
    for name in ("kept", "rejected"):
        for line in (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            note = rec.get("hygiene", {})
            result[rec["id"]] = ("kept" if name == "kept" else note["reason"], rec["text"],
                                 note.get("scores", {}).get("synthetic_p"))
    return result


def oracle_bands(scored: list[tuple[str, float]]) -> dict[str, dict[str, float]]:
    """For texts the full detector read (normalised text, its P(machine)): the share the widest band of the
    shipped detector's first pass, fitted on these texts' own decisions, settles at each bound."""
    det = load_detector()
    s = det.first_pass_.decision_function(det.first_pass_features([normalize_text(t) for t, _ in scored]))
    flagged = np.array([p for _, p in scored]) > det.threshold_
    out = {"shipped band": {"settled": float(np.mean((s < det.band_[0]) | (s > det.band_[1])))}}
    for bound in ORACLE_BOUNDS:
        low, high = cascade_band(s, flagged, bound)
        out[f"oracle, {bound:.1%} differ"] = {"settled": float(np.mean((s < low) | (s > high))), "low": low,
                                             "high": high}
    return out


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have finished (the filter's worker pool)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def timed(crawl: Path, out: Path, limit: int | None, profile: str, cascade: bool, workers: int,
          device: str | None = None, detector: str | None = None, autocast: str | None = None,
          backend: str = "torch") -> dict:
    """One filter run: docs/s (wall, CPU of this process and its workers) and every record's outcome; the
    detector (None: the shipped default) on ``device`` (None: the filter's default), its language models
    under ``autocast`` (None: float32) run by ``backend``."""
    batch = {"batch_size": WORKER_BATCH} if workers > 1 else {}
    config = load_config(profile=profile, overrides={"synthetic.cascade": cascade, "limit": limit, "workers": workers,
                                                     **batch,
                                                     "synthetic.device": device, "synthetic.model": detector,
                                                     "synthetic.autocast": autocast, "synthetic.backend": backend,
                                                     "output.annotate": True})
    run = FilterRun([crawl], out, config, progress=False)
    t, c = time.perf_counter(), cpu_seconds()
    stats = run.run()
    wall, cpu = time.perf_counter() - t, cpu_seconds() - c
    n = stats["records_in"]
    rows = records(out)
    return {"docs": n, "docs_per_s": n / wall, "docs_per_cpu_s": n / cpu,
            "outcome": {i: o for i, (o, _, _) in rows.items()},
            "scored": [(text, p) for _, text, p in rows.values() if p is not None]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crawl", type=Path, default=CRAWL / "crawl.jsonl.gz")
    ap.add_argument("--truth", type=Path, default=CRAWL / "truth.jsonl.gz")
    ap.add_argument("--limit", type=int, default=None, help="the first N documents only [all]")
    ap.add_argument("--out", type=Path, default=None, help="folder for cascade_speed.json and .md")
    args = ap.parse_args()
    with gzip.open(args.truth, "rt", encoding="utf-8") as fh:
        kind = {r["id"]: "synthetic" if r["kind"].startswith("synthetic") else r["kind"] for r in map(json.loads, fh)}
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, profile, cascade, workers, detector, autocast, backend) in enumerate(RUNS):
            if backend == "onnxruntime":  # the export, once, before the clock starts
                load_detector(backend=backend).features(["warm up"])
            runs[label] = timed(args.crawl, Path(tmp) / str(i), args.limit, profile, cascade, workers, None, detector,
                                autocast, backend)
    full, fast = runs[RUNS[0][0]], runs[RUNS[1][0]]
    differ = sum(fast["outcome"].get(i) != o for i, o in full["outcome"].items())
    pages = Counter(kind[i] for i in full["outcome"])
    result = {"docs": full["docs"], "pages": dict(pages),
              "ratio_wall": fast["docs_per_s"] / full["docs_per_s"],
              "ratio_cpu": fast["docs_per_cpu_s"] / full["docs_per_cpu_s"],
              "decisions_differ": differ, "decisions_differ_share": differ / max(full["docs"], 1), "runs": {}}
    lines = [f"The example crawl, {full['docs']} documents ({', '.join(f'{k} {v}' for k, v in sorted(pages.items()))}), "
             "one process", "",
             "| run | docs/s (wall) | docs per CPU-second | synthetic removed | exact / near duplicates removed | "
             "human pages removed (as machine) |", "|---|---|---|---|---|---|"]
    for label, run in runs.items():
        removed = Counter(kind[i] for i, o in run["outcome"].items() if o != "kept")
        as_machine = sum(o == "machine_generated" and kind[i] == "human" for i, o in run["outcome"].items())
        result["runs"][label] = {"docs_per_s": run["docs_per_s"], "docs_per_cpu_s": run["docs_per_cpu_s"],
                                 "removed": dict(removed), "human_removed_as_machine": as_machine}
        lines.append(f"| {label} | {run['docs_per_s']:.1f} | {run['docs_per_cpu_s']:.1f} | "
                     f"{removed['synthetic']} of {pages['synthetic']} | {removed['exact_duplicate']} of "
                     f"{pages['exact_duplicate']} / {removed['near_duplicate']} of {pages['near_duplicate']} | "
                     f"{removed['human']} of {pages['human']} ({as_machine}) |")
    lines += ["", f"ratio cascade / full: {result['ratio_wall']:.1f}x wall, {result['ratio_cpu']:.1f}x CPU; decisions "
              f"that differ: {differ} of {full['docs']} ({result['decisions_differ_share']:.2%})"]
    for key, label in (("autocast_bfloat16", RUNS[-2][0]), ("backend_onnxruntime", RUNS[-1][0])):
        run = runs[label]
        moved = sum(run["outcome"].get(i) != o for i, o in fast["outcome"].items())
        result[key] = {"ratio_wall": run["docs_per_s"] / fast["docs_per_s"], "decisions_differ": moved}
        lines.append(f"ratio {key.replace('_', ' ')} / cascade with torch: {result[key]['ratio_wall']:.2f}x wall; "
                     f"decisions that differ: {moved} of {fast['docs']} ({moved / max(fast['docs'], 1):.2%})")
    ort, ort_workers = runs[RUNS[-1][0]], runs[RUNS[3][0]]
    moved = sum(ort_workers["outcome"].get(i) != o for i, o in ort["outcome"].items())
    result["workers_onnxruntime"] = {"ratio_wall": ort_workers["docs_per_s"] / ort["docs_per_s"], "decisions_differ": moved}
    lines.append(f"ratio onnxruntime --workers 2 / onnxruntime in one process: "
                 f"{result['workers_onnxruntime']['ratio_wall']:.2f}x wall; decisions that differ: {moved} of {ort['docs']}")
    bands = oracle_bands(full["scored"])
    result["first_pass_bound"] = {"documents": len(full["scored"]), **bands}
    lines += ["", f"What a band of this first pass can settle, of the {len(full['scored'])} documents the detector read "
              "(oracle: fitted on their own full decisions)", "",
              "| band | settled by the first pass | left to the language models |", "|---|---|---|"]
    lines += [f"| {name} | {b['settled']:.1%} | {1 - b['settled']:.1%} |" for name, b in bands.items()]
    table = "\n".join(lines)
    print(table)
    if args.out:
        save(args.out, "cascade_speed", result, table)


if __name__ == "__main__":
    main()
