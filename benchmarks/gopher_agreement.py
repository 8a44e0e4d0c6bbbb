"""Agreement of hygiene's Gopher heuristics with datatrove's GopherQualityFilter + GopherRepetitionFilter.

Runs both on the same normalised documents (real web pages and news, forum and PEP
texts) and reports, document by document, how often the keep/drop verdicts agree,
the confusion table, the disagreements by reason, and documents/s of each.

datatrove's English word tokeniser needs spaCy; where spaCy is not installed both
sides use hygiene's regex tokeniser (``hygiene.quality.TOKEN_PATTERN``) so the
comparison isolates the heuristics themselves.

    .venv/bin/python benchmarks/gopher_agreement.py [--docs 3000] [--out DIR]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np

from hygiene.human_data import iter_documents
from hygiene.normalize import normalize_text
from hygiene.quality import TOKEN_PATTERN, quality_reasons, quality_scores


def documents(n: int) -> list[str]:
    """Up to ``n`` documents, interleaving web, news, forum and PEP texts."""
    per = {s: [] for s in ("web", "news", "forums", "docs")}
    for source in per:
        for doc in iter_documents(sources=(source,)):
            per[source].append(normalize_text(doc.text))
            if len(per[source]) >= n:
                break
    mixed = [d for group in zip(*per.values()) for d in group]
    return mixed[:n]


def datatrove_verdicts(texts: list[str]) -> tuple[list[str | None], str]:
    """datatrove's reason for each text (None: kept) and which tokeniser it used."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.utils.word_tokenizers import WordTokenizer

    language: object = "en"
    tokenizer = "spaCy (datatrove default)"
    if importlib.util.find_spec("spacy") is None:
        class RegexTokenizer(WordTokenizer):
            def word_tokenize(self, text: str) -> list[str]:
                return re.findall(TOKEN_PATTERN, text)

            def sent_tokenize(self, text: str) -> list[str]:
                return [text]

            def span_tokenize(self, text: str) -> list[tuple[int, int]]:
                return [(0, len(text))]

        language, tokenizer = RegexTokenizer(), f"hygiene's regex {TOKEN_PATTERN} (spaCy not installed)"
    quality, repetition = GopherQualityFilter(language=language), GopherRepetitionFilter(language=language)
    out: list[str | None] = []
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        verdict = quality.filter(doc)
        if verdict is True:
            verdict = repetition.filter(doc)
        out.append(None if verdict is True else verdict[1])
    return out, tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=None, help="write gopher_agreement.json here")
    args = ap.parse_args()
    if importlib.util.find_spec("datatrove") is None:
        print("datatrove is not installed (pip install datatrove): nothing to compare against")
        return
    texts = documents(args.docs)
    t = time.perf_counter()
    ours = quality_reasons(quality_scores(texts, complete=False))  # as the filter runs: stop at a failed check
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    theirs, tokenizer = datatrove_verdicts(texts)
    t_theirs = time.perf_counter() - t
    keep_ours = np.array([r is None for r in ours])
    keep_theirs = np.array([r is None for r in theirs])
    agree = float((keep_ours == keep_theirs).mean())
    confusion = {"both_keep": int((keep_ours & keep_theirs).sum()), "both_drop": int((~keep_ours & ~keep_theirs).sum()),
                 "only_we_drop": int((~keep_ours & keep_theirs).sum()),
                 "only_datatrove_drops": int((keep_ours & ~keep_theirs).sum())}
    disagreements = Counter(f"{a} vs {b}" for a, b, ka, kb in zip(ours, theirs, keep_ours, keep_theirs) if ka != kb)
    print(f"{len(texts)} documents; datatrove tokeniser: {tokenizer}")
    print(f"agreement (keep/drop, doc by doc): {agree:.4f}")
    print("| | datatrove keeps | datatrove drops |\n|---|---|---|")
    print(f"| hygiene keeps | {confusion['both_keep']} | {confusion['only_datatrove_drops']} |")
    print(f"| hygiene drops | {confusion['only_we_drop']} | {confusion['both_drop']} |")
    print("disagreements (hygiene reason vs datatrove reason):")
    for key, count in disagreements.most_common(10):
        print(f"  {count:5d}  {key}")
    print(f"docs/s: hygiene {len(texts) / t_ours:.0f}, datatrove {len(texts) / t_theirs:.0f} "
          f"(ratio {t_theirs / t_ours:.1f}x)")
    result = {"docs": len(texts), "tokenizer": tokenizer, "agreement": agree, "confusion": confusion,
              "disagreements": dict(disagreements), "hygiene_docs_per_s": len(texts) / t_ours,
              "datatrove_docs_per_s": len(texts) / t_theirs, "ratio": t_theirs / t_ours}
    print(json.dumps({k: v for k, v in result.items() if k != "disagreements"}))
    if args.out:
        from hygiene.atomic import write_json

        write_json(args.out / "gopher_agreement.json", result)


if __name__ == "__main__":
    main()
