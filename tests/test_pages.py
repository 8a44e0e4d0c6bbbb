"""The simulator's pages: human openings continued by the shipped base LM, labelled for the detector recipe."""
from __future__ import annotations

import json

import pytest

from collapse_sim.pages import DECODINGS, PagesConfig, continue_openings, page_documents, write_pages
from hygiene.errors import UserInputError
from hygiene.human_data import HumanDoc, split_of
from hygiene.labelled import read_labelled
from hygiene.paths import models_dir

BASE_LM = models_dir() / "base-lm"


def test_page_documents_cut_books_and_skip_short_or_huge_documents():
    paragraphs = ["\n\n".join(" ".join(f"w{i}" for i in range(50)) for _ in range(20))]
    book = HumanDoc("books/a.txt", "books", "train", paragraphs[0])
    short = HumanDoc("web/web.jsonl:1", "web", "train", "too short to be a page")
    page = HumanDoc("web/web.jsonl:2", "web", "train", " ".join(["word"] * 100))
    huge = HumanDoc("web/web.jsonl:3", "web", "train", " ".join(["word"] * 3001))
    out = page_documents([book, short, page, huge])
    assert [d for d, _, _ in out if not d.startswith("books")] == ["web/web.jsonl:2"]
    books = [(d, t) for d, s, t in out if s == "books"]
    assert len(books) > 1 and all(d.startswith("books/a.txt#") for d, _ in books)
    assert all(300 <= len(t.split()) < 350 for _, t in books)


def test_config_refuses_an_unknown_split():
    with pytest.raises(ValueError, match="split"):
        PagesConfig(split="test")


def test_no_documents_or_no_long_opening_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("COLLAPSE_HYGIENE_DATA", str(tmp_path))
    with pytest.raises(UserInputError, match="no human-pool document of split 'train'"):
        write_pages(str(BASE_LM), tmp_path / "p.jsonl", PagesConfig(n=3))
    if not (BASE_LM / "config.json").is_file():
        pytest.skip("no shipped base LM")
    with pytest.raises(UserInputError, match="none of the 2 openings has 64 tokens"):
        continue_openings(str(BASE_LM), ["too short", "also short"], n=3, seed=0)
    assert not (tmp_path / "p.jsonl").exists()


def test_pages_are_labelled_grouped_by_their_document_and_deterministic(shared_data, tmp_path):
    if not (BASE_LM / "config.json").is_file():
        pytest.skip("no shipped base LM")
    cfg = PagesConfig(n=6, split="eval", prompt_tokens=16, doc_blocks=1, seed=3)
    counts = write_pages(str(BASE_LM), tmp_path / "a.jsonl", cfg)
    write_pages(str(BASE_LM), tmp_path / "b.jsonl", cfg)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").open()]
    assert len(rows) == 6 == sum(counts.values())
    # a third per decoding, each page from a document of the asked split, grouped as the recipe groups the pool
    labels = [d.method + (f"-top_p{d.top_p}" if d.top_p < 1 else "") for d in DECODINGS]
    assert sorted(r["decoding"] for r in rows) == sorted(labels * 2)
    for r in rows:
        doc_id = r["group"].removeprefix("pool:")
        assert r["group"].startswith("pool:") and split_of(doc_id) == "eval" or doc_id.startswith("books/")
        assert r["text"].strip() and r["generator"].startswith("lm:base-lm:")
    assert {t.label for t in read_labelled(tmp_path / "a.jsonl")} == {1}


def test_an_interrupted_run_resumes_after_its_finished_decodings(shared_data, tmp_path, monkeypatch):
    if not (BASE_LM / "config.json").is_file():
        pytest.skip("no shipped base LM")
    import collapse_sim.pages as pages_module

    cfg = PagesConfig(n=6, split="eval", prompt_tokens=16, doc_blocks=1, seed=3)
    write_pages(str(BASE_LM), tmp_path / "whole.jsonl", cfg)
    real, calls, stop = pages_module.write_documents, [], [2]  # interrupted in its second decoding

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) in stop:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pages_module, "write_documents", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_pages(str(BASE_LM), tmp_path / "p.jsonl", cfg)
    assert not (tmp_path / "p.jsonl").exists() and (tmp_path / "p.jsonl.partial" / "decoding-0.json").is_file()
    calls.clear()
    stop.clear()
    write_pages(str(BASE_LM), tmp_path / "p.jsonl", cfg)
    assert len(calls) == 2  # the first decoding was not written again
    assert (tmp_path / "p.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert not (tmp_path / "p.jsonl.partial").exists()
    # an interrupted run of another config is not reused
    calls.clear()
    stop.append(2)
    with pytest.raises(KeyboardInterrupt):
        write_pages(str(BASE_LM), tmp_path / "q.jsonl", cfg)
    calls.clear()
    stop.clear()
    write_pages(str(BASE_LM), tmp_path / "q.jsonl", PagesConfig(n=6, split="eval", prompt_tokens=16, doc_blocks=1,
                                                                seed=4))
    assert len(calls) == 3


def test_a_folder_named_like_the_partial_results_is_never_removed(shared_data, tmp_path):
    """``<out>.partial`` holding what no interrupted run wrote (here a model directory, the input itself) is
    refused, on the command line before anything runs and in the library before anything is removed."""
    if not (BASE_LM / "config.json").is_file():
        pytest.skip("no shipped base LM")
    import shutil

    from click.testing import CliRunner

    from collapse_sim.cli import main

    model = tmp_path / "mm.partial"
    shutil.copytree(BASE_LM, model)
    before = sorted(p.name for p in model.iterdir())
    r = CliRunner().invoke(main, ["pages", "--lm", str(model), "--out", str(tmp_path / "mm"), "--n", "3", "--quiet"])
    assert r.exit_code == 2 and "overlaps the input" in r.output, r.output
    (tmp_path / "other.partial").mkdir()
    (tmp_path / "other.partial" / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="holds notes.txt, which no interrupted run of pages wrote"):
        write_pages(str(BASE_LM), tmp_path / "other", PagesConfig(n=3, split="eval", prompt_tokens=16, doc_blocks=1))
    assert sorted(p.name for p in model.iterdir()) == before and (tmp_path / "other.partial" / "notes.txt").exists()
