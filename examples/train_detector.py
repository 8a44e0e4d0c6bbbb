"""Train a synthetic-text detector on new generational corpora and evaluate it on their held-out part.

Takes one or more ``collapse-sim lm`` run directories, splits each corpus by ``source_id`` (a human block
and every continuation written after it stay on one side), fits a detector on the train splits (its
threshold set for 1% false positives on held-out human text), and reports AUROC and TPR at 1% / 0.1% FPR
on the test splits, overall and per generation and decoding. Writes the detector, ``metrics.json`` and
``roc.png`` into ``--out``.

Usage: ``python examples/train_detector.py RUN_DIR... [--out DIR] [--lm MODEL] [--max-texts N]``, e.g.
``collapse-sim lm --preset cpu --out runs/lm-cpu && python examples/train_detector.py runs/lm-cpu``.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from collapse_sim.corpus import split_corpus
from collapse_sim.lm import build_corpus
from hygiene.detector import Detector, DetectorConfig
from hygiene.evaluation import evaluate_detector, format_table
from hygiene.features import FeatureConfig
from hygiene.labelled import LabelledText, read_many


def corpus_splits(run: Path) -> tuple[Path, Path]:
    """The train and test JSONL of a run's corpus, built and split by ``source_id`` when missing."""
    corpus = run / "corpus"
    if not (corpus / "train.jsonl").is_file():
        if not (corpus / "hf").is_dir():
            build_corpus(run)
        split_corpus(corpus)
    return corpus / "train.jsonl", corpus / "test.jsonl"


def with_decoding(records: list[LabelledText], paths: list[Path]) -> list[LabelledText]:
    """Label each text's stratum ``generator`` by decoding, so the evaluation reports beam and sampling apart."""
    import json

    decodings = [json.loads(line).get("decoding") or "human" for p in paths for line in p.open(encoding="utf-8")
                 if line.strip()]
    return [LabelledText(r.text, r.label, generator=d, domain=r.domain, generation=r.generation, group=r.group)
            for r, d in zip(records, decodings)]


def subsample(records: list[LabelledText], n: int | None, seed: int) -> list[LabelledText]:
    """At most ``n`` records: the human ones (the scarce class) kept up to half of ``n``, the rest machine ones
    drawn at random, so both classes are always there."""
    if n is None or len(records) <= n:
        return records
    rng = random.Random(seed)
    human = [r for r in records if r.label == 0]
    machine = [r for r in records if r.label == 1]
    keep = human if len(human) <= n // 2 else rng.sample(human, n // 2)
    return keep + rng.sample(machine, min(len(machine), n - len(keep)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="collapse-sim lm run directories")
    parser.add_argument("--out", type=Path, default=Path("runs") / "detector-example")
    parser.add_argument("--lm", default="reference-lm", help="scoring model: models/ folder, path or id")
    parser.add_argument("--max-texts", type=int, default=2000, help="training texts at most (CPU time)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    train_paths, test_paths = zip(*(corpus_splits(r) for r in args.runs))
    train = subsample(read_many(train_paths), args.max_texts, args.seed)
    test = with_decoding(read_many(test_paths), list(test_paths))
    detector = Detector(DetectorConfig(features=FeatureConfig(lm=args.lm), seed=args.seed))
    detector.fit([r.text for r in train], [r.label for r in train],
                 [r.group or f"row:{i}" for i, r in enumerate(train)], progress=True,
                 summary={"corpora": [str(p) for p in train_paths]})
    detector.save(args.out)
    result = evaluate_detector(detector, test, out_dir=args.out, progress=True)
    print(format_table(result))
    at = result["at_threshold"]
    print(f"at the detector's threshold {at['threshold']:.4f}: {at['machine_flagged']:.1%} of machine texts and "
          f"{at['human_flagged']:.1%} of human texts flagged -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
