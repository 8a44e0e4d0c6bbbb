"""Share of each human source that each filter profile keeps, duplicates excluded.

Every text here was written by people (all before chat LLMs, except a few 2023 pages on
the detect-chat human side), so every rejection that is not a duplicate is human text
lost. For each source a seeded sample of one split of the human pool
(:mod:`hygiene.human_data`: ``eval`` by default, never used to choose the human
profile's thresholds, which were chosen on ``train`` and ``calib``) runs through
:func:`hygiene.filter_records` under each profile, one source at a time; retention is
kept / (sample - duplicates). The detector stage is off unless ``--with-detector``.

Sources: web pages, Reuters and BBC news, 20 Newsgroups posts, book passages (about
200 words), PEPs, and the human side of ``detect-chat``.

    .venv/bin/python benchmarks/human_retention.py [--per-source 1000] [--split eval] [--with-detector]

Writes ``benchmarks/results/human_retention.json`` and ``.md`` and prints the table.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

from hygiene.config import load_config, profiles
from hygiene.filtering import filter_records
from hygiene.human_data import passages, split_of
from hygiene.paths import data_dir

from _results import save  # benchmarks/_results.py, beside this script

HERE = Path(__file__).resolve().parent
#: source -> file under the data directory (books: a glob of whole books, cut into passages)
SOURCES = {
    "web": "web/web.jsonl",
    "reuters": "news/reuters21578.jsonl",
    "bbc": "news/bbc.jsonl",
    "20newsgroups": "forums/20newsgroups.jsonl",
    "book passages": "books/*.txt",
    "peps": "docs/peps.jsonl",
    "detect-chat human": "detect-chat/chat.jsonl.gz",
}
DUPLICATE_STAGES = ("exact_dedup", "near_dedup")


def _documents(root: Path, source: str, splits: set[str]) -> Iterator[str]:
    """The texts of one source in ``splits`` (split by the human pool's ids; detect-chat by ``group``)."""
    pattern = SOURCES[source]
    if source == "book passages":
        for path in sorted(root.glob(pattern)):
            if split_of(path.relative_to(root).as_posix()) in splits:
                yield from passages(path.read_text(encoding="utf-8", errors="replace"))
        return
    opener = gzip.open if pattern.endswith(".gz") else open
    with opener(root / pattern, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            record = json.loads(line)
            if source == "detect-chat human":
                if record.get("label") != "human" or split_of(str(record["group"])) not in splits:
                    continue
            elif split_of(f"{pattern}:{i}") not in splits:
                continue
            if (record.get("text") or "").strip():
                yield record["text"]


def human_sample(source: str, per_source: int, splits: tuple[str, ...] = ("eval",), seed: int = 0,
                 root: Path | None = None) -> list[str]:
    """A seeded sample of up to ``per_source`` texts of ``source`` from ``splits``."""
    texts = list(_documents(root or data_dir(), source, set(splits)))
    random.Random(f"{seed}:{source}").shuffle(texts)
    return texts[:per_source]


def retention(texts: list[str], profile: str, with_detector: bool) -> dict[str, object]:
    """Kept share of ``texts`` under ``profile`` among those not rejected as duplicates, and the reasons."""
    config = load_config(profile=profile, overrides={"synthetic.enabled": with_detector})
    reasons: Counter = Counter()
    kept = duplicates = 0
    for decision in filter_records(texts, config):
        if decision.kept:
            kept += 1
        elif decision.stage in DUPLICATE_STAGES:
            duplicates += 1
        else:
            reasons[f"{decision.stage}/{decision.reason}"] += 1
    judged = len(texts) - duplicates
    return {"n": len(texts), "duplicates": duplicates, "kept": kept,
            "retention": round(kept / judged, 4) if judged else None, "reasons": dict(reasons.most_common())}


def markdown(table: dict[str, dict[str, dict]], profiles: list[str]) -> str:
    """The retention table as markdown: one row per source, one column per profile."""
    lines = ["| source | sample | " + " | ".join(f"kept, {p}" for p in profiles) + " | main reason lost (" + profiles[-1] + ") |",
             "|---|---:|" + "---:|" * len(profiles) + "---|"]
    for source, by_profile in table.items():
        first = by_profile[profiles[0]]
        cells = [f"{by_profile[p]['retention']:.1%}" if by_profile[p]["retention"] is not None else "-"
                 for p in profiles]
        reasons = by_profile[profiles[-1]]["reasons"]
        main = next(iter(reasons), "-")
        lines.append(f"| {source} | {first['n']} | " + " | ".join(cells) + f" | {main} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-source", type=int, default=1000)
    parser.add_argument("--split", nargs="+", default=["eval"], choices=["train", "calib", "eval"])
    parser.add_argument("--profiles", nargs="+", default=["gopher", "human"], choices=profiles())
    parser.add_argument("--with-detector", action="store_true", help="run the synthetic-text detector stage too")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    table: dict[str, dict[str, dict]] = {}
    for source in SOURCES:
        texts = human_sample(source, args.per_source, tuple(args.split), args.seed)
        table[source] = {p: retention(texts, p, args.with_detector) for p in args.profiles}
    report = {"split": args.split, "per_source": args.per_source, "seed": args.seed,
              "with_detector": args.with_detector, "seconds": round(time.perf_counter() - start, 1),
              "sources": table}
    text = markdown(table, args.profiles)
    path = save(args.out, "human_retention", report, text)
    print(text)
    print(f"\n{path} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
