"""Build the example crawl: real human pages mixed with machine-written pages, near-duplicates and junk.

Writes ``examples/crawl/crawl.jsonl.gz`` (what a crawler hands the filter: ``id``, ``url``, ``text``) and
``examples/crawl/truth.jsonl.gz`` (the ground truth, kept apart: ``id``, ``kind``, ``label``, ``source``,
``dup_of``). Kinds:

- ``human``: documents of the human pool's ``eval`` split (``hygiene.human_data``: web pages, news, forum
  posts, PEPs, passages of books), which neither the reference LM nor the detector's calibration saw;
- ``synthetic``: pages the language model wrote (the project's own generation code, seeded), continuing the
  opening of *other* eval-split documents (openings not included), in the ``lm`` simulation's decodings:
  beam search (5 beams), pure sampling and nucleus sampling (top-p 0.95);
- ``synthetic_other``: machine texts of other, larger LLMs (GPT-2 XL, OPT-2.7B, GPT-Neo, GPT-J, GPT-NeoX;
  ``detect-dev/pairs.jsonl``; the shipped detector trained on most of its groups);
- ``exact_duplicate`` / ``near_duplicate``: copies of human documents in the crawl, verbatim or with light
  edits (about one word in a hundred dropped or misspelt, a share-this footer), placed after their original;
- ``boilerplate``: cookie walls, navigation menus, keyword spam, product listings, error pages.

Usage: ``python examples/build_crawl.py [--lm PATH] [--out DIR] [--seed N]``. Deterministic for a given
model, seed and machine; the committed sample is what ``examples/demo.py`` filters.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from collapse_sim.pages import continue_openings, page_documents
from hygiene.human_data import iter_documents
from hygiene.paths import data_dir, models_dir

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class CrawlMix:
    """How many documents of each kind the crawl holds (about 1,500: the demo filters it in minutes on 2 cores)."""

    human: dict[str, int]  # per human-pool source
    synthetic: int = 300  # pages the LM writes
    synthetic_other: int = 100  # texts of other LLMs (detect-dev)
    exact_duplicates: int = 40
    near_duplicates: int = 120
    boilerplate: int = 90
    prompt_tokens: int = 64  # opening the LM continues (one block)
    doc_blocks: int = 3  # the LM writes 3 x 64 = 192 tokens, about 140 words


MIX = CrawlMix(human={"web": 220, "news": 260, "forums": 220, "docs": 50, "books": 150})


def human_documents(mix: CrawlMix, rng: random.Random) -> tuple[list[dict], list[str]]:
    """Eval-split human documents for the crawl, and openings of other eval-split documents to prompt the LM."""
    crawl, spare = [], []
    for source, n in mix.human.items():
        docs = list(iter_documents(sources=[source], splits=["eval"]))
        docs_text = [(i, t) for i, _, t in page_documents(docs)]
        rng.shuffle(docs_text)
        crawl += [{"text": t, "source": f"{source}:{i}"} for i, t in docs_text[:n]]
        spare += [t for _, t in docs_text[n:]]
    rng.shuffle(spare)
    return crawl, spare


def machine_pages(mix: CrawlMix, openings: list[str], model_path: str, seed: int) -> list[dict]:
    """Pages the LM writes after human openings, a third per decoding."""
    pages = continue_openings(model_path, openings, mix.synthetic, seed, mix.prompt_tokens, mix.doc_blocks)
    return [{"text": text, "source": f"lm:{Path(model_path).name}:{label}"} for _, label, text in pages]


def other_llm_pages(n: int, rng: random.Random) -> list[dict]:
    """Machine texts of the detect-dev set (five open LLMs, three domains)."""
    rows = [json.loads(line) for line in (data_dir() / "detect-dev" / "pairs.jsonl").open(encoding="utf-8")]
    machine = [r for r in rows if r["label"] == "machine"]
    return [{"text": r["text"], "source": f"detect-dev:{r['generator']}:{r['domain']}"} for r in rng.sample(machine, n)]


_NAV = ["Home", "About us", "Contact", "Privacy policy", "Terms of use", "Sign in", "Register", "Subscribe",
        "Newsletter", "Careers", "Advertise", "Sitemap", "Help", "FAQ", "Shop", "Blog", "Events", "Press"]
_KEYWORDS = ["cheap", "flights", "best", "price", "hotel", "deals", "london", "paris", "discount", "online",
             "buy", "free", "shipping", "casino", "loans", "insurance", "quotes", "review", "top", "2019"]


def junk_page(rng: random.Random) -> str:
    """One boilerplate or low-quality page, of five kinds."""
    kind = rng.randrange(5)
    if kind == 0:  # cookie wall and navigation
        lines = rng.sample(_NAV, 12) + ["We use cookies to improve your experience. Accept all cookies",
                                        "Manage preferences", "© 2019 All rights reserved"]
        return "\n".join(lines)
    if kind == 1:  # keyword spam
        return " ".join(rng.choice(_KEYWORDS) for _ in range(rng.randint(80, 200)))
    if kind == 2:  # product listing
        return "\n".join(f"• Item {rng.randint(1000, 9999)} - ${rng.randint(5, 99)}.99 - In stock"
                         for _ in range(rng.randint(20, 40)))
    if kind == 3:  # error page
        return rng.choice(["404 Page not found. The page you requested does not exist.",
                           "Access denied. Please enable JavaScript to continue.",
                           "Loading... please wait"])
    return "\n".join(f"{rng.choice(_KEYWORDS).title()} {rng.choice(_KEYWORDS)} {rng.choice(_KEYWORDS)}... Read more..."
                     for _ in range(rng.randint(10, 25)))  # teaser list


def light_edit(text: str, rng: random.Random) -> str:
    """A near-copy: about one word in a hundred dropped or misspelt, and a share-this footer."""
    words = text.split(" ")
    for _ in range(max(1, len(words) // 100)):
        i = rng.randrange(len(words))
        if rng.random() < 0.5:
            del words[i]
        elif len(words[i]) > 3:
            w = words[i]
            j = rng.randrange(len(w) - 1)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words) + "\n\nShare this: Facebook Twitter Email"


def build(out: Path, model_path: str, seed: int = 0, mix: CrawlMix = MIX) -> dict[str, int]:
    """Build the crawl and its ground truth into ``out``; return the count per kind."""
    rng = random.Random(seed)
    human, openings = human_documents(mix, rng)
    docs = [{**d, "kind": "human"} for d in human]
    docs += [{**d, "kind": "synthetic"} for d in machine_pages(mix, openings, model_path, seed)]
    docs += [{**d, "kind": "synthetic_other"} for d in other_llm_pages(mix.synthetic_other, rng)]
    docs += [{"text": junk_page(rng), "source": "template", "kind": "boilerplate"} for _ in range(mix.boilerplate)]
    rng.shuffle(docs)
    for i, d in enumerate(docs):
        d["id"] = f"doc-{i:05d}"
    # copies go after their original, so that "duplicate" means "seen before" as the filter reads the crawl
    originals = rng.sample([d for d in docs if d["kind"] == "human"], mix.exact_duplicates + mix.near_duplicates)
    for k, orig in enumerate(originals):
        exact = k < mix.exact_duplicates
        copy = {"text": orig["text"] if exact else light_edit(orig["text"], rng), "source": orig["source"],
                "kind": "exact_duplicate" if exact else "near_duplicate", "dup_of": orig["id"],
                "id": f"doc-{len(docs):05d}"}
        pos = docs.index(orig)
        docs.insert(rng.randint(pos + 1, len(docs)), copy)
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(out / "crawl.jsonl.gz", "wt", encoding="utf-8") as crawl, \
            gzip.open(out / "truth.jsonl.gz", "wt", encoding="utf-8") as truth:
        for d in docs:
            crawl.write(json.dumps({"id": d["id"], "url": f"https://example.org/{d['id']}", "text": d["text"]},
                                   ensure_ascii=False) + "\n")
            label = "synthetic" if d["kind"].startswith("synthetic") else "human"
            truth.write(json.dumps({"id": d["id"], "kind": d["kind"], "label": label, "source": d["source"],
                                    "dup_of": d.get("dup_of")}) + "\n")
    counts: dict[str, int] = {}
    for d in docs:
        counts[d["kind"]] = counts.get(d["kind"], 0) + 1
    return counts


def default_model() -> str:
    """The shipped base LM that wrote the example's synthetic pages (``--lm`` names another model)."""
    shipped = models_dir() / "base-lm"
    if not (shipped / "config.json").is_file():
        raise SystemExit(f"no model at {shipped}: pass --lm PATH (a causal LM directory)")
    return str(shipped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "crawl", help="output directory [examples/crawl]")
    parser.add_argument("--lm", default=None, help="model that writes the synthetic pages [models/base-lm]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    counts = build(args.out, args.lm or default_model(), args.seed)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"{sum(counts.values())} documents -> {args.out}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
