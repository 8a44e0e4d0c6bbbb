"""The filter inside a Hugging Face ``datasets`` pipeline: load a corpus, ``hygiene.filter_dataset``, save the kept part.

The same stages as ``hygiene filter`` (normalise, exact dedup, the profile's quality rules, MinHash near dedup,
the synthetic-text detector) read the dataset's text column in batches; the kept dataset comes back with the
input's columns, the rejected one with ``hygiene_stage``, ``hygiene_reason``, ``hygiene_failed`` and
``hygiene_scores``.

Usage: ``python examples/pipeline_datasets.py [INPUT] [--out DIR] [--no-synthetic] [--set KEY=VALUE ...]``
(INPUT: JSON lines, gzipped or not, or Parquet; default the example crawl).
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from datasets import load_dataset

import hygiene
from hygiene.config import load_config

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", nargs="?", type=Path, default=HERE / "crawl" / "crawl.jsonl.gz")
    parser.add_argument("--out", type=Path, default=HERE.parent / "runs" / "pipeline")
    parser.add_argument("--no-synthetic", action="store_true", help="skip the detector (no model needed)")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="override a filter config key, e.g. quality.min_words=100")
    args = parser.parse_args(argv)

    builder = "parquet" if args.input.suffix == ".parquet" else "json"
    ds = load_dataset(builder, data_files=str(args.input), split="train")
    config = load_config(None, {"synthetic.enabled": False} if args.no_synthetic else None, args.assignments)
    kept, rejected = hygiene.filter_dataset(ds, config)

    kept.save_to_disk(str(args.out / "kept"))
    rejected.to_json(str(args.out / "rejected.jsonl"))
    print(f"{len(ds)} documents: {len(kept)} kept -> {args.out / 'kept'} (datasets.load_from_disk), "
          f"{len(rejected)} rejected -> {args.out / 'rejected.jsonl'}")
    for stage, n in Counter(rejected["hygiene_stage"]).most_common():
        print(f"  {stage}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
