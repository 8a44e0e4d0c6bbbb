"""The main job: run ``hygiene filter`` on the example crawl with the shipped models, then score each stage.

Filters ``examples/crawl/crawl.jsonl.gz`` (built by ``examples/build_crawl.py``, rebuilt if missing) into
``runs/demo/`` with the default configuration and the shipped detector (``models/detector``, scoring with
``models/reference-lm``), prints the filter's stats, and, from the ground truth kept apart in
``examples/crawl/truth.jsonl.gz``, the precision and recall of each stage:

- exact / near dedup against the copies placed after their originals;
- quality against the injected boilerplate and junk pages;
- the synthetic-text detector against the machine-written pages (this project's LM and other LLMs).

Recall is over the positives that reached the stage (earlier stages may have removed some); the last
column is the share of all positives the whole filter removed. Writes ``runs/demo/demo_report.json`` and
the run's page, ``runs/demo/report.html`` (``hygiene report``), and prints its path.

Usage: ``python examples/demo.py [--out DIR] [--detector PATH]``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: stage -> the ground-truth kinds it is meant to remove
TARGETS = {
    "exact_dedup": {"exact_duplicate"},
    "near_dedup": {"near_duplicate"},
    "quality": {"boilerplate"},
    "synthetic": {"synthetic", "synthetic_other"},
}
ORDER = ("input", "exact_dedup", "quality", "near_dedup", "synthetic")


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL file, gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def stage_scores(truth: list[dict], stage_of: dict[str, str | None]) -> dict[str, dict[str, float]]:
    """Per stage: documents it rejected, precision, recall over the positives that reached it, and the
    share of all its positives that the whole filter removed."""
    kind = {t["id"]: t["kind"] for t in truth}
    reached = set(kind)
    out = {}
    for stage in ORDER:
        rejected = {i for i in reached if stage_of.get(i) == stage}
        if stage in TARGETS:
            positives = {i for i, k in kind.items() if k in TARGETS[stage]}
            hit = rejected & positives
            out[stage] = {
                "rejected": len(rejected),
                "precision": len(hit) / len(rejected) if rejected else float("nan"),
                "recall": len(hit) / len(positives & reached) if positives & reached else float("nan"),
                "removed_by_filter": sum(stage_of.get(i) is not None for i in positives) / max(len(positives), 1),
            }
        reached -= rejected
    return out


def kept_shares(truth: list[dict], stage_of: dict[str, str | None]) -> dict[str, dict[str, float]]:
    """Share of each kind (and synthetic source) kept, and where the rest went."""
    groups: dict[str, list[str]] = {}
    for t in truth:
        groups.setdefault(t["kind"], []).append(t["id"])
        if t["kind"].startswith("synthetic"):
            source = t["source"].rsplit(":", 1)[0] if t["kind"] == "synthetic_other" else t["source"]
            groups.setdefault(f"{t['kind']} / {source}", []).append(t["id"])
    groups = dict(sorted(groups.items()))
    out = {}
    for name, ids in groups.items():
        where = Counter(stage_of.get(i) or "kept" for i in ids)
        out[name] = {"n": len(ids), "kept": where["kept"] / len(ids),
                     **{s: where[s] for s in ORDER if where[s]}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crawl", type=Path, default=HERE / "crawl")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "demo")
    parser.add_argument("--detector", default=None, help="detector directory [models/detector]")
    args = parser.parse_args(argv)

    if not (args.crawl / "crawl.jsonl.gz").is_file():
        import build_crawl

        build_crawl.main(["--out", str(args.crawl)])
    from hygiene.cli import main as hygiene_cli

    command = ["filter", str(args.crawl / "crawl.jsonl.gz"), "--out", str(args.out), "--id-field", "id",
               "--overwrite"] + (["--detector", args.detector] if args.detector else [])
    print("$ hygiene " + " ".join(command), flush=True)
    try:
        hygiene_cli.main(command, standalone_mode=False)
    except Exception as exc:  # click errors (no detector, bad input) as one line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stats = json.loads((args.out / "stats.json").read_text())
    print(f"\n{stats['records_in']} documents: {stats['kept']} kept, {stats['rejected']} rejected "
          f"in {stats['elapsed_s']:.0f} s; detector threshold {stats['synthetic_threshold']}")
    for stage, reasons in stats["by_stage"].items():
        print(f"  {stage:<12} " + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])))

    truth = read_jsonl(args.crawl / "truth.jsonl.gz")
    stage_of: dict[str, str | None] = {r["id"]: None for r in read_jsonl(args.out / "kept.jsonl")}
    stage_of.update({r["hygiene"]["id"]: r["hygiene"]["stage"] for r in read_jsonl(args.out / "rejected.jsonl")})
    scores = stage_scores(truth, stage_of)
    print("\nstage         rejected  precision  recall  removed by the filter")
    for stage, s in scores.items():
        print(f"  {stage:<12} {s['rejected']:>7}  {s['precision']:>9.3f}  {s['recall']:>6.3f}  {s['removed_by_filter']:>6.3f}")
    shares = kept_shares(truth, stage_of)
    print(f"\n  {'kind / source':<50} {'n':>5}  {'kept':>5}  rejected by")
    for name, s in shares.items():
        by = ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("n", "kept"))
        print(f"  {name:<50} {s['n']:>5}  {s['kept']:>5.1%}  {by}")
    from hygiene.atomic import write_json

    write_json(args.out / "demo_report.json", {"stats": {k: v for k, v in stats.items() if k != "config"},
                                               "stages": scores, "kinds": shares})
    from hygiene.report import write_report

    print(f"\nscores: {args.out / 'demo_report.json'}")
    print(f"report: {write_report(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
