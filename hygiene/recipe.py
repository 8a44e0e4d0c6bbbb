"""The detector recipe: one YAML file that says what the shipped detector is trained, thresholded and measured on.

``hygiene train-detector --recipe models/detector/recipe.yaml`` reads it, assembles the data
below, fits the detector, sets its threshold and writes it with its measured figures
(:mod:`hygiene.detector_eval`). The machine LM the features use is made from the same recipe by
``collapse-sim finetune-lm --recipe ...``, so both see the same training groups.

Data, every split by ``group`` (texts derived from one document share it), never by row:

- **train**: the generational corpus's ``train.jsonl`` (``collapse-sim lm``), the simulator's pages
  continuing human-pool **train** documents (``collapse-sim pages``), human-pool **train**
  passages and whole documents, WikiText-2 *test* blocks (two thirds), detect-dev training groups and
  detect-chat training groups (a seeded sample);
- **threshold**: the human texts of the human pool's **calib** split, the other WikiText-2 blocks,
  further detect-dev groups and a fixed share of detect-chat groups (the 1% target holds for each
  of these sources on its own);
- **your own** (``own``, empty in the shipped recipe): labelled files of a crawl's own kind of writing,
  as training rows and as threshold sources of their own;
- **misspelt copies** (``typo_copies``): a seeded share of the training rows again, with typing errors
  (:mod:`hygiene.typing_noise`), as training rows only;
- **evaluation**: the corpus's ``test.jsonl``, the human pool's **eval** split, the simulator's pages
  continuing **eval** documents, held-out detect-dev groups and a fixed share of detect-chat groups,
  which nothing else touches.

detect-chat groups fall into evaluation, threshold or training by a hash of the group name and the
seed, so the split does not move when the sample sizes do.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

import numpy as np
import yaml

from hygiene.classifier import ClassifierConfig
from hygiene.detector import CascadeConfig, DetectorConfig
from hygiene.errors import UserInputError, one_line
from hygiene.features import FeatureConfig
from hygiene.human_data import iter_documents, passages
from hygiene.labelled import LabelledText, human_pool, read_labelled
from hygiene.lexical import LexicalConfig, LexicalRows
from hygiene.lm import resolve_model
from hygiene.paths import data_dir, local_or_shipped, models_dir
from hygiene.scoring import ScoringConfig
from hygiene.typing_noise import TypoCopies, typo_copies

#: the human pool's sources (WikiText-2 is not among them: it is the corpus's own human side)
POOL_SOURCES = ("web", "books", "news", "forums", "docs")
#: the training part of misspelt copies (``typo_copies``): training rows only, never a data set of their own
TYPO_PART = "typo_copies"


@dataclass(frozen=True)
class ChatData:
    """detect-chat: chat-era LLM text and the human text it was collected with."""

    path: str = "detect-chat/chat.jsonl.gz"
    #: shares of groups kept for evaluation and for the threshold only
    eval_share: float = 0.15
    threshold_share: float = 0.1
    #: seeded samples (bound the CPU time of scoring)
    train_max: int = 6000
    eval_max: int = 2500
    threshold_human_max: int = 600
    #: texts of the training groups the lexical model reads besides the scored sample (None: all of them)
    lexical_max: int | None = None


@dataclass(frozen=True)
class DevData:
    """detect-dev: open base-model samples; numbers of disjoint seeded groups per role."""

    path: str = "detect-dev/pairs.jsonl"
    train_groups: int = 715
    #: seeded sample of the training groups' texts scored for the classifier
    train_max: int = 7000
    #: texts of the training groups the lexical model reads besides the scored sample (None: all of them)
    lexical_max: int | None = None
    threshold_groups: int = 100
    eval_groups: int = 120


@dataclass(frozen=True)
class HumanData:
    """Extra human negatives from the pool's train split, and how much of calib/eval is scored."""

    passages: int = 800
    #: passage lengths in words (the corpus's 5th-95th percentile, so length alone tells nothing)
    passage_words: tuple[int, int] = (15, 46)
    documents_per_source: int = 160
    wikitext_blocks: int = 1200
    threshold_per_source: int = 300
    eval_per_source: int = 400


@dataclass(frozen=True)
class MachineLM:
    """The contrast model: where it goes, and what besides detect-chat's machine side it learns from."""

    out: str = "models/machine-lm"
    base: str = "reference-lm"
    #: synthetic texts of the corpus and machine texts of detect-dev's training groups, at most
    corpus_max: int = 1000
    dev_max: int = 1000
    #: training length: a step count trains the same on any machine; a time budget, whatever steps it buys
    max_steps: int | None = None
    time_budget_s: float | None = 600.0

    def __post_init__(self) -> None:
        if self.max_steps is not None and (type(self.max_steps) is not int or self.max_steps < 1):
            raise ValueError(f"machine_lm.max_steps must be a whole number of steps >= 1, not {self.max_steps!r}")
        if self.time_budget_s is not None and not (isinstance(self.time_budget_s, (int, float))
                                                   and self.time_budget_s > 0):
            raise ValueError(f"machine_lm.time_budget_s must be seconds > 0, not {self.time_budget_s!r}")


@dataclass(frozen=True)
class PagesData:
    """Pages the simulator's LM wrote after the openings of human-pool documents (``collapse-sim pages``)."""

    #: from the pool's train split: training rows
    train: str = "runs/pages/train.jsonl"
    #: from its eval split: measured against the pool's eval documents
    eval: str = "runs/pages/eval.jsonl"


@dataclass(frozen=True)
class OwnData:
    """Labelled texts of the user's own domain (JSONL: ``text``, ``label`` human|machine, optional ``group``).

    A detector transfers worst to kinds of human writing it never saw (see docs/detector.md); a few hundred
    human texts of a crawl's own kind, in training and in the threshold set, are the remedy.
    """

    #: files whose texts are training rows (each file a part of its own, ``own:<file stem>``)
    train: tuple[str, ...] = ()
    #: files whose human texts set the threshold: at most ``target_fpr`` of each file's texts above it
    threshold: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for key in ("train", "threshold"):
            if not isinstance(getattr(self, key), tuple):  # a bare string would be read as one file per letter
                raise ValueError(f"own.{key} must be a list of files, e.g. [{getattr(self, key)}]")


@dataclass(frozen=True)
class DetectorRecipe:
    """Everything that defines the shipped detector: its configuration, data and where it goes."""

    out: str = "models/detector"
    #: the card's title, and a paragraph under it that says what sets this detector apart (markdown)
    title: str = "Default synthetic-text detector (`hygiene score` / `hygiene filter` with no `--detector`)"
    about: str = ""
    #: feature cache and evaluation outputs (resumable)
    work: str = "runs/detector"
    corpus: str = "runs/lm-cpu/corpus"
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    chat: ChatData = field(default_factory=ChatData)
    dev: DevData = field(default_factory=DevData)
    human: HumanData = field(default_factory=HumanData)
    machine_lm: MachineLM = field(default_factory=MachineLM)
    #: the simulator's pages in the pool's domains (None: none)
    pages: PagesData | None = None
    #: the user's own labelled texts (none in the shipped recipe)
    own: OwnData = field(default_factory=OwnData)
    #: misspelt copies of training rows (none by default): robustness to typos
    typo_copies: TypoCopies = field(default_factory=TypoCopies)
    seed: int = 0


def load_recipe(path: str | os.PathLike) -> DetectorRecipe:
    """Read a recipe YAML file, or a shipped detector's recipe by its name (``detector``, or
    ``models/detector/recipe.yaml`` from any folder); an unknown or mistyped key fails naming the file and the key."""
    path = local_or_shipped(path)
    if path.is_dir() and (path / "recipe.yaml").is_file():
        path = path / "recipe.yaml"
    if not path.is_file():
        raise UserInputError(f"recipe not found: {path} (the shipped ones: {models_dir()}/*/recipe.yaml)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
                             ) from None
    except yaml.YAMLError as exc:
        raise UserInputError(f"{path}: not valid YAML ({one_line(exc)})") from None
    try:
        return _build(DetectorRecipe, raw, "")
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"{path}: {exc}") from None


def check_machine_lm(recipe: DetectorRecipe) -> None:
    """Refuse a recipe whose detector would read another machine LM than the one it writes: a model named
    like ``machine_lm.out``'s folder (``machine-lm``) that resolves elsewhere, as the shipped recipe's name
    does when it runs outside the checkout its paths are relative to (its ``out`` is ``models/machine-lm``
    under the current folder, the name the shipped model)."""
    written = Path(recipe.machine_lm.out).resolve()
    f = recipe.detector.features
    keys = [k for k in ("lm", "sampler", "observer", "performer", "contrast_lm")
            if getattr(f, k) is not None and Path(getattr(f, k)).name == written.name
            and Path(resolve_model(getattr(f, k))).resolve() != written]
    if keys:
        name = getattr(f, keys[0])
        raise UserInputError(
            f"the recipe writes its machine LM to {written} but its detector's "
            f"{', '.join(f'features.{k}' for k in keys)} ({name}) loads {Path(resolve_model(name)).resolve()}: run "
            "it from the folder its paths are relative to (the checkout, for the shipped recipe), or name the "
            "path machine_lm.out gives there")


def _build(cls: type, raw: Any, where: str) -> Any:
    """A (nested) dataclass from a mapping, refusing keys the dataclass does not have."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where.rstrip('.') or 'the recipe'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"unknown key {where + unknown[0]!r} (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in raw.items():
        sub = _NESTED.get((cls, name))
        kwargs[name] = _build(sub, value, f"{where}{name}.") if sub is not None and value is not None else value
        if isinstance(value, list):
            kwargs[name] = tuple(value)
    return cls(**kwargs)


_NESTED: dict[tuple[type, str], type] = {
    (DetectorRecipe, "detector"): DetectorConfig,
    (DetectorRecipe, "chat"): ChatData,
    (DetectorRecipe, "dev"): DevData,
    (DetectorRecipe, "human"): HumanData,
    (DetectorRecipe, "machine_lm"): MachineLM,
    (DetectorRecipe, "pages"): PagesData,
    (DetectorRecipe, "own"): OwnData,
    (DetectorRecipe, "typo_copies"): TypoCopies,
    (DetectorConfig, "features"): FeatureConfig,
    (DetectorConfig, "classifier"): ClassifierConfig,
    (DetectorConfig, "lexical"): LexicalConfig,
    (DetectorConfig, "cascade"): CascadeConfig,
    (FeatureConfig, "scoring"): ScoringConfig,
}


# -- detect-chat -------------------------------------------------------------------------------------
def chat_role(group: str, chat: ChatData, seed: int) -> str:
    """``eval``, ``threshold`` or ``train`` for a detect-chat group, by a hash of the group and the seed."""
    u = int(hashlib.sha1(f"{seed}:{group}".encode()).hexdigest()[:12], 16) / 16**12
    if u < chat.eval_share:
        return "eval"
    return "threshold" if u < chat.eval_share + chat.threshold_share else "train"


def chat_records(recipe: DetectorRecipe) -> dict[str, list[LabelledText]]:
    """detect-chat's rows by role (``train``, ``threshold``, ``eval``), before sampling; ``domain`` is the repository."""
    rows = read_labelled(data_dir() / recipe.chat.path)
    out: dict[str, list[LabelledText]] = {"train": [], "threshold": [], "eval": []}
    for r in rows:
        out[chat_role(r.group or r.text, recipe.chat, recipe.seed)].append(r)
    return out


def held_out_repositories(recipe: DetectorRecipe) -> set[str]:
    """The detect-chat repositories that have texts in the held-out (``eval``) groups: those a leave-out measures."""
    return {repository(r) for r in chat_records(recipe)["eval"]}


def _sample(rows: list[LabelledText], n: int, seed: int) -> list[LabelledText]:
    """A seeded sample of at most ``n`` rows, in their original order."""
    if len(rows) <= n:
        return list(rows)
    keep = set(random.Random(seed).sample(range(len(rows)), n))
    return [r for i, r in enumerate(rows) if i in keep]


def repository(r: LabelledText) -> str:
    """The source repository of a detect-chat row (``owner/repo``)."""
    return (r.source or "").split(":")[0]


# -- detect-dev, the human pool, WikiText ------------------------------------------------------------
def dev_split(recipe: DetectorRecipe) -> dict[str, list[LabelledText]]:
    """detect-dev rows of disjoint seeded groups: ``eval``, ``train`` and ``threshold``."""
    dev, seed = recipe.dev, recipe.seed
    records = read_labelled(data_dir() / dev.path)
    groups = sorted({r.group for r in records})
    held_out = set(random.Random(seed).sample(groups, min(dev.eval_groups, len(groups))))
    rest = [g for g in groups if g not in held_out]
    train = set(random.Random(seed + 1).sample(rest, min(dev.train_groups, len(rest))))
    rest = [g for g in rest if g not in train]
    calib = set(random.Random(seed + 2).sample(rest, min(dev.threshold_groups, len(rest))))
    return {name: [r for r in records if r.group in part]
            for name, part in (("eval", held_out), ("train", train), ("threshold", calib))}


def extra_human(h: HumanData, seed: int) -> list[LabelledText]:
    """About ``h.passages`` passages of the pool's train split, an equal share per source, lengths drawn
    from ``h.passage_words``; at most two per document, except books (few documents, each a whole book)."""
    rng = random.Random(seed)
    lo, hi = h.passage_words
    out: list[LabelledText] = []
    for source in POOL_SOURCES:
        pool = []
        for doc in iter_documents(sources=(source,), splits=("train",)):
            cuts = [p.split() for p in passages(doc.text, hi) if len(p.split()) >= hi]
            pool += [LabelledText(" ".join(w[: rng.randint(lo, hi)]), 0, generator="human", domain=source,
                                  group=f"pool:{doc.id}") for w in (cuts if source == "books" else cuts[:2])]
        rng.shuffle(pool)
        out += pool[: h.passages // len(POOL_SOURCES)]
    return out


def capped(records: list[LabelledText], per_domain: int, seed: int) -> list[LabelledText]:
    """At most ``per_domain`` seeded-random records of each domain (bounds CPU time, keeps every source)."""
    rng = random.Random(seed)
    out: list[LabelledText] = []
    for d in sorted({r.domain or "" for r in records}):
        rows = [r for r in records if (r.domain or "") == d]
        out += rng.sample(rows, min(per_domain, len(rows)))
    return out


def wikitext_blocks(h: HumanData, seed: int) -> list[LabelledText]:
    """Disjoint runs of consecutive words of WikiText-2 **test** (headings dropped), lengths as the passages'.

    Human text of the corpus's own kind (tokenised Wikipedia); the corpus's human side is WikiText-2
    *valid*, which this never touches.
    """
    lines = (data_dir() / "wikitext-2" / "test.txt").read_text(encoding="utf-8").splitlines()
    stream = [w for line in lines if not line.strip().startswith("=") for w in line.split()]
    lo, hi = h.passage_words
    rng = random.Random(seed)
    starts = sorted(rng.sample(range(0, len(stream) - hi, hi), h.wikitext_blocks))
    blocks = [LabelledText(" ".join(stream[i: i + rng.randint(lo, hi)]), 0, generator="human", domain="wikitext",
                           group=f"wikitext-test:{i}") for i in starts]
    random.Random(seed).shuffle(blocks)
    return blocks


def corpus_split(path: Path) -> list[LabelledText]:
    """A corpus split, with the decoding (beam / sample) as ``generator`` and the reuse mode as ``domain``."""
    import json

    records = read_labelled(path)
    with path.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [dataclasses.replace(r, generator=row.get("decoding") or "human", domain=row.get("mode") or None)
            for r, row in zip(records, rows)]


def simulator_pages(path: str) -> list[LabelledText]:
    """The simulator's pages of one split (``collapse-sim pages``)."""
    if not Path(path).is_file():
        raise UserInputError(f"no simulator pages at {path} (make them with: collapse-sim pages --out {path})")
    return read_labelled(path)


def own_parts(own: OwnData) -> tuple[dict[str, list[LabelledText]], dict[str, list[LabelledText]]]:
    """The user's own files as training parts and threshold sources, each named ``own:<file stem>``; their
    groups are prefixed with the part's name, so no group of theirs meets one of the shipped data's."""
    both = sorted(set(own.train) & set(own.threshold))
    if both:
        raise UserInputError(f"{both[0]}: in both own.train and own.threshold; a text may have one role only")
    train, threshold = {}, {}
    for roles, paths in ((train, own.train), (threshold, own.threshold)):
        for path in paths:
            name = f"own:{Path(path).stem}"
            if name in train or name in threshold:
                raise UserInputError(f"{path}: another own file is also named {Path(path).stem!r}; rename one")
            rows = [dataclasses.replace(r, group=f"{name}:{r.group if r.group is not None else i}")
                    for i, r in enumerate(read_labelled(path))]
            if roles is threshold:
                rows = [dataclasses.replace(r, domain=name) for r in rows if r.label == 0]
                if not rows:
                    raise UserInputError(f"{path}: no human texts; own.threshold files set the threshold on human text")
            roles[name] = rows
    return train, threshold


# -- the assembled sets ------------------------------------------------------------------------------
@dataclass
class RecipeData:
    """The recipe's texts by role; ``eval`` maps a measure's name to its records."""

    train: list[LabelledText]
    threshold: list[LabelledText]
    eval: dict[str, list[LabelledText]]
    #: counts by part, for the detector's training summary
    summary: dict[str, Any]
    #: texts of the training groups that only the lexical model reads (not in ``train``)
    lexical_extra: list[LabelledText] = field(default_factory=list)
    #: the data set each row of ``train`` and of ``threshold`` comes from (``detect_chat``, ``wikitext``, ...)
    train_parts: list[str] = field(default_factory=list)
    threshold_parts: list[str] = field(default_factory=list)

    def lexical_rows(self, records: list[LabelledText]) -> LexicalRows:
        """``records`` as the lexical model's rows (a record without a group is its own)."""
        return LexicalRows([r.text for r in records], np.array([r.label for r in records], dtype=int),
                           [str(r.group) if r.group is not None else f"text:{r.text}" for r in records])


def assemble(recipe: DetectorRecipe) -> RecipeData:
    """Read and split every data source of the recipe (deterministic for its seed)."""
    seed, h = recipe.seed, recipe.human
    corpus = Path(recipe.corpus)
    if not (corpus / "train.jsonl").is_file():
        raise UserInputError(f"no generational corpus splits at {corpus} (make them with: collapse-sim lm "
                             f"--max-train-blocks 256 --out {corpus.parent}, then collapse-sim corpus {corpus.parent} "
                             "--split)")
    chat = chat_records(recipe)
    dev = dev_split(recipe)
    wiki = wikitext_blocks(h, seed)
    cut = 2 * len(wiki) // 3
    whole = [dataclasses.replace(r, group=f"pool:{r.group}")
             for r in capped(human_pool("train", sources=POOL_SOURCES), h.documents_per_source, seed)]
    chat_train = _sample(chat["train"], recipe.chat.train_max, seed)
    dev_train = _sample(dev["train"], recipe.dev.train_max, seed)
    parts = {
        "corpus": read_labelled(corpus / "train.jsonl"),
        "human_passages": extra_human(h, seed),
        "human_documents": whole,
        "wikitext": wiki[:cut],
        "detect_dev": dev_train,
        "detect_chat": chat_train,
        **({"simulator_pages": simulator_pages(recipe.pages.train)} if recipe.pages else {}),
    }
    threshold = {
        "human_pool_calib": capped(human_pool("calib", sources=POOL_SOURCES), h.threshold_per_source, seed),
        "wikitext": wiki[cut:],
        "detect_dev": [dataclasses.replace(r, domain="detect-dev") for r in dev["threshold"] if r.label == 0],
        "detect_chat": [dataclasses.replace(r, domain="detect-chat") for r in _sample(
            [r for r in chat["threshold"] if r.label == 0], recipe.chat.threshold_human_max, seed)],
    }
    own_train, own_threshold = own_parts(recipe.own)
    parts.update(own_train)
    threshold.update(own_threshold)
    copies = typo_copies([r for v in parts.values() for r in v], recipe.typo_copies, seed)
    if copies:
        parts[TYPO_PART] = copies
    chat_eval = _sample(chat["eval"], recipe.chat.eval_max, seed)
    pool_eval = capped(human_pool("eval", sources=POOL_SOURCES), h.eval_per_source, seed)
    evaluation = {
        "corpus-test": corpus_split(corpus / "test.jsonl"),
        "human-eval": pool_eval + [dataclasses.replace(r, domain="detect-chat") for r in chat_eval if r.label == 0],
        "detect-dev": dev["eval"],
        "detect-chat": chat_eval,
        **({"simulator-pages": simulator_pages(recipe.pages.eval) + pool_eval} if recipe.pages else {}),
    }
    extra = {"detect_chat": _rest(chat["train"], chat_train, recipe.chat.lexical_max, seed),
             "detect_dev": _rest(dev["train"], dev_train, recipe.dev.lexical_max, seed)}
    summary = {
        "lexical_only": {k: {"human": sum(r.label == 0 for r in v), "machine": sum(r.label == 1 for r in v)}
                         for k, v in extra.items()},
        "train": {k: {"human": sum(r.label == 0 for r in v), "machine": sum(r.label == 1 for r in v)}
                  for k, v in parts.items()},
        "threshold": {k: len(v) for k, v in threshold.items()},
        "eval": {k: len(v) for k, v in evaluation.items()},
        "detect_chat_groups": {role: len({r.group for r in rows}) for role, rows in chat.items()},
    }
    return RecipeData([r for v in parts.values() for r in v], [r for v in threshold.values() for r in v],
                      evaluation, summary, [r for v in extra.values() for r in v],
                      [k for k, v in parts.items() for _ in v], [k for k, v in threshold.items() for _ in v])


def _rest(rows: list[LabelledText], taken: list[LabelledText], n: int | None, seed: int) -> list[LabelledText]:
    """A seeded sample of at most ``n`` (None: all) of ``rows`` not in ``taken``."""
    used = {id(r) for r in taken}
    rest = [r for r in rows if id(r) not in used]
    return rest if n is None else _sample(rest, n, seed)


def machine_lm_texts(recipe: DetectorRecipe, leave_out: Collection[str] = ()) -> list[str]:
    """What the contrast model learns from: the machine side of every detect-chat training group, and
    seeded samples of the corpus's synthetic training texts and detect-dev's training machine texts.
    ``leave_out`` names detect-chat repositories to keep out, for leave-one-out figures no model saw."""
    m, seed = recipe.machine_lm, recipe.seed
    chat = [r.text for r in chat_records(recipe)["train"] if r.label == 1 and repository(r) not in leave_out]
    corpus = [r for r in read_labelled(Path(recipe.corpus) / "train.jsonl") if r.label == 1] if m.corpus_max else []
    dev = [r for r in dev_split(recipe)["train"] if r.label == 1]
    return chat + [r.text for r in _sample(corpus, m.corpus_max, seed)] + [r.text for r in _sample(dev, m.dev_max, seed)]
