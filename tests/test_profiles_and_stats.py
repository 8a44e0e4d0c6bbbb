"""Profiles (human by default, gopher as published), rejections naming every failed rule, per-stage and
per-group stats, .txt units, --limit, and the one-line errors of runs with nothing to filter."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gopher_docs import make_doc
from hygiene.cli import main
from hygiene.config import FilterConfig, load_config
from hygiene.errors import UserInputError
from hygiene.filter_run import run_filter
from hygiene.filtering import filter_records

#: a Usenet reply: quoted lines, an address, a signature bar; human, and failing Gopher's alphabetic-words rule
POST = ("In article <1993Apr5.123@news.cs.umd.edu> jsmith@cs.umd.edu (John Smith) writes:\n"
        + "\n".join(f"> > {i} 12 34 56 -- >> 78 90 || >" for i in range(12)) + "\n\n"
        "I tried that with my own board and it worked fine once I set the jumpers the way the manual says. "
        "The trick is to have the interrupt free before you boot, and to keep the cable short.\n"
        "-- \n+--+--+--+ 555-1234 +--+--+ | | | | 0x0F 0x10 0x11 | | |\n")


def _no_detector(**overrides) -> dict:
    return {"synthetic.enabled": False, **overrides}


def test_gopher_profile_is_the_published_defaults_and_human_is_the_default() -> None:
    assert load_config(profile="gopher").to_dict() == {**FilterConfig().to_dict(), "profile": "gopher"}
    human = load_config()
    assert human.profile == "human" and human.quality.min_alpha_words_ratio is None
    assert human.exact_dedup.enabled and human.near_dedup.enabled and human.synthetic.enabled


def test_a_config_file_extends_its_profile(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("profile: gopher\nquality: {min_words: 100}\n")
    config = load_config(path)
    assert config.profile == "gopher" and config.quality.min_words == 100
    assert config.quality.min_alpha_words_ratio == FilterConfig().quality.min_alpha_words_ratio
    assert load_config(path, profile="human").quality.min_alpha_words_ratio is None  # --profile wins
    assert load_config(path, assignments=["profile=human"]).to_dict() == load_config(path, profile="human").to_dict()
    with pytest.raises(UserInputError, match="unknown profile 'nope'"):
        load_config(profile="nope")


def test_human_profile_keeps_a_quoted_post_that_gopher_drops() -> None:
    gopher = next(filter_records([POST], load_config(overrides=_no_detector(), profile="gopher")))
    human = next(filter_records([POST], load_config(overrides=_no_detector())))
    assert (gopher.kept, gopher.stage) == (False, "quality") and "non_alpha_words" in gopher.failed
    assert human.kept


def test_a_rejection_names_every_rule_it_fails(tmp_path: Path) -> None:
    text = "word " * 60  # few stop words, repeated n-grams
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": text}) + "\n")
    run_filter([tmp_path / "in.jsonl"], tmp_path / "out", load_config(overrides=_no_detector(), profile="gopher"),
               progress=False)
    note = json.loads((tmp_path / "out" / "rejected.jsonl").read_text())["hygiene"]
    assert note["reason"] == "few_stop_words" == note["failed"][0]
    assert {"top_2gram", "dup_5gram", "dup_10gram"} <= set(note["failed"])


def test_stats_per_stage_and_group(tmp_path: Path) -> None:
    docs = [make_doc(i) for i in range(6)]
    records = ([{"text": t, "source": "web"} for t in docs[:4]] + [{"text": docs[0], "source": "web"}]
               + [{"text": docs[4], "source": "forum"}, {"text": "", "source": "forum"}, {"oops": 1, "source": "forum"}])
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    stats = run_filter([tmp_path / "in.jsonl"], tmp_path / "out", load_config(overrides=_no_detector()),
                       progress=False)
    stages = {s["name"]: s for s in stats["stages"]}
    assert [s["name"] for s in stats["stages"]] == ["normalize", "input", "exact_dedup", "quality", "near_dedup"]
    assert (stages["input"]["records_in"], stages["input"]["records_out"]) == (7, 6)
    assert (stages["exact_dedup"]["records_in"], stages["exact_dedup"]["records_out"]) == (6, 5)
    assert stages["exact_dedup"]["reasons"] == {"duplicate": 1}
    assert stages["exact_dedup"]["by_group"] == {"web": {"duplicate": 1}}
    assert stages["exact_dedup"]["examples"] == {"duplicate": [f"{tmp_path / 'in.jsonl'}:5"]}
    assert stages["input"]["by_group"] == {"forum": {"empty_text": 1}}
    assert stats["groups"] == {"web": {"records_in": 5, "kept": 4, "rejected": 1, "errors": 0},
                               "forum": {"records_in": 3, "kept": 1, "rejected": 1, "errors": 1}}
    assert all(s["seconds"] >= 0 for s in stats["stages"]) and stats["profile"] == "human"


@pytest.mark.parametrize(("unit", "texts"), [("file", 1), ("line", 4), ("paragraph", 2)])
def test_txt_units(tmp_path: Path, unit: str, texts: int) -> None:
    body = f"{make_doc(1)}\n{make_doc(2)}\n\n{make_doc(3)}\n{make_doc(4)}\n"
    (tmp_path / "a.txt").write_text(body)
    stats = run_filter([tmp_path / "a.txt"], tmp_path / "out", load_config(overrides=_no_detector(txt_unit=unit)),
                       progress=False)
    assert stats["records_in"] == texts
    lines = [json.loads(x)["text"] for x in (tmp_path / "out" / "kept.jsonl").read_text().splitlines()]
    assert "".join(lines).replace("\n", "") == body.replace("\n", "")


def test_limit_reads_only_the_first_records(tmp_path: Path) -> None:
    for s in range(2):
        (tmp_path / f"s{s}.jsonl").write_text("".join(json.dumps({"text": make_doc(10 * s + i)}) + "\n"
                                                      for i in range(5)))
    stats = run_filter([tmp_path], tmp_path / "out", load_config(overrides=_no_detector(limit=7, batch_size=2)),
                       progress=False)
    assert stats["records_in"] == 7
    ids = [json.loads(x)["text"] for x in (tmp_path / "out" / "kept.jsonl").read_text().splitlines()]
    assert ids == [make_doc(i) for i in range(5)] + [make_doc(10), make_doc(11)]


def test_nothing_to_filter_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "wrong.jsonl").write_text(json.dumps({"body": make_doc(1)}) + "\n")
    runner = CliRunner()
    empty = runner.invoke(main, ["filter", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "o1"),
                                 "--no-synthetic", "--no-progress"])
    assert empty.exit_code == 1 and "no records in" in empty.output and len(empty.output.strip().splitlines()) == 2
    wrong = runner.invoke(main, ["filter", str(tmp_path / "wrong.jsonl"), "--out", str(tmp_path / "o2"),
                                 "--no-synthetic", "--no-progress"])
    assert wrong.exit_code == 1 and "every one of the 1 records is an error (a wrong --text-field?)" in wrong.output
    (tmp_path / "ids.jsonl").write_text(json.dumps({"text": make_doc(1), "id": None}) + "\n")
    null_id = runner.invoke(main, ["filter", str(tmp_path / "ids.jsonl"), "--out", str(tmp_path / "o3"),
                                   "--id-field", "id", "--no-synthetic", "--no-progress"])
    assert null_id.exit_code == 1 and "records is an error (a wrong --id-field?)" in null_id.output
    assert "id field 'id' is null" in (tmp_path / "o3" / "errors.jsonl").read_text()
    ids = [7, "a", None, [1], {"k": 1}, 1.5, True]
    (tmp_path / "ids.jsonl").write_text("".join(json.dumps({"text": make_doc(i), "id": v}) + "\n"
                                                for i, v in enumerate(ids)))
    mixed = runner.invoke(main, ["filter", str(tmp_path / "ids.jsonl"), "--out", str(tmp_path / "o5"), "--id-field",
                                 "id", "--no-synthetic", "--no-progress", "--annotate"])
    assert mixed.exit_code == 0, mixed.output
    kept = [json.loads(x)["hygiene"]["id"] for x in (tmp_path / "o5" / "kept.jsonl").read_text().splitlines()]
    errors = [json.loads(x)["error"] for x in (tmp_path / "o5" / "errors.jsonl").read_text().splitlines()]
    assert kept == ["7", "a"] and errors == ["id field 'id' is null"] + [
        f"id field 'id' is {kind}, not a string or integer" for kind in ("list", "dict", "float", "bool")]
    (tmp_path / "bad.jsonl").write_text("{broken\n")
    broken = runner.invoke(main, ["filter", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o4"),
                                  "--no-synthetic", "--no-progress"])
    assert broken.exit_code == 1 and "(the first: invalid JSON" in broken.output and "--text-field" not in broken.output


def test_an_interruption_before_any_output_does_not_suggest_resume(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": make_doc(1)}) + "\n")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("hygiene.filter_run.run_filter", interrupted)
    result = CliRunner().invoke(main, ["filter", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "new"),
                                       "--no-synthetic"])
    assert result.exit_code == 1 and "interrupted before anything was written" in result.output
    assert "--resume" not in result.output


def test_human_profile_drops_a_product_listing_and_keeps_prose_with_a_list() -> None:
    listing = "\n".join(f"\u2022 Item {1000 + 37 * i} - ${5 + i}.99 - In stock, ships in {i % 5 + 1} days"
                        for i in range(30))
    prose = (POST.split("\n\n")[0] + "\n\nWhat we packed for the trip:\n- a tent\n- two stoves\n- the maps\n\n"
             "We set out at dawn and reached the ridge by noon, then walked down to the lake for the night.")
    human, gopher = load_config(overrides=_no_detector()), load_config(profile="gopher", overrides=_no_detector())
    dropped, kept = filter_records([listing, prose], human)
    assert (dropped.stage, dropped.reason) == ("quality", "bullet_lines") and kept.kept
    assert human.quality.max_bullet_lines_ratio == gopher.quality.max_bullet_lines_ratio == 0.9


def test_human_profile_caps_a_record_at_a_million_words_counting_only_its_words() -> None:
    from hygiene.quality import quality_scores

    human = load_config(overrides=_no_detector())
    dump = " ".join(f"w{i % 5000}" for i in range(1_000_001))
    book = " ".join(f"w{i % 5000}" for i in range(669_000))  # the pool's longest book
    too_long, kept = filter_records([dump, book], human)
    assert (too_long.stage, too_long.reason) == ("quality", "too_many_words")
    assert kept.reason != "too_many_words"
    scores = quality_scores([dump], human.quality, complete=False)
    assert scores["words"][0] == 1_000_001 and np.isnan(scores["dup_5gram_char_frac"][0])  # nothing else computed


def test_human_profile_removes_every_duplicate_of_the_example_crawl() -> None:
    import gzip

    crawl = Path(__file__).resolve().parent.parent / "examples" / "crawl"
    if not (crawl / "truth.jsonl.gz").is_file():
        pytest.skip("the example crawl is not built")
    with gzip.open(crawl / "crawl.jsonl.gz", "rt") as fh:
        records = [json.loads(line) for line in fh]
    with gzip.open(crawl / "truth.jsonl.gz", "rt") as fh:
        kind = {t["id"]: t["kind"] for t in map(json.loads, fh)}
    config = load_config(overrides=_no_detector(id_field="id"))
    stage = {d.id: d.stage for d in filter_records(records, config)}
    for dup, by in (("exact_duplicate", {"exact_dedup"}), ("near_duplicate", {"exact_dedup", "near_dedup"})):
        ids = [i for i, k in kind.items() if k == dup]
        assert ids and all(stage[i] in by for i in ids), dup
    humans = [i for i, k in kind.items() if k == "human"]
    assert sum(stage[i] is None for i in humans) / len(humans) >= 0.97


def test_sample_is_seeded_and_in_input_order(tmp_path: Path) -> None:
    docs = [make_doc(i) for i in range(10)]
    (tmp_path / "in").mkdir()
    for s in range(2):
        (tmp_path / "in" / f"s{s}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n"
                                                             for t in docs[5 * s:5 * s + 5]))

    def kept(out: str, **overrides) -> list[str]:
        stats = run_filter([tmp_path / "in"], tmp_path / out, load_config(overrides=_no_detector(sample=4, **overrides)),
                           progress=False)
        assert stats["records_in"] == 4
        return [json.loads(x)["text"] for x in (tmp_path / out / "kept.jsonl").read_text().splitlines()]

    first = kept("a")
    assert first == kept("b") and first == sorted(first, key=docs.index)
    assert first != kept("c", sample_seed=1)


def test_sample_reads_past_a_truncated_gzip_shard(tmp_path: Path) -> None:
    import gzip

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("".join(json.dumps({"text": make_doc(i)}) + "\n" for i in range(6)))
    whole = gzip.compress("".join(json.dumps({"text": make_doc(10 + i)}) + "\n" for i in range(40)).encode())
    (tmp_path / "in" / "b.jsonl.gz").write_bytes(whole[: len(whole) * 2 // 3])  # cut off mid-stream
    full = run_filter([tmp_path / "in"], tmp_path / "all", load_config(overrides=_no_detector()), progress=False)
    assert full["errors"] == 1  # the records before the cut are read, the rest is one error
    n = full["records_in"]
    stats = run_filter([tmp_path / "in"], tmp_path / "s", load_config(overrides=_no_detector(sample=n)),
                       progress=False)
    assert stats["records_in"] == n and stats["kept"] + stats["rejected"] + stats["errors"] == n
    assert (tmp_path / "s" / "kept.jsonl").read_text() == (tmp_path / "all" / "kept.jsonl").read_text()


def test_shard_sizes_give_the_progress_total(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hygiene.records import ReadOptions, discover_shards, shard_sizes

    (tmp_path / "a.jsonl").write_text("{}\n\n{}\nnot json\n")
    pq.write_table(pa.table({"text": ["x", "y"]}), tmp_path / "b.parquet")
    (tmp_path / "c.txt").write_text("one\ntwo\n\nthree\n")
    shards = discover_shards([tmp_path])
    assert shard_sizes(shards) == [3, 2, 1]
    assert shard_sizes(shards, ReadOptions(txt_unit="line")) == [3, 2, 3]
    assert shard_sizes(shards, max_bytes=1) is None


def test_the_stats_name_the_largest_groups_whatever_order_records_come_in() -> None:
    """120 groups (group g holds g + 1 records, some with a P(machine)): written in two orders, the stats name
    the same 50 groups, the largest, and count the rest together, histograms included (the Ray engine writes in
    another order than the local one)."""
    import random

    from hygiene.run_output import MAX_GROUPS, OTHER_GROUPS, Counts, Outcome, named_groups

    outcomes = [Outcome(id=f"{g}:{i}", n=i, group=f"g{g:03d}", p_machine=(i % 10) / 10 if g % 2 else None)
                for g in range(120) for i in range(g + 1)]
    shown = []
    for seed in (0, 1):
        random.Random(seed).shuffle(outcomes)
        counts = Counts()
        for outcome in outcomes:
            counts.add("kept", outcome)
        shown.append(named_groups(counts))
    (groups, hists), again = shown
    assert (groups, hists) == again
    assert set(groups) == {f"g{g:03d}" for g in range(120 - MAX_GROUPS, 120)} | {OTHER_GROUPS}
    assert groups[OTHER_GROUPS]["records_in"] == sum(g + 1 for g in range(120 - MAX_GROUPS))
    assert sum(map(sum, hists.values())) == sum(g + 1 for g in range(120) if g % 2)


def test_load_config_arguments_of_the_wrong_shape_are_named() -> None:
    with pytest.raises(TypeError, match="overrides must be a mapping .* assignments="):
        load_config(None, ["synthetic.enabled=false"])
    with pytest.raises(TypeError, match="assignments must be a list"):
        load_config(assignments="synthetic.enabled=false")
    assert load_config(None, {"synthetic.enabled": False}).synthetic.enabled is False
