"""Inputs are never lost or destroyed: an input inside --out is refused, Parquet keeps every field, a deeply
nested JSON line or a bad line of a .txt file is one error record, on both engines."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hygiene.cli import main
from hygiene.config import FilterConfig, load_config
from hygiene.errors import UserInputError
from hygiene.filter_run import run_filter
from hygiene.records import ReadOptions, discover_shards, jsonl_to_parquet, read_shard, shards_outside
from gopher_docs import make_doc  # noqa: E402


def _config(**assignments) -> FilterConfig:
    return load_config(overrides={"synthetic.enabled": False, "checkpoint_seconds": 0.0, **assignments})


def _write_jsonl(path: Path, records: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _filter(*args: str) -> str:
    """The output of a ``hygiene filter`` that must fail with a one-line error, never a traceback."""
    result = CliRunner().invoke(main, ["filter", *args, "--no-synthetic", "--no-progress"])
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    return result.output


def _accounted(stats: dict) -> None:
    assert stats["records_in"] == stats["kept"] + stats["rejected"] + stats["errors"]


# -- 1. an input inside --out ------------------------------------------------------------------------
def test_a_file_named_inside_out_is_refused_and_never_replaced(tmp_path: Path) -> None:
    out = tmp_path / "o"
    _write_jsonl(out / "kept.jsonl", [{"text": make_doc(i)} for i in range(3)])
    _write_jsonl(tmp_path / "other.jsonl", [{"text": make_doc(10)}])
    before = (out / "kept.jsonl").read_bytes()
    message = _filter(str(out / "kept.jsonl"), str(tmp_path / "other.jsonl"), "--out", str(out), "--overwrite")
    assert f"input {out / 'kept.jsonl'} lies inside the output folder {out}" in message
    assert "choose another --out" in message
    assert (out / "kept.jsonl").read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["kept.jsonl"]


def test_a_directory_named_as_out_is_refused_not_skipped(tmp_path: Path) -> None:
    d = tmp_path / "indir"
    _write_jsonl(d / "a.jsonl", [{"text": make_doc(i)} for i in range(3)])
    _write_jsonl(tmp_path / "base.jsonl", [{"text": make_doc(10)}])
    message = _filter(str(d), str(tmp_path / "base.jsonl"), "--out", str(d))
    assert f"input {d} lies inside the output folder {d}" in message
    assert sorted(p.name for p in d.iterdir()) == ["a.jsonl"]


def test_a_glob_match_inside_out_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "o"
    _write_jsonl(out / "x.jsonl", [{"text": make_doc(0)}])
    message = _filter(str(out / "*.jsonl"), "--out", str(out))
    assert f"input {out / 'x.jsonl'} lies inside the output folder" in message


def test_a_file_named_inside_out_is_refused_even_when_an_input_directory_also_holds_it(tmp_path: Path) -> None:
    crawl = tmp_path / "crawl"
    _write_jsonl(crawl / "a.jsonl", [{"text": make_doc(0)}])
    _write_jsonl(crawl / "clean" / "x.jsonl", [{"text": make_doc(1)}])
    shards = discover_shards([crawl, crawl / "clean" / "x.jsonl"])
    with pytest.raises(UserInputError, match="input .*x.jsonl lies inside the output folder"):
        shards_outside(shards, crawl / "clean")


def test_out_inside_an_input_directory_still_skips_the_runs_own_outputs(tmp_path: Path) -> None:
    crawl = tmp_path / "crawl"
    _write_jsonl(crawl / "a.jsonl", [{"text": make_doc(i)} for i in range(4)])
    first = run_filter([crawl], crawl / "clean", _config(), progress=False)
    again = run_filter([crawl], crawl / "clean", _config(), overwrite=True, progress=False)
    assert first["records_in"] == again["records_in"] == 4
    names = [s.name for s in shards_outside(discover_shards([crawl]), crawl / "clean")]
    assert names == [(crawl / "a.jsonl").as_posix()]


@pytest.mark.slow
@pytest.mark.ray
def test_ray_refuses_an_input_inside_out(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from hygiene.ray_engine import run_filter_ray

    _write_jsonl(tmp_path / "o" / "kept.jsonl", [{"text": make_doc(0)}])
    with pytest.raises(UserInputError, match="lies inside the output folder"):
        run_filter_ray([tmp_path / "o" / "kept.jsonl"], tmp_path / "o", _config(), overwrite=True, progress=False)


# -- 2. Parquet keeps every field -------------------------------------------------------------------
def test_parquet_keeps_a_field_first_seen_late_in_a_chunk_or_in_a_later_chunk(tmp_path: Path) -> None:
    rows = [{"text": "a"}, {"text": "b", "late": 1}, {"text": "c", "meta": {"x": 1}},
            {"text": "d", "meta": {"y": "z"}, "next_chunk": True}, {"text": "e"}]
    src = tmp_path / "in.jsonl"
    _write_jsonl(src, rows)
    import pyarrow.parquet as pq

    for chunk in (2, 3, 10):  # the late fields inside a chunk, and in a later chunk than the first
        jsonl_to_parquet(src, tmp_path / f"out{chunk}.parquet", chunk=chunk)
        table = pq.read_table(tmp_path / f"out{chunk}.parquet")
        assert table.column_names == ["text", "late", "meta", "next_chunk"]
        got = table.to_pylist()
        assert [r["late"] for r in got] == [None, 1, None, None, None]
        assert [r["meta"] for r in got] == [None, None, {"x": 1, "y": None}, {"x": None, "y": "z"}, None]
        assert [r["next_chunk"] for r in got] == [None, None, None, True, None]


def test_format_parquet_keeps_a_field_only_the_last_record_has(tmp_path: Path) -> None:
    records = [{"text": make_doc(i)} for i in range(5)]
    records[-1]["extra"] = "late"
    _write_jsonl(tmp_path / "in.jsonl", records)
    result = CliRunner().invoke(main, ["filter", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "o"),
                                       "--format", "parquet", "--annotate-only", "--no-synthetic", "--no-progress"])
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    kept = pq.read_table(tmp_path / "o" / "kept.parquet").to_pylist()
    assert [r.get("extra") for r in kept] == [None] * 4 + ["late"]


# -- 3. a deeply nested JSON line -------------------------------------------------------------------
def _nested(depth: int) -> str:
    """A JSON object line whose ``a`` holds ``depth`` nested lists."""
    return '{"text": "' + make_doc(0) + '", "a": ' + "[" * depth + "]" * depth + "}"


def _deep_corpus(d: Path) -> None:
    """One shard with an ordinary line, lines nested too deeply for the limit or for Python, and one that fits."""
    d.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"text": make_doc(1)}), _nested(1000), _nested(100_000), _nested(200), _nested(20)]
    (d / "deep.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_deeply_nested_json_line_is_an_error_record_not_a_crash(tmp_path: Path) -> None:
    _deep_corpus(tmp_path / "in")
    stats = run_filter([tmp_path / "in"], tmp_path / "o", _config(**{"output.annotate_only": True}), progress=False)
    errors = _lines(tmp_path / "o" / "errors.jsonl")
    assert [(e["line"], e["error"]) for e in errors] == [(n, "invalid JSON: nested deeper than 128 levels")
                                                         for n in (2, 3, 4)]
    assert all(e["raw"].startswith('{"text": ') for e in errors)
    assert stats["records_in"] == 5 and stats["kept"] == 2
    _accounted(stats)


def test_json_error_text_says_at_once(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text('{"text": "a\x01b"}\n', encoding="utf-8")
    [item] = read_shard(discover_shards([tmp_path / "c.jsonl"])[0])
    assert item.error == "invalid JSON: Invalid control character at column 12"


# -- 4. invalid UTF-8 in a .txt file costs its own line -------------------------------------------
def _bad_txt(path: Path) -> None:
    """15 lines, an invalid byte on line 11."""
    lines = [make_doc(i).replace("\n", " ").encode() for i in range(15)]
    lines[10] = b"bad \xff byte on line eleven"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_a_bad_line_of_a_txt_file_is_its_own_error_with_its_line(tmp_path: Path) -> None:
    _bad_txt(tmp_path / "in" / "t.txt")
    stats = run_filter([tmp_path / "in"], tmp_path / "o", _config(txt_unit="line", **{"output.annotate_only": True}),
                       progress=False)
    errors = _lines(tmp_path / "o" / "errors.jsonl")
    assert [(e["line"], e["error"], e["raw"]) for e in errors] == [
        (11, "invalid UTF-8 at byte 4", "bad \ufffd byte on line eleven")]
    assert stats["records_in"] == 15 and stats["kept"] == 14
    _accounted(stats)


def test_a_bad_paragraph_or_file_names_the_line_of_the_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes(b"first paragraph\n\nsecond\nstill \xff second\n\nthird\n")
    shard = discover_shards([path])[0]
    items = list(read_shard(shard, ReadOptions(txt_unit="paragraph")))
    assert [(i.line, i.error) for i in items] == [(1, None), (3, "invalid UTF-8 at byte 13 (line 4)"), (6, None)]
    whole = list(read_shard(shard, ReadOptions(txt_unit="file")))
    assert [(i.line, i.error) for i in whole] == [(1, "invalid UTF-8 at byte 30 (line 4)")]


# -- the Ray engine: the same records and errors --------------------------------------------------
@pytest.mark.slow
@pytest.mark.ray
def test_ray_reads_deep_json_and_bad_txt_lines_as_the_local_engine_does(ray_cluster, tmp_path: Path) -> None:
    from hygiene.ray_engine import run_filter_ray

    _deep_corpus(tmp_path / "in")
    _bad_txt(tmp_path / "in" / "t.txt")
    config = _config(txt_unit="line", **{"output.annotate_only": True})
    local = run_filter([tmp_path / "in"], tmp_path / "local", config, progress=False)
    ray = run_filter_ray([tmp_path / "in"], tmp_path / "ray", config, progress=False)
    for stats in (local, ray):
        assert (stats["records_in"], stats["kept"], stats["errors"]) == (20, 16, 4)
    key = lambda e: (e["shard"], e["line"])  # noqa: E731
    assert sorted(_lines(tmp_path / "ray" / "errors.jsonl"), key=key) == \
        sorted(_lines(tmp_path / "local" / "errors.jsonl"), key=key)


# -- 5. earlier runs' outputs inside an input directory are not the corpus --------------------------
def test_an_earlier_runs_output_inside_an_input_directory_is_not_read(tmp_path: Path) -> None:
    crawl = tmp_path / "crawl"
    _write_jsonl(crawl / "a.jsonl", [{"text": make_doc(i)} for i in range(4)])
    run_filter([crawl], crawl / "run1", _config(), progress=False)
    (crawl / "run2" / ".partial").mkdir(parents=True)  # an interrupted one
    _write_jsonl(crawl / "run2" / ".partial" / "kept.jsonl", [{"text": make_doc(9)}])
    again = run_filter([crawl], tmp_path / "elsewhere", _config(), progress=False)
    assert (again["records_in"], again["errors"], again["rejected"]) == (4, 0, 0)
    message = _filter(str(crawl / "run1"), "--out", str(tmp_path / "x"))
    assert "is a filter run's output folder, not a corpus" in message and "kept.jsonl" in message
    alone = run_filter([crawl / "run1" / "kept.jsonl"], tmp_path / "second", _config(), progress=False)
    assert alone["records_in"] == 4  # a run's file, named, is read


def test_a_glob_matching_a_directory_searches_it(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "in" / "part-1" / "a.jsonl", [{"text": make_doc(i)} for i in range(3)])
    _write_jsonl(tmp_path / "in" / "b.jsonl", [{"text": make_doc(9)}])
    names = sorted(Path(s.name).name for s in discover_shards([str(tmp_path / "in" / "*")]))
    assert names == ["a.jsonl", "b.jsonl"]


def test_a_dataset_dict_inside_a_directory_is_read_once(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    split = {"train": [make_doc(i) for i in range(5)], "test": [make_doc(i) for i in range(5, 8)]}
    datasets.DatasetDict({k: datasets.Dataset.from_dict({"text": v}) for k, v in split.items()}).save_to_disk(
        str(tmp_path / "in" / "dd"))
    stats = run_filter([tmp_path / "in"], tmp_path / "o", _config(), progress=False)
    assert (stats["records_in"], stats["kept"]) == (8, 8)


def test_out_inside_a_saved_dataset_folder_resumes(tmp_path: Path) -> None:
    """The inputs' state that a resume checks leaves out a run's own output folder, growing inside them."""
    from hygiene.records import file_states

    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": [make_doc(i) for i in range(4)]}).save_to_disk(str(tmp_path / "ds"))
    before = file_states(tmp_path / "ds")
    (tmp_path / "ds" / "out" / ".partial").mkdir(parents=True)
    (tmp_path / "ds" / "out" / ".partial" / "kept.jsonl").write_text("{}\n")
    assert file_states(tmp_path / "ds") == before
    (tmp_path / "ds" / "extra.json").write_text("{}")
    assert file_states(tmp_path / "ds") != before


# -- 6. lone surrogates: valid JSON, not Unicode --------------------------------------------------
def test_a_lone_surrogate_is_judged_as_u_fffd_and_written_as_it_came(tmp_path: Path) -> None:
    """A JSON `\\ud800` escape gives a string no UTF-8 encoder, tokenizer or hasher takes: the detector,
    the report and `score` read U+FFFD in its place, and the record comes out unchanged."""
    from tiny_detector import save_tiny_detector

    from hygiene.report import write_report
    from hygiene.score_file import score_jsonl

    texts = [make_doc(0) + " \ud800 lone", make_doc(1) + " \udc00", "short \ud83d"]
    _write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    config = _config(**save_tiny_detector(tmp_path))
    stats = run_filter([tmp_path / "in.jsonl"], tmp_path / "o", config, progress=False)
    assert (stats["records_in"], stats["errors"], stats["kept"] + stats["rejected"]) == (3, 0, 3)
    written = _lines(tmp_path / "o" / "kept.jsonl") + _lines(tmp_path / "o" / "rejected.jsonl")
    assert sorted(r["text"] for r in written) == sorted(texts)
    assert "\ufffd" not in (tmp_path / "o" / "rejected.jsonl").read_text(encoding="utf-8")
    page = write_report(tmp_path / "o").read_text(encoding="utf-8")
    assert "short \ufffd" in page
    seen: list[str] = []

    def score(batch: list[str]) -> dict:
        seen.extend(t.encode("utf-8").decode("utf-8") for t in batch)  # fails on a surrogate
        return {"length": [len(t) for t in batch]}

    counts = score_jsonl(tmp_path / "in.jsonl", tmp_path / "s.jsonl", score, progress=False)
    assert (counts.rows, counts.errors) == (3, 0) and all("\ufffd" in t for t in seen)


# -- 7. a text where texts are asked for ------------------------------------------------------------
def test_one_string_where_many_texts_are_asked_for_is_a_type_error(tmp_path: Path) -> None:
    """Iterating a string gives its characters: each would be scored or filtered as a text of its own."""
    from tiny_detector import save_tiny_detector
    from tiny_lm import tiny_lms

    import hygiene
    from hygiene.detector import load_detector

    save_tiny_detector(tmp_path)
    detector = load_detector(tmp_path / "det", device="cpu")
    (lm,) = tiny_lms(1)
    for call in (lambda: hygiene.filter_records("one text", _config()),
                 lambda: detector.predict_proba("one text"), lambda: detector.predict("one text"),
                 lambda: hygiene.score_texts("one text", lm)):
        with pytest.raises(TypeError, match=r"not a single str \(wrap it: \[text\]\)"):
            call()
    assert len(detector.predict_proba(["one text", "another"])) == 2
    assert [d.stage for d in hygiene.filter_records(["one text"], _config())] == ["quality"]


# -- 8. the filter's own fields never hide the record's -------------------------------------------
def test_the_records_own_hygiene_fields_are_kept(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "in.jsonl", [{"text": "too short", "hygiene": 1, "input_hygiene": 2}])
    run_filter([tmp_path / "in.jsonl"], tmp_path / "o", _config(), progress=False)
    (row,) = _lines(tmp_path / "o" / "rejected.jsonl")
    assert (row["input_input_hygiene"], row["input_hygiene"], row["hygiene"]["stage"]) == (1, 2, "quality")


def test_filter_dataset_refuses_a_dataset_holding_its_columns(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    import hygiene

    ds = datasets.Dataset.from_dict({"text": [make_doc(0)], "hygiene_stage": ["mine"]})
    with pytest.raises(UserInputError, match=r"already has the filter's column\(s\) hygiene_stage"):
        hygiene.filter_dataset(ds, _config())


def test_a_group_field_no_record_has_is_warned_of(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "in.jsonl", [{"text": make_doc(i), "site": "a"} for i in range(3)])
    for field, warned in (("sitte", True), ("site", False)):
        result = CliRunner().invoke(main, ["filter", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / field),
                                           "--no-synthetic", "--no-progress", "--group-field", field])
        assert result.exit_code == 0, result.output
        assert (f"warning: no record has the group field '{field}'" in result.output) == warned


# -- 9. Hugging Face datasets as pipelines use them ---------------------------------------------------
def test_filter_dataset_on_empty_formatted_and_id_less_datasets() -> None:
    datasets = pytest.importorskip("datasets")
    import hygiene

    config = _config()
    kept, rejected = hygiene.filter_dataset(datasets.Dataset.from_dict({"text": []}), config)
    assert len(kept) == len(rejected) == 0 and "hygiene_stage" in rejected.column_names
    assert kept.column_names == ["text"]
    ds = datasets.Dataset.from_dict({"text": [make_doc(0), make_doc(0), "too short"], "i": [0, 1, 2]})
    plain = hygiene.filter_dataset(ds, config)
    for shown in ("pandas", "arrow", "numpy"):
        kept, rejected = hygiene.filter_dataset(ds.with_format(shown), config)
        assert kept.format["type"] == shown
        assert kept.with_format(None)["i"] == plain[0]["i"] == [0]
        assert rejected.with_format(None)["i"] == plain[1]["i"] == [1, 2]
    with pytest.raises(UserInputError, match="dataset has no id column 'uid'"):
        hygiene.filter_dataset(ds, _config(id_field="uid"))
    with pytest.raises(TypeError, match=r"not a single dict \(wrap it: \[record\]\)"):
        hygiene.filter_records({"text": make_doc(0)}, config)


def test_annotating_drops_nothing_from_a_dataset_or_its_stream() -> None:
    datasets = pytest.importorskip("datasets")
    import hygiene

    ds = datasets.Dataset.from_dict({"text": [make_doc(0), None, "x"]})
    config = _config(**{"output.annotate_only": True})
    for source in (ds, ds.to_iterable_dataset()):
        kept, rejected = hygiene.filter_dataset(source, config)
        assert len(list(kept)) == 3 and len(list(rejected)) == 0


def test_a_stream_read_by_several_dataloader_workers_is_refused_not_thinned() -> None:
    """Each worker would read a share of the source into its own dedup index: rows vanished without a word."""
    datasets = pytest.importorskip("datasets")
    from torch.utils.data import DataLoader

    import hygiene

    source = datasets.Dataset.from_dict({"text": [make_doc(i) for i in range(8)]}).to_iterable_dataset(num_shards=4)
    kept, _ = hygiene.filter_dataset(source, _config())
    assert len(list(DataLoader(kept, batch_size=4, num_workers=1))) == 2
    with pytest.raises(Exception, match="read them with num_workers=1, not 2"):
        list(DataLoader(kept, batch_size=4, num_workers=2))


def test_a_dataset_dict_or_a_detector_stand_in_without_its_parts_is_one_line() -> None:
    datasets = pytest.importorskip("datasets")
    import hygiene

    splits = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": [make_doc(0)]})})
    with pytest.raises(UserInputError, match=r"a DatasetDict of splits \['train'\]: filter one split at a time"):
        hygiene.filter_dataset(splits, _config())

    class NoThreshold:
        def predict_proba(self, texts):
            return [[0.5, 0.5] for _ in texts]

    config = load_config(overrides={"checkpoint_seconds": 0.0})
    with pytest.raises(UserInputError, match="NoThreshold has no threshold_"):
        list(hygiene.filter_records([make_doc(0)], config, detector=NoThreshold()))
    with pytest.raises(UserInputError, match="needs a predict_proba"):
        list(hygiene.filter_records([make_doc(0)], config, detector=object()))
    assert len(list(hygiene.filter_records([make_doc(0)], _config(**{"synthetic.enabled": True,
                                                                        "synthetic.threshold": 0.9}),
                                           detector=NoThreshold()))) == 1


def test_an_unreadable_records_decision_keeps_its_id() -> None:
    """Its position would be no id at all where ids are the records' own (and could be another record's)."""
    import hygiene

    config = _config(id_field="id")
    decisions = list(hygiene.filter_records([{"text": None, "id": "zz"}, {"text": make_doc(0), "id": 0},
                                             "a string holding id", {"text": make_doc(1)}], config))
    assert [d.id for d in decisions] == ["zz", "0", "2", "3"]
    assert [d.stage for d in decisions] == ["error", None, "error", "error"]
    assert decisions[2].reason == "missing id field 'id'"
