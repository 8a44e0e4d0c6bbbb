"""Agreement of hygiene's Gopher heuristics with datatrove's GopherQualityFilter + GopherRepetitionFilter.

Peer API: ``datatrove.pipeline.filters.GopherQualityFilter`` and ``GopherRepetitionFilter``
(datatrove's defaults, the published thresholds), one ``filter(Document)`` call per document.

Runs both on the same normalised documents (real web pages and news, forum and PEP
texts) and reports, document by document, how often the keep/drop verdicts agree (in
all and per source), the confusion table, the disagreements by reason, and documents/s
of each. datatrove is run with two word tokenisers, because the figure depends on it:

- ``regex``: hygiene's own tokeniser (``hygiene.quality.TOKEN_PATTERN``) on both sides,
  which isolates the heuristics themselves;
- ``spacy``: datatrove's default English tokeniser (``SpaCyTokenizer``, ``spacy.blank("en")``;
  needs ``pip install spacy``, no model download), i.e. datatrove as it ships.

    .venv/bin/python benchmarks/gopher_agreement.py [--docs 3000] [--tokenizers regex spacy] [--out DIR]

Writes ``gopher_agreement.json`` and ``gopher_agreement.md`` to ``--out``
(default ``benchmarks/results``) and prints the table.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import time
from collections import Counter
from pathlib import Path

import numpy as np

from hygiene.human_data import iter_documents
from hygiene.normalize import normalize_text
from hygiene.quality import TOKEN_PATTERN, datatrove_tokenizer, quality_reasons, quality_scores

from _results import save  # benchmarks/_results.py, beside this script

HERE = Path(__file__).resolve().parent
SOURCES = ("web", "news", "forums", "docs")
#: tokeniser name -> what it is, as the output names it
ALPHA_RULE, DATATROVE_ALPHA_RULE = "non_alpha_words", "gopher_below_alpha_threshold"
TOKENIZERS = {
    "regex": f"hygiene's regex tokeniser {TOKEN_PATTERN} on both sides",
    "spacy": "datatrove's default English tokeniser (SpaCyTokenizer, spacy.blank('en'))",
}


def documents(n: int, sources: tuple[str, ...] = SOURCES) -> tuple[list[str], list[str]]:
    """Up to ``n`` normalised documents interleaving ``sources`` equally, and the source of each."""
    per: dict[str, list[str]] = {s: [] for s in sources}
    for source in sources:
        for doc in iter_documents(sources=(source,)):
            per[source].append(normalize_text(doc.text))
            if len(per[source]) >= n:
                break
    pairs = [(text, source) for group in zip(*per.values()) for text, source in zip(group, sources)][:n]
    return [t for t, _ in pairs], [s for _, s in pairs]


def datatrove_verdicts(texts: list[str], tokenizer: str) -> list[str | None]:
    """datatrove's reason for dropping each text (None: kept), with the word tokeniser named ``tokenizer``."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.utils.typeshelper import Languages
    from datatrove.utils.word_tokenizers import WordTokenizer

    language: str | WordTokenizer = datatrove_tokenizer() if tokenizer == "regex" else Languages.english
    quality, repetition = GopherQualityFilter(language=language), GopherRepetitionFilter(language=language)
    out: list[str | None] = []
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        verdict = quality.filter(doc)
        if verdict is True:
            verdict = repetition.filter(doc)
        out.append(None if verdict is True else verdict[1])
    return out


def compare(ours: list[str | None], theirs: list[str | None], sources: list[str],
            alpha_words: np.ndarray) -> dict[str, object]:
    """Keep/drop agreement overall and per source, the confusion table and the disagreements by reason.

    ``alpha_words`` is hygiene's share of words with a letter per document: where the two
    disagree on that rule (threshold 0.8), its spread shows how close to the line those documents are.
    """
    keep_ours = np.array([r is None for r in ours])
    keep_theirs = np.array([r is None for r in theirs])
    same = keep_ours == keep_theirs
    src = np.array(sources)
    per_source = {s: {"docs": int((src == s).sum()), "agreement": float(same[src == s].mean())}
                  for s in dict.fromkeys(sources)}
    confusion = {"both_keep": int((keep_ours & keep_theirs).sum()), "both_drop": int((~keep_ours & ~keep_theirs).sum()),
                 "only_we_drop": int((~keep_ours & keep_theirs).sum()),
                 "only_datatrove_drops": int((keep_ours & ~keep_theirs).sum())}
    disagreements = Counter(f"{a} vs {b}" for a, b, k in zip(ours, theirs, same) if not k)
    on_alpha = ~same & np.array([a == ALPHA_RULE or b == DATATROVE_ALPHA_RULE for a, b in zip(ours, theirs)])
    spread = np.nanquantile(alpha_words[on_alpha], [0, 0.5, 1]).round(3).tolist() if on_alpha.any() else []
    return {"agreement": float(same.mean()), "differences": int((~same).sum()), "per_source": per_source,
            "confusion": confusion, "disagreements": dict(disagreements.most_common()),
            "alpha_rule_differences": int(on_alpha.sum()), "alpha_words_min_median_max": spread}


def _cell(text: str) -> str:
    """``text`` safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def markdown(result: dict) -> str:
    """The agreement table (one row per tokeniser) and each tokeniser's main disagreements, as markdown."""
    runs: dict[str, dict] = result["runs"]
    sources = list(next(iter(runs.values()))["per_source"]) if runs else []
    lines = [f"Peer: {result['peer']}; {result['docs']} normalised documents "
             f"({', '.join(sources)}, equal shares); hygiene {result['hygiene_docs_per_s']:.0f} docs/s.", "",
             "| datatrove word tokeniser | agreement | differences | " + " | ".join(sources)
             + " | datatrove docs/s (hygiene x) |",
             "|---|---:|---:|" + "---:|" * len(sources) + "---:|"]
    for name, run in runs.items():
        cells = " | ".join(f"{run['per_source'][s]['agreement']:.2%}" for s in sources)
        lines.append(f"| {name}: {_cell(TOKENIZERS[name])} | **{run['agreement']:.2%}** | {run['differences']} | {cells} "
                     f"| {run['datatrove_docs_per_s']:.0f} ({run['ratio']:.1f}x) |")
    for name, why in result["not_measured"].items():
        lines.append(f"| {name}: not measured ({why}) | - | - |" + " - |" * len(sources) + " - |")
    for name, run in runs.items():
        lines += ["", f"Disagreements with the {name} tokeniser (hygiene reason vs datatrove reason; None: kept):", ""]
        lines += [f"- {count} {key}" for key, count in list(run["disagreements"].items())[:6]]
        if run["alpha_rule_differences"]:
            low, median, high = run["alpha_words_min_median_max"]
            lines.append(f"- {run['alpha_rule_differences']} of {run['differences']} are the words-with-a-letter "
                         f"rule (threshold 0.8); hygiene's ratio on them: {low} to {high}, median {median}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    ap.add_argument("--tokenizers", nargs="+", default=list(TOKENIZERS), choices=list(TOKENIZERS))
    ap.add_argument("--out", type=Path, default=HERE / "results", help="write gopher_agreement.json and .md here")
    args = ap.parse_args(argv)
    if importlib.util.find_spec("datatrove") is None:
        print("datatrove is not installed (pip install datatrove): nothing to compare against")
        return 0
    texts, sources = documents(args.docs, tuple(args.sources))
    t = time.perf_counter()
    scores = quality_scores(texts, complete=False)
    ours = quality_reasons(scores)  # as the filter runs: stop at a failed check
    t_ours = time.perf_counter() - t
    peer = (f"datatrove {importlib.metadata.version('datatrove')} "
            "GopherQualityFilter + GopherRepetitionFilter (default thresholds)")
    result: dict = {"peer": peer, "docs": len(texts), "hygiene_docs_per_s": len(texts) / t_ours,
                    "runs": {}, "not_measured": {}}
    for name in args.tokenizers:
        if name == "spacy" and importlib.util.find_spec("spacy") is None:
            result["not_measured"][name] = "spaCy is not installed: pip install spacy"
            continue
        t = time.perf_counter()
        theirs = datatrove_verdicts(texts, name)
        t_theirs = time.perf_counter() - t
        result["runs"][name] = {"tokenizer": TOKENIZERS[name], **compare(ours, theirs, sources, scores["alpha_words"]),
                                "datatrove_docs_per_s": len(texts) / t_theirs, "ratio": t_theirs / t_ours}
    text = markdown(result)
    path = save(args.out, "gopher_agreement", result, text)
    print(text)
    print(f"\n{path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
