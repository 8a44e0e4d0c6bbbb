"""Pages a language model writes after the openings of human documents.

The simulator's machine text in the human pool's own domains (web pages, news, forum posts, PEPs, passages
of books): each page continues the first block of one human document for a few blocks, in the ``lm``
simulation's three decodings (beam search, pure sampling, nucleus sampling), a third each. The example
crawl's synthetic pages are written this way from the pool's ``eval`` split; the detector recipe trains on
pages written the same way from the ``train`` split, so it knows the simulator's model where the crawl and
the polluted loop meet it (a generational corpus alone holds WikiText-style blocks only).
"""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from collapse_sim import lm
from collapse_sim.generation import Decoding
from collapse_sim.polluted import write_documents
from collapse_sim.resume import read_record
from hygiene.atomic import atomic_open, write_json
from hygiene.errors import UserInputError
from hygiene.human_data import SPLITS, HumanDoc, iter_documents, passages
from hygiene.paths import data_dir, data_hint
from hygiene.records import file_states

#: the decodings pages are written in, a third of the pages each
DECODINGS = (Decoding("beam", num_beams=5), Decoding("sample"), Decoding("sample", top_p=0.95))
POOL_DOMAINS = ("web", "news", "forums", "docs", "books")


@dataclass(frozen=True)
class PagesConfig:
    """Which openings, how many pages and how long."""

    n: int = 900  # pages in all, a third per decoding
    split: str = "train"  # the human pool's split the openings come from
    domains: tuple[str, ...] = POOL_DOMAINS
    prompt_tokens: int = 64  # the opening the model continues (one block)
    doc_blocks: int = 3  # the model writes 3 x 64 = 192 tokens, about 140 words
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.n < 1 or self.prompt_tokens < 1 or self.doc_blocks < 1:
            raise ValueError("n, prompt_tokens and doc_blocks must be positive")


def page_documents(docs: Sequence[HumanDoc]) -> list[tuple[str, str, str]]:
    """(id, domain, text) of the documents a page may open with: whole documents of 60 to 3,000 words, and
    books cut into passages of about 300 words (a whole book is not a page)."""
    out = []
    for d in docs:
        if d.source == "books":
            out += [(f"{d.id}#{i}", d.source, t) for i, t in enumerate(passages(d.text, 300, 40))]
        elif 60 <= len(d.text.split()) <= 3000:
            out.append((d.id, d.source, d.text))
    return out


def continue_openings(model_path: str, openings: Sequence[str], n: int, seed: int, prompt_tokens: int = 64,
                      doc_blocks: int = 3, batch_size: int = 32, progress: bool = False,
                      parts: Path | None = None) -> list[tuple[int, str, str]]:
    """Pages the model writes after the first ``prompt_tokens`` tokens of each opening (those long enough),
    up to ``n``, a third per decoding: (index into ``openings``, decoding label, page text). With ``parts``,
    each decoding's pages are kept there as they are finished, and a decoding found there is not redone."""
    tok = lm.load_tokenizer(model_path)
    model = lm.load_model(model_path)
    usable, heads = [], []  # the first n openings long enough, tokenised in order until there are n
    for i, text in enumerate(openings):
        x = tok(text, add_special_tokens=False)["input_ids"]
        if len(x) >= prompt_tokens:
            usable.append(i)
            heads.append(x[:prompt_tokens])
            if len(usable) == n:
                break
    if not usable:
        raise UserInputError(f"none of the {len(openings)} openings has {prompt_tokens} tokens to continue")
    prompts = torch.tensor(heads)
    out = []
    bar = tqdm(total=len(usable), desc="pages", unit="page", disable=not progress)
    for k, dec in enumerate(DECODINGS):
        part = prompts[k::3]
        if not len(part):
            continue
        label = f"{dec.method}" + (f"-top_p{dec.top_p}" if dec.top_p < 1 else "")
        kept = parts / f"decoding-{k}.json" if parts is not None else None
        if kept is not None and kept.is_file():  # finished before an interruption
            texts = read_record(kept, "texts")["texts"]
        else:
            docs = write_documents(model, part, dec, doc_blocks, pad_token_id=tok.pad_token_id,
                                   batch_size=batch_size, seed=seed + k)
            texts = tok.batch_decode(docs.tolist(), skip_special_tokens=True)
            if kept is not None:
                write_json(kept, {"texts": texts})
        out += [(usable[k + 3 * j], label, t.strip()) for j, t in enumerate(texts)]
        bar.update(len(texts))
    bar.close()
    return out


def write_pages(model_path: str, out: str | Path, config: PagesConfig = PagesConfig(),
                progress: bool = False) -> dict[str, int]:
    """Write ``config.n`` labelled pages (JSON lines: ``text``, ``label`` synthetic, ``generator``, ``decoding``,
    ``domain``, ``group`` = the opened document's pool id, so a page and its document share a group) to
    ``out``; return the count per domain. Deterministic for a model, config and machine. Each finished
    decoding is kept in ``<out>.partial/`` until the file is written, so an interrupted run of the same
    model and config resumes there (another one starts over)."""
    torch.manual_seed(config.seed)
    docs = page_documents(list(iter_documents(sources=config.domains, splits=[config.split])))
    if not docs:
        raise UserInputError(f"no human-pool document of split {config.split!r} in {data_dir()} to open a page with"
                             f"{data_hint()}")
    random.Random(config.seed).shuffle(docs)
    parts = Path(f"{out}.partial")
    state = json.loads(json.dumps({"model": str(Path(model_path).resolve()), "config": asdict(config),
                                   "model_files": file_states(Path(model_path))}))
    if parts.exists() and (not (parts / "state.json").is_file() or read_record(parts / "state.json") != state):
        _clear(parts)  # an interrupted run of another model or config: nothing of it is reused
    parts.mkdir(parents=True, exist_ok=True)
    write_json(parts / "state.json", state)
    try:
        pages = continue_openings(model_path, [t for _, _, t in docs], config.n, config.seed, config.prompt_tokens,
                                  config.doc_blocks, config.batch_size, progress, parts)
    except UserInputError:
        if not any(parts.glob("decoding-*.json")):  # nothing finished: leave nothing behind
            _clear(parts)
        raise
    name = Path(model_path).name
    counts: dict[str, int] = {}
    with atomic_open(Path(out)) as fh:
        for i, decoding, text in pages:
            doc_id, domain, _ = docs[i]
            row = {"text": text, "label": "synthetic", "generator": f"lm:{name}:{decoding}", "decoding": decoding,
                   "domain": domain, "group": f"pool:{doc_id.split('#')[0]}", "split": config.split}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            counts[domain] = counts.get(domain, 0) + 1
    _clear(parts)
    return counts


def _clear(parts: Path) -> None:
    """Remove the folder of an interrupted run's finished decodings: its own files only. A folder of that name
    holding anything else is not one (a model directory named ``<out>.partial``) and is refused, never removed."""
    if not parts.is_dir():
        raise UserInputError(f"{parts} is in the way of this run's partial results: move it or choose another --out")
    ours = [parts / "state.json", *parts.glob("decoding-*.json"),  # and what a write stopped midway left
            *parts.glob(".state.json.*.tmp"), *parts.glob(".decoding-*.json.*.tmp")]
    others = sorted(p.name for p in parts.iterdir() if p not in ours)
    if others:
        raise UserInputError(f"{parts} holds {others[0]}, which no interrupted run of pages wrote: move it or "
                             "choose another --out")
    for p in ours:
        p.unlink(missing_ok=True)
    parts.rmdir()
