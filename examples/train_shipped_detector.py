"""Remake the shipped default detector (``models/detector``) and measure it.

Trains on the generational corpus of ``collapse-sim lm --max-train-blocks 256 --out runs/lm-cpu`` (the cpu
preset at its earlier size; train split, by ``source_id``) plus short passages and whole documents of the
human pool's **train** split as extra human negatives (the corpus has only 208 human rows in training, all
WikiText fragments), sets the threshold for 1% false positives on the human pool's **calib** split, then
evaluates on text neither step used:

1. the corpus's held-out ``test`` split (AUROC / TPR at 1% FPR per generation and decoding);
2. the human pool's ``eval`` split of ``web`` (documents) and ``books`` (200-word passages): share flagged;
3. ``detect-dev`` (real LLM text): a seeded sample of its ``group``s (none used in training).

Every feature row goes to ``--work/features.jsonl`` so a rerun resumes where an interrupted one stopped.

Usage: ``python examples/train_shipped_detector.py [--corpus runs/lm-cpu/corpus] [--out models/detector]
[--work runs/detector-shipped] [--dev-groups 120] [--dev-train-groups N] [--classifier hgb|logistic]
[--dev-calib-groups N] [--target-fpr 0.01]``. The shipped detector: ``--dev-train-groups 715 --dev-calib-groups 100``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from hygiene.atomic import write_json
from hygiene.classifier import ClassifierConfig
from hygiene.detector import Detector, DetectorConfig
from hygiene.evaluation import evaluate_detector, format_table
from hygiene.human_data import iter_documents, passages
from hygiene.labelled import LabelledText, human_pool, read_labelled
from hygiene.paths import data_dir

#: the human pool's sources (WikiText-2 is not among them: it is the corpus's own human side)
POOL_SOURCES = ("web", "books", "news", "forums", "docs")


def extra_human(n: int, words: tuple[int, int], seed: int) -> list[LabelledText]:
    """About ``n`` passages from the human pool's train split, an equal share per source.

    Each is cut to a uniformly drawn length in ``words`` (the corpus's 5th-95th percentile word counts)
    so that length alone does not tell them apart; at most two per document, except books (few
    documents, each a whole book).
    """
    rng = random.Random(seed)
    out: list[LabelledText] = []
    for source in POOL_SOURCES:
        pool = []
        for doc in iter_documents(sources=(source,), splits=("train",)):
            cuts = [p.split() for p in passages(doc.text, words[1]) if len(p.split()) >= words[1]]
            pool += [LabelledText(" ".join(w[: rng.randint(*words)]), 0, generator="human", domain=source,
                                  group=f"pool:{doc.id}") for w in (cuts if source == "books" else cuts[:2])]
        rng.shuffle(pool)
        out += pool[: n // len(POOL_SOURCES)]
    return out


def whole_documents(per_source: int, seed: int) -> list[LabelledText]:
    """Page-length human negatives: up to ``per_source`` texts of each source of the pool's **train** split,
    as a crawl holds them (documents whole, books as 200-word passages, as the ``eval`` split is read)."""
    return [dataclasses.replace(r, group=f"pool:{r.group}")
            for r in capped(human_pool("train", sources=POOL_SOURCES), per_source, seed)]


def wikitext_blocks(n: int, words: tuple[int, int], seed: int) -> list[LabelledText]:
    """``n`` disjoint runs of consecutive words (lengths drawn from ``words``) of WikiText-2 **test**, headings dropped.

    Human text of the corpus's own kind (tokenised Wikipedia, ``<unk>``, ``@-@``); the corpus's human side
    is WikiText-2 *valid*, which this never touches.
    """
    lines = (data_dir() / "wikitext-2" / "test.txt").read_text(encoding="utf-8").splitlines()
    stream = [w for line in lines if not line.strip().startswith("=") for w in line.split()]
    rng = random.Random(seed)
    starts = sorted(rng.sample(range(0, len(stream) - words[1], words[1]), n))
    return [LabelledText(" ".join(stream[i: i + rng.randint(*words)]), 0, generator="human", domain="wikitext",
                         group=f"wikitext-test:{i}") for i in starts]


def capped(records: list[LabelledText], per_domain: int, seed: int) -> list[LabelledText]:
    """At most ``per_domain`` seeded-random records of each domain (bounds CPU time, keeps every source)."""
    rng = random.Random(seed)
    out: list[LabelledText] = []
    for d in sorted({r.domain for r in records}):
        rows = [r for r in records if r.domain == d]
        out += rng.sample(rows, min(per_domain, len(rows)))
    return out


def with_decoding(path: Path) -> list[LabelledText]:
    """A corpus split with its decoding (beam / sample) as the ``generator`` stratum."""
    records = read_labelled(path)
    rows = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    return [LabelledText(r.text, r.label, generator=row.get("decoding") or "human", domain=row.get("mode") or None,
                         generation=r.generation, group=r.group) for r, row in zip(records, rows)]


def dev_split(n_eval: int, n_train: int, n_calib: int, seed: int
              ) -> tuple[list[LabelledText], list[LabelledText], list[LabelledText]]:
    """Rows of ``n_eval``, ``n_train`` and ``n_calib`` disjoint seeded-random groups of detect-dev.

    Split by group, never by row. The calib groups' human texts join the threshold set only.
    """
    records = read_labelled(data_dir() / "detect-dev" / "pairs.jsonl")
    groups = sorted({r.group for r in records})
    held_out = set(random.Random(seed).sample(groups, min(n_eval, len(groups))))
    rest = [g for g in groups if g not in held_out]
    train = set(random.Random(seed + 1).sample(rest, min(n_train, len(rest))))
    rest = [g for g in rest if g not in train]
    calib = set(random.Random(seed + 2).sample(rest, min(n_calib, len(rest))))
    return tuple([r for r in records if r.group in part] for part in (held_out, train, calib))


def transfer_check(config: DetectorConfig, X: np.ndarray, train: list[LabelledText], X_dev: np.ndarray,
                   dev: list[LabelledText]) -> dict:
    """Held-out detect-dev AUROC when one generator (or domain) is left out of the detect-dev training rows.

    A detector that only learnt the five dev generators or three domains would drop sharply on the one
    it never saw; ``all`` is the same stratum's AUROC with nothing left out.
    """
    y = np.array([r.label for r in train])
    groups = np.array([r.group or f"row:{i}" for i, r in enumerate(train)], dtype=object)
    y_dev = np.array([r.label for r in dev])
    dev_domains = {r.domain for r in dev}
    full = Detector(config).fit_features(X, y, groups).decision_function_features(X_dev)
    out: dict = {}
    for field in ("generator", "domain"):
        for v in sorted({getattr(r, field) for r in dev} - {"human"}):
            left_out = np.array([r.domain in dev_domains and getattr(r, field) == v for r in train])
            # a generator's texts against every human text; a domain's texts against its own human texts
            ev = np.array([getattr(r, field) == v or (field == "generator" and r.label == 0) for r in dev])
            part = Detector(config).fit_features(X[~left_out], y[~left_out], groups[~left_out])
            scores = {"all": float(roc_auc_score(y_dev[ev], full[ev])),
                      "left_out": float(roc_auc_score(y_dev[ev], part.decision_function_features(X_dev[ev])))}
            out[f"{field}={v}"] = scores
            print(f"leave-one-{field}-out {v}: AUROC {scores['left_out']:.3f} (all: {scores['all']:.3f})", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("runs/lm-cpu/corpus"))
    parser.add_argument("--out", type=Path, default=Path("models/detector"))
    parser.add_argument("--work", type=Path, default=Path("runs/detector-shipped"))
    parser.add_argument("--extra-human", type=int, default=800, help="human-pool train passages added [800]")
    parser.add_argument("--human-docs", type=int, default=160,
                        help="whole human-pool train documents (books: 200-word passages) added per source [160]")
    parser.add_argument("--passage-words", type=int, nargs=2, default=(15, 46),
                        help="their length range in words (the corpus's 5th-95th percentile) [15 46]")
    parser.add_argument("--wikitext", type=int, default=1200,
                        help="WikiText-2 test blocks: the first two thirds train, the rest join the threshold set [1200]")
    parser.add_argument("--calib-per-source", type=int, default=300,
                        help="human-pool calib texts per source that set the threshold [300]")
    parser.add_argument("--dev-groups", type=int, default=120, help="detect-dev groups evaluated (0 = skip) [120]")
    parser.add_argument("--dev-train-groups", type=int, default=0,
                        help="detect-dev groups (disjoint from the evaluated ones) added to training [0]")
    parser.add_argument("--dev-calib-groups", type=int, default=0,
                        help="other detect-dev groups whose human texts join the threshold set [0]")
    parser.add_argument("--classifier", choices=("hgb", "logistic"), default="hgb", help="classifier kind [hgb]")
    parser.add_argument("--target-fpr", type=float, default=0.01,
                        help="share of the threshold set's human texts allowed above the threshold [0.01]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    cache = args.work / "features.jsonl"

    dev_eval, dev_train, dev_calib = dev_split(args.dev_groups, args.dev_train_groups, args.dev_calib_groups, args.seed)
    wiki = wikitext_blocks(args.wikitext, args.passage_words, args.seed)
    random.Random(args.seed).shuffle(wiki)
    wiki_train, wiki_calib = wiki[: 2 * len(wiki) // 3], wiki[2 * len(wiki) // 3:]
    train = (read_labelled(args.corpus / "train.jsonl") + extra_human(args.extra_human, args.passage_words, args.seed)
             + whole_documents(args.human_docs, args.seed) + wiki_train + dev_train)
    labels = np.array([r.label for r in train])
    det = Detector(DetectorConfig(classifier=ClassifierConfig(kind=args.classifier), target_fpr=args.target_fpr,
                                  seed=args.seed))
    det.fit([r.text for r in train], labels, [r.group or f"row:{i}" for i, r in enumerate(train)], progress=True,
            cache=cache, summary={
                "corpora": [str(args.corpus / "train.jsonl")],
                "detect_dev_train_groups": args.dev_train_groups,
                "detect_dev_threshold_groups": args.dev_calib_groups,
                "extra_human": {"human_pool_split": "train", "sources": list(POOL_SOURCES),
                                "n": args.extra_human, "words": args.passage_words,
                                "whole_documents_per_source": args.human_docs,
                                "wikitext_2_test_blocks": len(wiki_train)},
                "n_texts": {"human": int((labels == 0).sum()), "machine": int((labels == 1).sum())},
                "generations": sorted({r.generation for r in train if r.generation is not None}),
            })
    calib = (capped(human_pool("calib", sources=POOL_SOURCES), args.calib_per_source, args.seed) + wiki_calib
             + [dataclasses.replace(r, domain="detect-dev") for r in dev_calib if r.label == 0])
    # the target holds for each source of human text on its own, not only for their union
    det.calibrate_features(det.features([r.text for r in calib], progress=True, cache=cache),
                           domains=[r.domain for r in calib])
    det.training_["threshold_set_on"] = {"human_pool_split": "calib", "sources": list(POOL_SOURCES),
                                         "wikitext_2_test_blocks": len(wiki_calib),
                                         "detect_dev_groups": args.dev_calib_groups,
                                         "n_texts": len(calib), "per_source_cap": args.calib_per_source,
                                         "target_holds": "for each source on its own"}
    det.save(args.out)
    print(f"detector -> {args.out}: threshold {det.threshold_:.4f}", flush=True)

    sets = {
        "corpus-test": with_decoding(args.corpus / "test.jsonl"),
        "human-eval": human_pool("eval", sources=("web", "books")),
    }
    if dev_eval:
        sets["detect-dev"] = dev_eval
    figures = {}
    for name, records in sets.items():
        result = evaluate_detector(det, records, out_dir=args.work / name, progress=True, cache=cache)
        figures[name] = result
        print(f"== {name} ({len(records)} texts)\n{format_table(result)}\n{result['at_threshold']}", flush=True)
        write_json(args.out / "evaluation.json", figures)
    if dev_train:
        X = det.features([r.text for r in train], cache=cache)
        X_dev = det.features([r.text for r in dev_eval], cache=cache)
        figures["detect-dev-transfer"] = transfer_check(det.config, X, train, X_dev, dev_eval)
        write_json(args.out / "evaluation.json", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
