"""A filter run over files: every record accounted for, bad input survived, resume, atomic outputs, CLI errors."""
from __future__ import annotations

import gzip
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hygiene.cli import main
from hygiene.config import FilterConfig, StageSpec, load_config
from hygiene.errors import UserInputError
from hygiene.filter_run import run_filter
from gopher_docs import make_doc  # noqa: E402
from tiny_detector import save_tiny_detector  # noqa: E402



def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _config(**assignments) -> FilterConfig:
    return load_config(overrides={"synthetic.enabled": False, "checkpoint_seconds": 0.0, **assignments})


def _write_jsonl(path: Path, records: list) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


@pytest.fixture()
def corpus(tmp_path: Path) -> tuple[Path, int]:
    """A directory with every input format and every kind of bad input; returns (dir, number of records)."""
    d = tmp_path / "crawl"
    d.mkdir()
    docs = [make_doc(i) for i in range(12)]
    near = docs[0].replace(docs[0].split()[5], "changed", 1)
    good = [{"text": t, "url": f"u{i}"} for i, t in enumerate(docs[:6])] + [{"text": docs[0]}, {"text": near}]
    _write_jsonl(d / "a.jsonl", good)  # 8 records: one exact and one near duplicate
    bad = (
        "\ufeff" + json.dumps({"text": docs[6]}) + "\n"  # BOM on the first line
        + "{not json\n"
        + json.dumps({"title": "no text"}) + "\n"
        + json.dumps({"text": 42}) + "\n"
        + json.dumps({"text": "   "}) + "\n"
        + "\n"  # blank line: not a record
        + json.dumps({"text": "\u200b\u200b"}) + "\n"  # empty once normalised
        + json.dumps({"text": "\n".join(["line"] * 200_000)}) + "\n"  # a huge number of lines
    )
    raw = bad.encode("utf-8") + b'{"text": "caf\xe9 latin-1 byte"}\n'  # invalid UTF-8
    (d / "b.jsonl").write_bytes(raw)
    with gzip.open(d / "c.jsonl.gz", "wt", encoding="utf-8") as fh:
        for t in docs[7:9]:
            fh.write(json.dumps({"text": t}) + "\n")
    with gzip.open(d / "t.jsonl.gz", "wb") as fh:
        fh.write(("".join(json.dumps({"text": make_doc(100 + i)}) + "\n" for i in range(50))).encode())
    full = (d / "t.jsonl.gz").read_bytes()
    (d / "t.jsonl.gz").write_bytes(full[: len(full) // 2])  # truncated .gz
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": docs[9:11], "n": [1, 2]}), d / "p.parquet")
    (d / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    (d / "doc.txt").write_text("\ufeff" + docs[11], encoding="utf-8")
    import datasets

    datasets.Dataset.from_dict({"text": [make_doc(200), docs[1]]}).save_to_disk(str(d / "saved"))
    (d / "notes.md").write_text("ignored: not a supported suffix")
    # records: 8 + 9 (b) + 2 (c) + (t: lines read before truncation + 1 error) + 2 + 1 + 1 + 2
    return d, 8 + 9 + 2 + 2 + 1 + 1 + 2


def test_every_record_is_accounted_for(corpus: tuple[Path, int], tmp_path: Path) -> None:
    d, fixed = corpus
    out = tmp_path / "out"
    stats = run_filter([d], out, _config(), progress=False)
    kept, rejected, errors = (_lines(out / f"{n}.jsonl") for n in ("kept", "rejected", "errors"))
    assert stats["records_in"] == len(kept) + len(rejected) + len(errors)
    assert (stats["kept"], stats["rejected"], stats["errors"]) == (len(kept), len(rejected), len(errors))
    truncated = [e for e in errors if e["shard"].endswith("t.jsonl.gz")]
    assert len(truncated) == 1 and "unreadable shard after line" in truncated[0]["error"]
    t_lines = int(truncated[0]["error"].split("after line ")[1].split(":")[0])
    assert stats["records_in"] == fixed + t_lines  # every line read, plus one error for the lost tail
    by = {(e["shard"].rsplit("/", 1)[-1], e["line"]): e["error"] for e in errors}
    assert by[("b.jsonl", 2)].startswith("invalid JSON")
    assert by[("b.jsonl", 3)] == "missing text field 'text'"
    assert by[("b.jsonl", 4)] == "text field 'text' is int, not a string"
    assert by[("b.jsonl", 9)].startswith("invalid UTF-8")
    assert any(k[0] == "broken.parquet" for k in by)
    reasons = {(r["hygiene"]["id"].rsplit("/", 1)[-1], r["hygiene"]["stage"], r["hygiene"]["reason"]) for r in rejected}
    assert ("a.jsonl:7", "exact_dedup", "duplicate") in reasons
    assert ("a.jsonl:8", "near_dedup", "near_duplicate") in reasons
    assert ("b.jsonl:5", "input", "empty_text") in reasons and ("b.jsonl:7", "input", "empty_text") in reasons
    assert any(k[0] == "b.jsonl:8" and k[1] == "quality" for k in reasons)  # the many-lines record
    assert any(r["hygiene"]["id"].endswith("saved:2") and r["hygiene"]["stage"] == "exact_dedup" for r in rejected)
    assert {"text": make_doc(6)} in kept  # the BOM line was read and kept unchanged
    assert sum(stats["by_stage"][s][r] for s in stats["by_stage"] for r in stats["by_stage"][s]) == len(rejected)
    assert stats["config"]["near_dedup"]["bands"] == 14 and load_config(out / "config.yaml") == _config()


@pytest.mark.slow
def test_a_20mb_document_does_not_stop_the_run(tmp_path: Path) -> None:
    words = "lorem ipsum dolor sit amet "
    text = words * (20 * 2**20 // len(words))  # 20 MB, 3.6M words
    _write_jsonl(tmp_path / "big.jsonl", [{"text": text}, {"text": make_doc(1)}])
    stats = run_filter([tmp_path / "big.jsonl"], tmp_path / "out", _config(profile="gopher"), progress=False)
    rejected = _lines(tmp_path / "out" / "rejected.jsonl")
    assert stats["kept"] == 1 and len(rejected) == 1
    assert rejected[0]["hygiene"]["reason"] == "too_many_words" and len(rejected[0]["text"]) == len(text)


def test_max_errors_stops_the_run_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text("{\n[\n" + json.dumps({"text": make_doc(0)}) + "\n")
    with pytest.raises(UserInputError, match=r"more than 1 unreadable records \(last: .*bad.jsonl:2"):
        run_filter([tmp_path / "bad.jsonl"], tmp_path / "out", _config(max_errors=1), progress=False)
    stats = run_filter([tmp_path / "bad.jsonl"], tmp_path / "o2", _config(max_errors=2), progress=False)
    assert (stats["errors"], stats["kept"]) == (2, 1)
    # the run stopped above goes on with a higher limit, as its message says
    with pytest.raises(UserInputError, match="pass --resume with a higher --max-errors"):
        run_filter([tmp_path / "bad.jsonl"], tmp_path / "out", _config(max_errors=1), resume=True, progress=False)
    resumed = run_filter([tmp_path / "bad.jsonl"], tmp_path / "out", _config(max_errors=2), resume=True,
                         progress=False)
    assert (resumed["errors"], resumed["kept"]) == (2, 1)


class FlakyDetector:
    """Fake detector: 'machine' texts score 0.9; raises once it has seen ``stop_at`` batches (an interruption)."""

    threshold_ = 0.5

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls, self.stop_at, self.seen = 0, stop_at, []

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        if self.stop_at is not None and self.calls > self.stop_at:
            raise KeyboardInterrupt
        self.seen += texts
        p = np.array([0.9 if "machine" in t else 0.1 for t in texts])
        return np.stack([1 - p, p], axis=1)


def _shards(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    for s in range(3):
        recs = [{"text": make_doc(10 * s + i) + (" machine" if i == 1 else "")} for i in range(6)]
        recs.append({"text": make_doc(0)})  # an exact duplicate of shard 0's first doc in every shard
        recs.append({"oops": 1})
        _write_jsonl(d / f"s{s}.jsonl", recs)
    return d


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    d = _shards(tmp_path)
    config = _config(**{"synthetic.enabled": True, "batch_size": 3})
    first, interrupted, resumed = FlakyDetector(), FlakyDetector(stop_at=5), FlakyDetector()
    ref = run_filter([d], tmp_path / "ref", config, detector=first, progress=False)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):  # 2 detector calls a shard: stop in the third, after one batch
        run_filter([d], out, config, detector=interrupted, progress=False)
    assert not (out / "kept.jsonl").exists() and not (out / "stats.json").exists()  # nothing final half-written
    state = json.loads((out / ".partial" / "checkpoint.json").read_text())
    assert state["done"] == [str(d / "s0.jsonl"), str(d / "s1.jsonl")]
    assert state["position"] == {str(d / "s2.jsonl"): 3}  # the third shard's first batch is done
    with pytest.raises(UserInputError, match="interrupted run"):
        run_filter([d], out, config, detector=FlakyDetector(), progress=False)
    with pytest.raises(UserInputError, match="differ"):
        run_filter([d], out, _config(**{"synthetic.enabled": True, "batch_size": 4}), resume=True,
                   detector=FlakyDetector(), progress=False)
    stats = run_filter([d], out, config, resume=True, detector=resumed, progress=False)
    assert sorted(interrupted.seen + resumed.seen) == sorted(first.seen)  # no finished batch scored again
    for name in ("kept", "rejected", "errors"):
        assert (out / f"{name}.jsonl").read_bytes() == (tmp_path / "ref" / f"{name}.jsonl").read_bytes()
    assert {k: stats[k] for k in ("records_in", "kept", "rejected", "errors", "by_stage")} == \
        {k: ref[k] for k in ("records_in", "kept", "rejected", "errors", "by_stage")}
    assert ref["by_stage"]["synthetic"]["machine_generated"] == 3 and ref["by_stage"]["exact_dedup"]["duplicate"] == 3
    assert not list(out.glob(".*")), "temporary files or the checkpoint were left behind"


def test_a_records_own_hygiene_field_is_kept(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    _write_jsonl(src, [{"text": make_doc(1), "hygiene": {"from": "upstream"}}, {"text": "too short", "hygiene": 7}])
    run_filter([src], tmp_path / "o", _config(**{"output.annotate": True}), progress=False)
    (kept,), (rejected,) = _lines(tmp_path / "o" / "kept.jsonl"), _lines(tmp_path / "o" / "rejected.jsonl")
    assert kept["input_hygiene"] == {"from": "upstream"} and kept["hygiene"]["id"]
    assert rejected["input_hygiene"] == 7 and rejected["hygiene"]["reason"] == "too_few_words"


def test_a_resume_refuses_inputs_rewritten_since_the_interruption(tmp_path: Path) -> None:
    d = _shards(tmp_path)
    config = _config(**{"synthetic.enabled": True, "batch_size": 3})
    with pytest.raises(KeyboardInterrupt):
        run_filter([d], tmp_path / "out", config, detector=FlakyDetector(stop_at=5), progress=False)
    _write_jsonl(d / "s2.jsonl", [{"text": make_doc(99)}])  # same name, other records
    with pytest.raises(UserInputError, match="differ from the interrupted run"):
        run_filter([d], tmp_path / "out", config, resume=True, detector=FlakyDetector(), progress=False)


def test_a_stop_while_the_outputs_move_into_place_is_completed_by_a_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hygiene import run_output

    d = _shards(tmp_path)
    ref = run_filter([d], tmp_path / "ref", _config(), progress=False)
    out = tmp_path / "out"
    real_config = run_output.write_config

    def stop(*args, **kwargs):  # every output moved, config.yaml and stats.json not yet written
        raise KeyboardInterrupt

    monkeypatch.setattr(run_output, "write_config", stop)
    with pytest.raises(KeyboardInterrupt):
        run_filter([d], out, _config(), progress=False)
    monkeypatch.setattr(run_output, "write_config", real_config)
    assert (out / "kept.jsonl").exists() and not (out / "stats.json").exists()
    stats = run_filter([d], out, _config(), resume=True, progress=False)
    for name in ("kept", "rejected", "errors"):
        assert (out / f"{name}.jsonl").read_bytes() == (tmp_path / "ref" / f"{name}.jsonl").read_bytes()
    assert stats["records_in"] == ref["records_in"] and (out / "stats.json").exists() and not (out / ".partial").exists()


def test_a_stop_while_the_checkpoint_is_removed_leaves_a_finished_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last step removes the checkpoint folder; a stop inside that removal, whatever it had removed, leaves
    a finished run that a resume returns as it is (not a checkpoint a resume would continue from)."""
    import shutil

    from hygiene import run_output

    d = _shards(tmp_path)
    run_filter([d], tmp_path / "ref", _config(), progress=False)
    out = tmp_path / "out"
    real = shutil.rmtree

    def stop(path, *args, **kwargs):  # the finishing marker gone first, the checkpoint still there
        if Path(path).name == run_output.REMOVED and Path(path).exists():
            (Path(path) / run_output.FINISHING).unlink()
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(run_output.shutil, "rmtree", stop)
    with pytest.raises(KeyboardInterrupt):
        run_filter([d], out, _config(), progress=False)
    monkeypatch.setattr(run_output.shutil, "rmtree", real)
    assert (out / run_output.REMOVED / "checkpoint.json").exists()
    run_filter([d], out, _config(), resume=True, progress=False)
    with pytest.raises(UserInputError, match="already holds a finished run"):
        run_filter([d], out, _config(), progress=False)
    for name in ("kept.jsonl", "rejected.jsonl", "errors.jsonl", "config.yaml"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
    run_filter([d], out, _config(), overwrite=True, progress=False)
    assert not (out / run_output.REMOVED).exists()


@pytest.mark.parametrize("damage", ["removed", "cut"])
def test_a_resume_refuses_growing_files_shorter_than_their_checkpoint(tmp_path: Path, damage: str) -> None:
    """Records written before the checkpoint and lost since cannot be restored: refused, not padded."""
    d = _shards(tmp_path)
    config = _config(**{"synthetic.enabled": True, "batch_size": 3})
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_filter([d], out, config, detector=FlakyDetector(stop_at=5), progress=False)
    kept = out / ".partial" / "kept.jsonl"
    assert json.loads((out / ".partial" / "checkpoint.json").read_text())["offsets"]["kept"] > 0
    if damage == "removed":
        kept.unlink()
    else:
        kept.write_bytes(kept.read_bytes()[:-5])
    with pytest.raises(UserInputError, match=r"cannot resume .*kept.jsonl holds \d+ bytes where its checkpoint"):
        run_filter([d], out, config, resume=True, detector=FlakyDetector(), progress=False)
    stats = run_filter([d], out, config, overwrite=True, detector=FlakyDetector(), progress=False)
    assert stats["records_in"] == stats["kept"] + stats["rejected"] + stats["errors"] == 24


@pytest.mark.parametrize("damage", ["removed", "cut", "added"])
def test_resuming_a_finished_run_checks_its_outputs_are_whole(tmp_path: Path, damage: str) -> None:
    d = _shards(tmp_path)
    out = tmp_path / "out"
    run_filter([d], out, _config(), progress=False)
    kept = out / "kept.jsonl"
    if damage == "removed":
        kept.unlink()
    elif damage == "cut":
        kept.write_bytes(kept.read_bytes()[:-40])
    else:
        kept.write_bytes(kept.read_bytes() + b'{"text": "one more"}\n')
    with pytest.raises(UserInputError, match="finished run whose kept.jsonl .*pass --overwrite"):
        run_filter([d], out, _config(), resume=True, progress=False)


def test_files_of_the_outputs_names_in_the_output_folder_are_not_replaced(tmp_path: Path) -> None:
    """An --out that holds a kept.jsonl or config.yaml of the user's (no run's) is refused without --overwrite;
    inside an input folder such a file is input, which the run would neither read nor keep."""
    d = _shards(tmp_path)
    for name in ("kept.jsonl", "config.yaml"):
        mine = tmp_path / f"mine-{name}"
        mine.mkdir()
        (mine / name).write_text("my notes\n")
        with pytest.raises(UserInputError, match=f"holds {name}, which this run would replace"):
            run_filter([d], mine, _config(), progress=False)
        assert (mine / name).read_text() == "my notes\n"
    (d / "part2").mkdir()
    (d / "part2" / "kept.jsonl").write_text(json.dumps({"text": make_doc(77)}) + "\n")
    inputs = _contents(d)
    with pytest.raises(UserInputError, match=r"output folder .*part2 lies in an input folder and holds .*kept.jsonl"):
        run_filter([d], d / "part2", _config(), progress=False)
    assert _contents(d) == inputs


def test_a_second_run_on_the_same_output_folder_is_refused_while_the_first_writes(tmp_path: Path) -> None:
    from hygiene.run_output import RunOutput

    d = _shards(tmp_path)
    holder = RunOutput(tmp_path / "out")
    holder.lock()  # another process's run, as far as the lock goes
    try:
        with pytest.raises(UserInputError, match="another run is writing to"):
            run_filter([d], tmp_path / "out", _config(), progress=False)
    finally:
        holder.unlock()
    assert run_filter([d], tmp_path / "out", _config(), progress=False)["records_in"] == 24


def test_resuming_a_finished_run_checks_it_is_the_same_run(tmp_path: Path) -> None:
    d = _shards(tmp_path)
    out = tmp_path / "out"
    first = run_filter([d], out, _config(), progress=False)
    again = run_filter([d], out, _config(), resume=True, progress=False)  # nothing left to do
    assert {k: again[k] for k in ("records_in", "kept", "rejected", "errors", "fingerprint", "elapsed_s")} == \
        {k: first[k] for k in ("records_in", "kept", "rejected", "errors", "fingerprint", "elapsed_s")}
    with pytest.raises(UserInputError, match="finished run of other inputs or another config"):
        run_filter([d], out, _config(**{"quality.enabled": False}), resume=True, progress=False)
    with pytest.raises(UserInputError, match="pass one"):
        run_filter([d], out, _config(), resume=True, overwrite=True, progress=False)


def test_an_output_folder_that_cannot_be_made_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": make_doc(0)}) + "\n")
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(main, ["filter", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "afile" / "o"),
                                       "--no-synthetic", "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output and result.output.count("\n") == 1
    assert "cannot create the output folder" in result.output


def test_synthetic_stage_threshold_and_scores(tmp_path: Path) -> None:
    d = _shards(tmp_path)
    stats = run_filter([d / "s0.jsonl"], tmp_path / "o", _config(**{"synthetic.enabled": True, "synthetic.threshold": 0.95}),
                       detector=FlakyDetector(), progress=False)
    assert "synthetic" not in stats["by_stage"] and stats["synthetic_threshold"] == 0.95
    run_filter([d / "s0.jsonl"], tmp_path / "o2", _config(**{"synthetic.enabled": True, "output.annotate": True}),
               detector=FlakyDetector(), progress=False)
    rejected = _lines(tmp_path / "o2" / "rejected.jsonl")
    machine = [r for r in rejected if r["hygiene"]["stage"] == "synthetic"]
    assert len(machine) == 1 and machine[0]["hygiene"]["scores"]["synthetic_p"] == 0.9
    assert all(r["hygiene"]["scores"]["synthetic_p"] == 0.1 for r in _lines(tmp_path / "o2" / "kept.jsonl"))


class SettlingDetector(FlakyDetector):
    """Fake detector with a cascade: its first pass settles the texts without 'machine' in them."""

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.last_settled_ = np.array(["machine" not in t for t in texts])
        return super().predict_proba(texts)


def test_stats_count_what_the_detectors_first_pass_settled(tmp_path: Path) -> None:
    d = _shards(tmp_path)
    config = _config(**{"synthetic.enabled": True, "output.annotate": True})
    stats = run_filter([d], tmp_path / "o", config, detector=SettlingDetector(), progress=False)
    records = _lines(tmp_path / "o" / "kept.jsonl") + _lines(tmp_path / "o" / "rejected.jsonl")
    scored = [r["hygiene"]["scores"] for r in records if "synthetic_p" in r["hygiene"]["scores"]]
    assert stats["detector_first_pass"] == {"settled": sum(s["synthetic_settled"] for s in scored),
                                            "scored": sum(1 - s["synthetic_settled"] for s in scored)}
    assert stats["detector_first_pass"]["scored"] == stats["by_stage"]["synthetic"]["machine_generated"] > 0
    assert stats["detector_first_pass"]["settled"] > 0
    plain = run_filter([d], tmp_path / "o2", config, detector=FlakyDetector(), progress=False)
    assert plain["detector_first_pass"] == {"settled": 0, "scored": 0}  # a detector that does not say


def test_missing_detector_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLAPSE_HYGIENE_MODELS", str(tmp_path / "no-models"))
    d = _shards(tmp_path)
    result = CliRunner().invoke(main, ["filter", str(d), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("Error: no synthetic-text detector at") and result.output.count("\n") == 1


def test_annotate_only_drops_nothing_and_dry_run_writes_nothing(tmp_path: Path) -> None:
    d = _shards(tmp_path)
    stats = run_filter([d], tmp_path / "a", _config(**{"output.annotate_only": True}), progress=False)
    kept = _lines(tmp_path / "a" / "kept.jsonl")
    assert len(kept) == stats["kept"] == stats["records_in"] - stats["errors"] and stats["rejected"] == 0
    assert sum(1 for r in kept if r["hygiene"].get("stage") == "exact_dedup") == 3
    assert all("quality_words" in r["hygiene"]["scores"] for r in kept)
    result = CliRunner().invoke(main, ["dedup", str(d), "--out", str(tmp_path / "o"), "--dry-run", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["by_stage"] == {"exact_dedup": {"duplicate": 3}}
    assert not (tmp_path / "o").exists()


def test_annotate_only_counts_p_machine_where_a_real_run_reads_it(tmp_path: Path) -> None:
    """With --annotate-only every record is scored, but the P(machine) histogram and the flagged count (what
    the report's machine share divides) cover the records a real run's detector reads, as in that run."""
    d = _shards(tmp_path)
    config = _config(**{"synthetic.enabled": True, "batch_size": 3})
    real = run_filter([d], tmp_path / "real", config, detector=FlakyDetector(), progress=False)
    scoring = FlakyDetector()
    note = run_filter([d], tmp_path / "note", _config(**{"synthetic.enabled": True, "batch_size": 3,
                                                         "output.annotate_only": True}),
                      detector=scoring, progress=False)
    assert len(scoring.seen) > sum(map(sum, real["p_machine_histogram"]["by_group"].values()))  # more scored
    assert note["p_machine_histogram"] == real["p_machine_histogram"]
    assert note["by_stage"]["synthetic"] == real["by_stage"]["synthetic"]


def test_parquet_output_and_dedup_command(tmp_path: Path) -> None:
    d = _shards(tmp_path)
    result = CliRunner().invoke(main, ["dedup", str(d), "--out", str(tmp_path / "o"), "--format", "parquet",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    kept = pq.read_table(tmp_path / "o" / "kept.parquet").to_pylist()
    rejected = pq.read_table(tmp_path / "o" / "rejected.parquet").to_pylist()
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert (len(kept), len(rejected)) == (stats["kept"], stats["rejected"]) == (18, 3)
    assert stats["config"]["quality"]["enabled"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["filter", "/no/such/file.jsonl", "--out", "X"], "Error: input not found: /no/such/file.jsonl"),
        (["filter", "IN", "--out", "X", "--set", "quality.min_wrds=3"], "Error: bad config: unknown key 'quality.min_wrds'"),
        (["filter", "IN", "--out", "X", "--config", "CFG"], "Error: bad config CFG: "),
        (["filter", "IN", "--out", "X", "--set", "near_dedup.rows=0"], "Error: bad config: near_dedup.bands and rows"),
        (["filter", "IN", "--out", "X", "--set", "stages=[{params: {}}]"], "Error: bad config: stages[0] needs 'path'"),
        (["filter", "IN", "--out", "X", "--set", "quality.min_words=-5"], "Error: bad config: quality.min_words must be >= 0"),
        (["filter", "IN", "--out", "X", "--set", "quality.max_top_ngram_char_frac={2: 5}"],
         "Error: bad config: quality.max_top_ngram_char_frac.2 must lie in [0, 1]"),
        (["filter", "IN", "--out", "X", "--set", "checkpoint_seconds=-1"], "Error: bad config: checkpoint_seconds must be >= 0"),
        (["filter", "IN", "--out", "X", "--set", "synthetic.backend=tensorrt"],
         "Error: bad config: synthetic.backend must be one of 'auto', 'torch', 'onnxruntime'"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": make_doc(0)}) + "\n")
    (tmp_path / "bad.yaml").write_text("quality: [unclosed\n")
    subst = {"IN": str(tmp_path / "in.jsonl"), "X": str(tmp_path / "o"), "CFG": str(tmp_path / "bad.yaml")}
    args = [subst.get(a, a) for a in args]
    result = CliRunner().invoke(main, [*args, "--no-synthetic", "--no-progress"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert result.output.startswith(message.replace("CFG", subst["CFG"])) and result.output.count("\n") == 1


def test_filter_records_and_filter_dataset_agree() -> None:
    import datasets

    import hygiene

    texts = [make_doc(i) for i in range(5)] + [make_doc(0), "", "too short to pass"]
    config = _config(batch_size=3)
    decisions = list(hygiene.filter_records([{"text": t} for t in texts] + [{"no": "text"}], config))
    assert [d.stage for d in decisions] == [None] * 5 + ["exact_dedup", "input", "quality", "error"]
    kept, rejected = hygiene.filter_dataset(datasets.Dataset.from_dict({"text": texts, "k": list(range(8))}), config)
    assert kept["k"] == [0, 1, 2, 3, 4] and kept.column_names == ["text", "k"]
    assert rejected["hygiene_stage"] == ["exact_dedup", "input", "quality"]
    assert json.loads(rejected["hygiene_scores"][0]) == {"exact_duplicate_of": 0}


def test_a_streaming_dataset_is_filtered_afresh_each_time_it_is_read() -> None:
    import threading

    import datasets

    import hygiene

    class UnpicklableDetector(FlakyDetector):  # as a detector holding model sessions is
        lock = threading.Lock()

        def __reduce__(self):
            raise TypeError("cannot pickle a detector")

    texts = [make_doc(i) + (" machine" if i == 2 else "") for i in range(5)] + [make_doc(0), "too short", None]
    ds = datasets.Dataset.from_dict({"text": texts, "k": list(range(8))})
    config = _config(batch_size=3, **{"synthetic.enabled": True})
    whole_kept, whole_rejected = hygiene.filter_dataset(ds, config, detector=UnpicklableDetector())
    kept, rejected = hygiene.filter_dataset(ds.to_iterable_dataset(num_shards=2), config,
                                            detector=UnpicklableDetector())
    assert isinstance(kept, datasets.IterableDataset) and isinstance(rejected, datasets.IterableDataset)
    rows = list(rejected)
    assert [r["k"] for r in kept] == [r["k"] for r in kept] == whole_kept["k"] == [0, 1, 3, 4]  # no dedup carry-over
    assert [(r["k"], r["hygiene_stage"]) for r in rows] == list(zip(whole_rejected["k"], whole_rejected["hygiene_stage"]))
    assert [r["hygiene_stage"] for r in rows] == ["synthetic", "exact_dedup", "quality", "error"]
    assert list(next(iter(kept))) == ["text", "k"] and json.loads(rows[1]["hygiene_scores"]) == {"exact_duplicate_of": 0}


def test_worker_processes_give_identical_outputs(tmp_path: Path) -> None:
    d = _shards(tmp_path)
    config = _config(**{"synthetic.enabled": True, "batch_size": 3})
    one = run_filter([d], tmp_path / "one", config, detector=FlakyDetector(), progress=False)
    two = run_filter([d], tmp_path / "two", _config(**{"synthetic.enabled": True, "batch_size": 3, "workers": 2}),
                     detector=FlakyDetector(), progress=False)
    for name in ("kept", "rejected", "errors"):
        assert (tmp_path / "one" / f"{name}.jsonl").read_bytes() == (tmp_path / "two" / f"{name}.jsonl").read_bytes()
    assert one["by_stage"] == two["by_stage"] and two["config"]["workers"] == 2


_DYING_STAGE = """
import os
from hygiene.stages import Filter

class DieInWorker(Filter):
    name = "die"

    def __init__(self, parent: int = 0) -> None:
        self.parent = parent

    def score(self, texts):
        if os.getpid() != self.parent:
            os._exit(1)  # as the out-of-memory killer ends a process: no exception, no goodbye
        return [None] * len(texts), {}
"""


def test_a_worker_that_dies_stops_the_run_with_one_line(tmp_path: Path) -> None:
    """A pool replaces a worker that dies and never finishes the work it held: the run must stop with a
    one-line error instead of waiting for ever, and resume in one process to the same outputs."""
    d = _shards(tmp_path)
    (tmp_path / "dying.py").write_text(_DYING_STAGE, encoding="utf-8")
    config = _config(batch_size=3, workers=2)
    config.stages.append(StageSpec(f"{tmp_path / 'dying.py'}:DieInWorker", {"parent": os.getpid()}))
    out = tmp_path / "out"
    outcome: list = []
    runner = threading.Thread(target=lambda: outcome.append(_outcome(lambda: run_filter([d], out, config,
                                                                                          progress=False))),
                              daemon=True)
    runner.start()
    runner.join(60)
    assert not runner.is_alive(), "the run waited for ever on a dead worker"
    assert isinstance(outcome[0], UserInputError) and "worker process died" in str(outcome[0])
    assert len(str(outcome[0]).splitlines()) == 1
    # in one process the stage lets everything through: the run resumes to what a fresh one writes
    config.workers = 1
    resumed = run_filter([d], out, config, resume=True, progress=False)
    fresh = run_filter([d], tmp_path / "fresh", config, progress=False)
    assert resumed["records_in"] == fresh["records_in"] == resumed["kept"] + resumed["rejected"] + resumed["errors"]
    for name in ("kept", "rejected", "errors"):
        assert (out / f"{name}.jsonl").read_bytes() == (tmp_path / "fresh" / f"{name}.jsonl").read_bytes()


def _outcome(run) -> object:
    """What ``run()`` returns, or the exception it raises."""
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return exc


class _SlowPool:
    """A stand-in for the worker pool whose work on ``slow`` waves (by first packet's shard) is done only once
    the main process waits for it; it logs what it is given."""

    def __init__(self, log: list, slow: set[str]) -> None:
        self.log, self.slow = log, slow

    def map_async(self, func, items, chunksize=1):
        pool = self

        class Result:
            done = items[0].shard not in pool.slow

            def ready(self) -> bool:
                return self.done

            def wait(self, timeout: float | None = None) -> None:
                self.done = True

            def get(self) -> list:
                assert self.done
                return [func(p) for p in items]

        self.log.append(("pool", func.args[0][0].name, items[0].shard))
        return Result()


def test_worker_waves_overlap_and_what_runs_here_sees_them_in_order() -> None:
    """Two waves in flight: the pool is given the next wave before this process works on the first, and a
    segment that runs here (a dedup index, a GPU model) never sees a wave before an older one, even when the
    older one's pool work finishes last."""
    from hygiene.filter_run import _in_waves, _Packet

    log: list = []

    class Step:
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, batch: dict) -> dict:
            return {**batch, "seen": batch.get("seen", []) + [self.name]}

    def here(name: str) -> Step:
        step = Step(name)
        return lambda batch: log.append(("here", name, batch["shard"][0])) or step(batch)

    segments = [(True, [Step("p0")]), (False, [here("m1")]), (True, [Step("p2")]), (False, [here("m3")])]
    packets = [_Packet(f"w{i}", True, 1, 1, {"shard": [f"w{i}"]}, [{"text": "x"}], []) for i in range(4)]
    out = list(_in_waves(iter(packets), segments, _SlowPool(log, slow={"w0", "w2"}), size=1))
    assert [p.shard for p in out] == ["w0", "w1", "w2", "w3"]
    assert all(p.batch["seen"] == ["p0", "m1", "p2", "m3"] for p in out)
    assert log.index(("pool", "p0", "w1")) < log.index(("here", "m1", "w0"))  # overlap
    for name in ("m1", "m3"):  # w1's pool work is ready first, yet waits for w0 here
        assert [w for kind, n, w in log if kind == "here" and n == name] == ["w0", "w1", "w2", "w3"]


def test_many_waves_of_worker_processes_decide_as_one_process(tmp_path: Path) -> None:
    """Duplicates across many waves in flight (batches of 2, two workers, no checkpoint between them)."""
    d = tmp_path / "in"
    d.mkdir()
    for s in range(5):
        recs = [{"text": make_doc(7 * s + i)} for i in range(9)]
        recs += [{"text": make_doc(3 * s)}, {"text": make_doc(3 * s + 1).replace("the", "a", 1)}, {"oops": s}]
        _write_jsonl(d / f"s{s}.jsonl", recs)
    settings = {"batch_size": 2, "checkpoint_seconds": 3600.0}
    one = run_filter([d], tmp_path / "one", _config(**settings), progress=False)
    two = run_filter([d], tmp_path / "two", _config(**settings, workers=2), progress=False)
    for name in ("kept", "rejected", "errors"):
        assert (tmp_path / "one" / f"{name}.jsonl").read_bytes() == (tmp_path / "two" / f"{name}.jsonl").read_bytes()
    assert one["by_stage"] == two["by_stage"]
    assert one["by_stage"]["exact_dedup"]["duplicate"] >= 5 and one["by_stage"]["near_dedup"]["near_duplicate"] >= 1


def _contents(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_outputs_inside_an_input_directory_are_not_read_back(tmp_path: Path) -> None:
    d = _shards(tmp_path)
    inputs = _contents(d)
    first = run_filter([d], d / "clean", _config(), progress=False)
    again = run_filter([d], d / "clean", _config(), overwrite=True, progress=False)
    assert again["records_in"] == first["records_in"] == 24
    with pytest.raises(UserInputError, match="lies inside the output folder"):
        run_filter([d], d, _config(), overwrite=True, progress=False)
    assert {k: v for k, v in _contents(d).items() if not k.startswith("clean/")} == inputs


def test_a_stage_of_your_own_runs_from_the_command_line_and_the_config(tmp_path: Path) -> None:
    d = _shards(tmp_path)
    _write_jsonl(d / "loud.jsonl", [{"text": make_doc(50).upper()}, {"text": make_doc(51)}])
    stage_file = Path(__file__).parent / "shout_stage.py"
    result = CliRunner().invoke(main, ["filter", str(d), "--out", str(tmp_path / "o"), "--no-synthetic",
                                       "--no-progress", "--stage", f"{stage_file}:Shout"])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["by_stage"]["shout"] == {"too_loud": 1}
    loud = [r for r in _lines(tmp_path / "o" / "rejected.jsonl") if r["hygiene"]["stage"] == "shout"]
    assert loud[0]["hygiene"]["id"].endswith("loud.jsonl:1") and loud[0]["hygiene"]["scores"]["upper_share"] == 1.0
    config = tmp_path / "c.yaml"
    config.write_text("stages:\n  - path: shout_stage:Shout\n    params: {max_share: 1.0}\n")
    result = CliRunner().invoke(main, ["filter", str(d), "--out", str(tmp_path / "o2"), "--config", str(config),
                                       "--no-synthetic", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "shout" not in json.loads((tmp_path / "o2" / "stats.json").read_text())["by_stage"]
    assert load_config(tmp_path / "o2" / "config.yaml").stages[0].params == {"max_share": 1.0}
    for spec, message in ((f"{stage_file}:Nope", "cannot load stage"), ("gopher_docs:make_doc", "not a hygiene"),
                          ("shout_stage", "expected module:Class"), ("no_such_stages:Shout", "on PYTHONPATH")):
        result = CliRunner().invoke(main, ["filter", str(d), "--out", str(tmp_path / "o3"), "--no-synthetic",
                                           "--stage", spec])
        assert result.exit_code == 1 and message in result.output and result.output.count("\n") == 1


def test_parquet_output_survives_lone_surrogates(tmp_path):
    import pyarrow.parquet as pq

    from hygiene.records import jsonl_to_parquet

    src = tmp_path / "a.jsonl"
    src.write_text('{"text": "bad \\ud800 x", "tags": ["\\udfff"]}\n{"text": "ok \\ud83d\\ude00"}\n')
    jsonl_to_parquet(src, tmp_path / "a.parquet")
    rows = pq.read_table(tmp_path / "a.parquet").to_pylist()
    assert rows[0]["text"] == "bad \ufffd x" and rows[0]["tags"] == ["\ufffd"]
    assert rows[1]["text"] == "ok \U0001F600"


def test_parquet_output_takes_integers_beyond_64_bits_as_their_digits(tmp_path):
    """A JSON integer beyond 64 bits (a 128-bit hash as an id) has no Parquet integer: written as its decimal
    string; an integer column mixed with such values is a one-line error saying how to go on."""
    import pyarrow.parquet as pq

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": 2**70 + i, "text": make_doc(i), "big": 1.2e29}) + "\n" for i in range(3)))
    stats = run_filter([src], tmp_path / "out", _config(**{"output.format": "parquet"}), progress=False)
    assert stats["kept"] == 3
    rows = pq.read_table(tmp_path / "out" / "kept.parquet").to_pylist()
    assert [r["id"] for r in rows] == [str(2**70 + i) for i in range(3)] and rows[0]["big"] == 1.2e29
    src.write_text("".join(json.dumps({"id": 2**70 if i else 1, "text": make_doc(i)}) + "\n" for i in range(3)))
    with pytest.raises(UserInputError, match=r"cannot write .*kept.parquet as Parquet .*--format jsonl"):
        run_filter([src], tmp_path / "mixed", _config(**{"output.format": "parquet"}), progress=False)


def test_a_detector_loaded_from_its_folder_scores_in_the_worker_processes(tmp_path: Path) -> None:
    """On CPU the detector stage runs in the worker pool, each process with its own copy, and decides as one
    process does; a detector the caller passes stays in the main process."""
    from hygiene.filtering import build_pipeline

    settings = save_tiny_detector(tmp_path)
    d = _shards(tmp_path)
    one = run_filter([d], tmp_path / "one", _config(**settings), progress=False)
    two = run_filter([d], tmp_path / "two", _config(**settings, workers=2), progress=False)
    for name in ("kept", "rejected", "errors"):
        assert (tmp_path / "one" / f"{name}.jsonl").read_bytes() == (tmp_path / "two" / f"{name}.jsonl").read_bytes()
    assert one["by_stage"] == two["by_stage"]
    parallel = {getattr(step, "name", ""): p for p, steps in build_pipeline(_config(**settings)).segments() for step in steps}
    assert parallel["synthetic"] is True
    given = build_pipeline(_config(**settings), detector=FlakyDetector())
    assert {getattr(step, "name", ""): p for p, steps in given.segments() for step in steps}["synthetic"] is False


def test_with_the_models_in_the_main_process_the_cheap_features_run_in_the_workers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As with the detector on a GPU (the stage not per process): the language models run in the main process,
    the text statistics and the lexical score ahead of them in the worker processes (the stage's ``prepare``
    step), and the outputs are those of one process."""
    import os

    import hygiene.features
    from hygiene.detector import Detector
    from hygiene.stages.synthetic import FIRST_PASS, SyntheticFilter

    settings = save_tiny_detector(tmp_path)
    d = _shards(tmp_path)
    main, in_main = os.getpid(), []
    first_pass, stats = Detector.first_pass_features, hygiene.features.text_statistics

    def record(name, f):
        return lambda *a: (in_main.append(name) if os.getpid() == main else None) or f(*a)

    monkeypatch.setattr(Detector, "first_pass_features", record("first_pass", first_pass))
    monkeypatch.setattr(hygiene.features, "text_statistics", record("stats", stats))
    monkeypatch.setattr(SyntheticFilter, "per_process", property(lambda self: False))
    one = run_filter([d], tmp_path / "one", _config(**settings), progress=False)
    assert "first_pass" in in_main  # one process: computed here
    in_main.clear()
    two = run_filter([d], tmp_path / "two", _config(**settings, workers=2), progress=False)
    assert in_main == [] and two["by_stage"] == one["by_stage"]
    for name in ("kept", "rejected", "errors"):
        out = (tmp_path / "two" / f"{name}.jsonl").read_text()
        assert out == (tmp_path / "one" / f"{name}.jsonl").read_text() and FIRST_PASS not in out


@pytest.mark.parametrize(("device", "message"), [("foo", "unknown torch device 'foo'"),
                                                 ("cuda:7", "this torch sees no CUDA GPU")])
def test_a_device_the_machine_lacks_is_a_one_line_error_before_anything_is_written(
        tmp_path: Path, device: str, message: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": make_doc(0)}) + "\n")
    result = CliRunner().invoke(main, ["filter", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "o"),
                                       "--device", device, "--no-progress"])
    assert result.exit_code != 0 and "Traceback" not in result.output and result.output.count("\n") == 1
    assert message in result.output and not (tmp_path / "o").exists()


def test_autocast_reaches_the_detectors_language_models_and_a_bad_one_is_a_one_line_error(tmp_path: Path) -> None:
    import torch

    from hygiene.config import SyntheticConfig
    from hygiene.stages.synthetic import SyntheticFilter

    det = SyntheticFilter(SyntheticConfig(device="cpu", autocast="bfloat16")).detector
    f = det.config.features
    assert {det.featurizer.model(n).autocast for n in (f.lm, f.contrast_lm)} == {torch.bfloat16}
    assert SyntheticFilter(SyntheticConfig(device="cpu")).detector.featurizer.model(f.lm).autocast is None
    with pytest.raises(UserInputError, match="unknown autocast dtype 'float8'"):  # a config built in code
        _ = SyntheticFilter(SyntheticConfig(device="cpu", autocast="float8")).detector
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": make_doc(0)}) + "\n")
    result = CliRunner().invoke(main, ["filter", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "o"),
                                       "--set", "synthetic.autocast=float8", "--no-progress"])
    assert result.exit_code != 0 and "Traceback" not in result.output and result.output.count("\n") == 1
    assert "synthetic.autocast must be null or 'bfloat16'" in result.output and not (tmp_path / "o").exists()


def test_the_cascade_defaults_to_on_for_a_cpu_and_off_for_a_gpu(monkeypatch) -> None:
    import torch

    import hygiene.lm
    from hygiene.config import SyntheticConfig
    from hygiene.stages.synthetic import SyntheticFilter

    assert SyntheticFilter(SyntheticConfig(device="cpu")).cascade is True
    assert SyntheticFilter(SyntheticConfig(device="cpu", cascade=False)).cascade is False
    monkeypatch.setattr(hygiene.lm, "select_device", lambda device=None: torch.device("cuda"))
    assert SyntheticFilter(SyntheticConfig(device="cuda")).cascade is False
    assert SyntheticFilter(SyntheticConfig(device="cuda", cascade=True)).cascade is True


def test_the_librarys_duplicate_pointers_resolve_through_n(tmp_path: Path) -> None:
    """``exact_duplicate_of`` holds the ``n`` of the first copy, an ordinal among readable records: each
    decision (and each row of ``filter_dataset``, ``hygiene_n``) carries its own, so the pointer resolves
    when unreadable records make positions and ``n`` differ."""
    import datasets

    import hygiene

    recs = [None, {"text": make_doc(1)}, {"text": make_doc(2)}, {"text": make_doc(2)}]
    decisions = list(hygiene.filter_records(recs, _config()))
    by_n = {d.n: d for d in decisions if d.n is not None}
    dup = decisions[3]
    assert decisions[0].n is None and dup.stage == "exact_dedup"
    assert by_n[dup.scores["exact_duplicate_of"]] is decisions[2]
    ds = datasets.Dataset.from_dict({"text": [None, make_doc(1), make_doc(2), make_doc(2), None]})
    _, rejected = hygiene.filter_dataset(ds, _config(**{"output.annotate": True}))
    kept, _ = hygiene.filter_dataset(ds, _config(**{"output.annotate": True}))
    row = next(r for r in rejected if r["hygiene_stage"] == "exact_dedup")
    first = next(r for r in kept if r["hygiene_n"] == json.loads(row["hygiene_scores"])["exact_duplicate_of"])
    assert first["text"] == row["text"]


def test_texts_that_are_not_strings_are_named_before_any_scoring() -> None:
    from hygiene.errors import many_texts

    assert many_texts(iter(["a", "b"])) == ["a", "b"] and many_texts([]) == []
    for bad, kind in (([None], "NoneType"), (["ok", b"bytes"], "bytes")):
        with pytest.raises(TypeError, match=rf"texts\[{len(bad) - 1}\] is {kind}, not a string"):
            many_texts(bad)


def test_a_stand_in_detector_that_fails_is_one_line_naming_it() -> None:
    import hygiene

    class Down:
        threshold_ = 0.5

        def predict_proba(self, texts):
            raise RuntimeError("model server down\nretry later")

    class Flat:
        threshold_ = 0.5

        def predict_proba(self, texts):
            return np.full(len(texts), 0.8)

    config = _config(**{"synthetic.enabled": True})
    for detector, message in ((Down(), r"^detector .*Down failed: RuntimeError: model server down$"),
                              (Flat(), r"^detector .*Flat returned shape \(1,\) for 1 texts")):
        with pytest.raises(UserInputError, match=message):
            list(hygiene.filter_records([make_doc(1)], config, detector=detector))
