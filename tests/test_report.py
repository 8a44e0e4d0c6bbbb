"""``hygiene report``: every figure on the page matches stats.json; the machine-share estimate;
``hygiene score`` on any input format; the package's public names."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import hygiene
from gopher_docs import make_doc
from hygiene.cli import main
from hygiene.config import load_config
from hygiene.filter_run import run_filter
from hygiene.report import DetectorRates, detector_rates, machine_share
from hygiene.score_file import ScoreCounts, score_jsonl


class MarkerDetector:
    """'machine' texts score 0.95, the rest 0.05; a cascade's first pass settles the rest."""

    threshold_ = 0.5

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.last_settled_ = np.array(["machine" not in t for t in texts])
        p = np.array([0.95 if "machine" in t else 0.05 for t in texts])
        return np.stack([1 - p, p], axis=1)


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    records = [{"text": make_doc(i) + (" machine" if i % 3 == 0 else ""), "source": "web" if i < 6 else "news"}
               for i in range(10)]
    records += [{"text": make_doc(1), "source": "web"}, {"text": "", "source": "news"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run_filter([tmp_path / "in.jsonl"], tmp_path / "run", load_config(), detector=MarkerDetector(), progress=False)
    return tmp_path / "run"


def _lookup(stats: dict, key: str):
    node = stats
    for part in key.split("."):
        node = node[part] if not isinstance(node, list) else next(s for s in node if s["name"] == part)
    return node


def test_the_page_shows_the_stats(run_dir: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    page = (run_dir / "report.html").read_text()
    assert result.output.strip() == str(run_dir / "report.html")
    stats = json.loads((run_dir / "stats.json").read_text())
    shown = dict(re.findall(r'data-key="([^"]+)">([^<]*)<', page))
    checked = {k: v for k, v in shown.items() if not k.startswith("machine_share")}
    assert len(checked) >= 20
    for key, value in checked.items():
        assert value == str(_lookup(stats, key)), key
    assert shown["stages.synthetic.reasons.machine_generated"] == "4"
    assert shown["stages.exact_dedup.reasons.duplicate"] == "1"
    assert shown["detector_first_pass.scored"] == "4" and int(shown["detector_first_pass.settled"]) > 0
    assert "http" not in page.replace("http-equiv", "") and page.count("data:image/png;base64,") == 3
    assert make_doc(1)[:50] in page  # an excerpt of the duplicate
    assert "<b data-key='machine_share.estimate'>unknown</b>" in page  # a fake detector has no measured rates
    kept = (run_dir / "kept.jsonl").read_bytes()
    result = CliRunner().invoke(main, ["report", str(run_dir), "--out", str(run_dir / "kept.jsonl")])
    assert result.exit_code == 1 and "give --out a .html path" in result.output and result.output.count("\n") == 1
    assert (run_dir / "kept.jsonl").read_bytes() == kept  # never written over


def test_machine_share_estimate_and_interval() -> None:
    rates = DetectorRates(tpr=0.8, fpr=0.02, threshold=0.5, source="test")
    share = machine_share(flagged=178, scored=1000, rates=rates)
    assert share.estimate == pytest.approx((0.178 - 0.02) / 0.78)
    assert share.low < share.estimate < share.high and share.high - share.low < 0.1
    assert machine_share(0, 1000, rates).estimate == 0.0  # clipped, not negative
    assert machine_share(5, 10, DetectorRates(None, 0.01, 0.5, "none")).estimate is None
    # never of zero width at the ends (a bootstrap of 0 of 5 flagged was [0, 0]); a rate outside [FPR, TPR]
    # says the rates do not fit
    none, every = machine_share(0, 5, rates), machine_share(5, 5, rates)
    assert none.estimate == none.low == 0.0 < none.high and every.low < every.high == every.estimate == 1.0
    assert every.clipped and not share.clipped


def test_machine_share_interval_holds_its_level_when_the_rates_are_right() -> None:
    """Records drawn at a known machine share, flagged at the detector's true rates: the 95% interval covers
    the share in at least 93% of 250 draws at each share (fixed seed; exact intervals are conservative)."""
    rates = DetectorRates(tpr=0.75, fpr=0.01, threshold=0.5, source="test")
    rng = np.random.default_rng(0)
    for share in (0.02, 0.2, 0.5, 0.9):
        p = rates.fpr + share * (rates.tpr - rates.fpr)
        hits = [(s.low <= share <= s.high) for s in (machine_share(int(k), 300, rates)
                                                      for k in rng.binomial(300, p, 250))]
        assert np.mean(hits) >= 0.93, (share, np.mean(hits))


def test_with_the_rates_counts_the_interval_carries_their_error_on_a_large_input() -> None:
    """TPR and FPR measured on 900 and 2,500 texts, the input 50,000 records: an interval of the flagged rate
    alone (rates held fixed) misses the share often; with the counts it covers it in at least 90% of 200 seeded
    draws of evaluation sets and input."""
    true_tpr, true_fpr, n_tpr, n_fpr, n, share = 0.65, 0.01, 900, 2500, 50_000, 0.5
    rng = np.random.default_rng(1)
    fixed, carried = [], []
    for _ in range(200):
        tpr, fpr = rng.binomial(n_tpr, true_tpr) / n_tpr, rng.binomial(n_fpr, true_fpr) / n_fpr
        flagged = int(rng.binomial(n, true_fpr + share * (true_tpr - true_fpr)))
        for rates, hits in ((DetectorRates(tpr, fpr, 0.5, "test"), fixed),
                            (DetectorRates(tpr, fpr, 0.5, "test", n_tpr, n_fpr), carried)):
            s = machine_share(flagged, n, rates, draws=4000)
            hits.append(s.low <= share <= s.high)
    assert np.mean(carried) >= 0.9 and np.mean(fixed) < 0.7, (np.mean(carried), np.mean(fixed))


def test_detector_rates_need_the_measured_threshold(tmp_path: Path) -> None:
    (tmp_path / "detector.json").write_text(json.dumps({"threshold": 0.7, "metrics": {"calibration": {
        "human_flagged": 0.01}}}))
    (tmp_path / "evaluation.json").write_text(json.dumps({"detect-dev": {"at_threshold": {
        "threshold": 0.7, "machine_flagged": 0.6}}}))
    assert (detector_rates(tmp_path, 0.7).tpr, detector_rates(tmp_path, 0.7).fpr) == (0.6, 0.01)
    assert detector_rates(tmp_path, 0.5).tpr is None


def test_the_run_keeps_the_rates_its_detector_had(tmp_path: Path) -> None:
    """A page made later estimates with the rates of the detector the run used, not the detector as it is now."""
    det = tmp_path / "det"
    det.mkdir()
    (det / "detector.json").write_text(json.dumps({"threshold": 0.5, "metrics": {"calibration": {"human_flagged": 0.01}}}))
    (det / "evaluation.json").write_text(json.dumps({"detect-dev": {"at_threshold": {
        "threshold": 0.5, "machine_flagged": 0.8}}}))
    records = [{"text": make_doc(i) + (" machine" if i % 3 == 0 else "")} for i in range(12)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = load_config(overrides={"synthetic.model": str(det)})
    stats = run_filter([tmp_path / "in.jsonl"], tmp_path / "run", config, detector=MarkerDetector(), progress=False)
    assert (stats["detector_rates"]["tpr"], stats["detector_rates"]["fpr"]) == (0.8, 0.01)
    (det / "detector.json").write_text(json.dumps({"threshold": 0.6}))  # the detector recalibrated since
    page = hygiene.write_report(tmp_path / "run").read_text()
    assert "TPR 80" in page and "FPR 1" in page


def test_score_reads_parquet_and_keeps_the_fields(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a b", "c d e"], "url": ["u1", "u2"], "id": [7, 8]}), tmp_path / "in.parquet")

    def lengths(texts: list[str]) -> dict[str, np.ndarray]:
        return {"words": np.array([len(t.split()) for t in texts])}

    assert score_jsonl(tmp_path / "in.parquet", tmp_path / "out.jsonl", lengths, progress=False) == ScoreCounts(2, 0)
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows == [{"line": 1, "url": "u1", "id": 7, "words": 2}, {"line": 2, "url": "u2", "id": 8, "words": 3}]
    score_jsonl(tmp_path / "in.parquet", tmp_path / "few.jsonl", lengths, progress=False, keep_fields=["id"])
    assert json.loads((tmp_path / "few.jsonl").read_text().splitlines()[0]) == {"line": 1, "id": 7, "words": 2}


def test_score_writes_one_row_per_record_bad_ones_with_their_error_and_names_shards(tmp_path: Path) -> None:
    """Unreadable lines and records without a string text keep their place as error rows (scores join back
    by position and line); with a directory of shards every row names its shard."""
    shards = tmp_path / "in"
    shards.mkdir()
    (shards / "a.jsonl").write_text('{"text": "one two", "id": 1}\n{broken\n'
                                    '{"text": 5, "id": 3}\n{"text": "x", "id": 4}\n')
    (shards / "b.jsonl").write_text('{"text": "five six seven", "id": 5}\n')
    calls = []

    def lengths(texts: list[str]) -> dict[str, np.ndarray]:
        calls.append(texts)
        return {"words": np.array([len(t.split()) for t in texts])}

    counts = score_jsonl(shards, tmp_path / "out.jsonl", lengths, progress=False, chunk=2)
    assert (counts.rows, counts.errors) == (5, 2) and "a.jsonl:2: invalid JSON" in counts.first_error
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(Path(r["shard"]).name, r["line"]) for r in rows] == [("a.jsonl", 1), ("a.jsonl", 2), ("a.jsonl", 3),
                                                                 ("a.jsonl", 4), ("b.jsonl", 1)]
    assert [r.get("words") for r in rows] == [2, None, None, 1, 3]
    assert rows[1]["error"].startswith("invalid JSON") and rows[2]["error"] == "text field 'text' is int, not a string"
    assert all("error" not in r for r in (rows[0], rows[3], rows[4]))
    assert rows[2]["id"] == 3 and "id" not in rows[1]  # an error row keeps the fields of a record that parsed
    assert [t for c in calls for t in c] == ["one two", "x", "five six seven"]  # bad records never reach the scorer
    # a single file: no shard field, as before
    score_jsonl(shards / "b.jsonl", tmp_path / "one.jsonl", lengths, progress=False)
    assert json.loads((tmp_path / "one.jsonl").read_text()) == {"line": 1, "id": 5, "words": 3}


def test_score_resumes_after_an_interruption_and_keeps_clashing_fields_apart(tmp_path: Path) -> None:
    """A run stopped mid-way resumes after its last whole chunk (never scoring a record twice) and ends with
    the file an uninterrupted run writes; a record field named like a column of the row is kept as input_<name>."""
    lines = [{"text": " ".join(["w"] * (i + 1)), "line": f"verse {i}", "words": "its own"} for i in range(7)]
    src = tmp_path / "in.jsonl"
    jsonl = ["".join(json.dumps(x) + "\n" for x in part) for part in (lines[:3], lines[3:])]
    src.write_text(jsonl[0] + "{broken\n" + jsonl[1])
    seen: list[str] = []

    def lengths(texts: list[str]) -> dict[str, np.ndarray]:
        if len(seen) >= 4:
            raise KeyboardInterrupt
        seen.extend(texts)
        return {"words": np.array([len(t.split()) for t in texts])}

    with pytest.raises(KeyboardInterrupt):
        score_jsonl(src, tmp_path / "out.jsonl", lengths, progress=False, chunk=2)
    assert not (tmp_path / "out.jsonl").exists()
    first = list(seen)
    seen.clear()

    def rest(texts: list[str]) -> dict[str, np.ndarray]:
        seen.extend(texts)
        return {"words": np.array([len(t.split()) for t in texts])}

    counts = score_jsonl(src, tmp_path / "out.jsonl", rest, progress=False, chunk=2)
    # the bad line was written by the interrupted run: it is still counted
    assert (counts.rows, counts.errors) == (8, 1) and "in.jsonl:4: invalid JSON" in counts.first_error
    assert not set(first) & set(seen) and len(first) + len(seen) == 7
    score_jsonl(src, tmp_path / "whole.jsonl", rest, progress=False, chunk=2)
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows[0] == {"line": 1, "input_line": "verse 0", "input_words": "its own", "words": 1}
    assert rows[3] == {"line": 4, "error": rows[3]["error"]} and [r["line"] for r in rows] == list(range(1, 9))


def test_score_never_writes_over_an_input_an_output_or_another_runs_rows(tmp_path: Path) -> None:
    from hygiene.errors import UserInputError

    def lengths(texts: list[str]) -> dict[str, np.ndarray]:
        return {"words": np.array([len(t.split()) for t in texts])}

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"a b {i}"}) + "\n" for i in range(4)))
    before = src.read_bytes()
    with pytest.raises(UserInputError, match="is an input"):
        score_jsonl(src, src, lengths, progress=False, overwrite=True)
    assert src.read_bytes() == before
    score_jsonl(src, tmp_path / "out.jsonl", lengths, progress=False)
    with pytest.raises(UserInputError, match="exists: pass --overwrite"):
        score_jsonl(src, tmp_path / "out.jsonl", lengths, progress=False)
    assert score_jsonl(src, tmp_path / "out.jsonl", lengths, progress=False, overwrite=True) == ScoreCounts(4, 0)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"text": "x"}) + "\n")
    (tmp_path / "new.jsonl.partial").write_text(json.dumps({"line": 1, "words": 9}) + "\n")  # another run's rows
    with pytest.raises(UserInputError, match="rows of other inputs or settings"):
        score_jsonl(other, tmp_path / "new.jsonl", lengths, progress=False)
    assert score_jsonl(other, tmp_path / "new.jsonl", lengths, progress=False, overwrite=True) == ScoreCounts(1, 0)
    assert json.loads((tmp_path / "new.jsonl").read_text()) == {"line": 1, "words": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "new.jsonl", "other.jsonl", "out.jsonl"]


def test_public_names() -> None:
    names = {"FilterConfig", "filter_records", "filter_dataset", "load_detector", "score_texts", "run_filter"}
    assert names <= set(dir(hygiene))
    assert hygiene.FilterConfig().profile is None and callable(hygiene.filter_records)


def test_score_writes_a_lone_surrogate_in_a_field_as_its_escape(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"text": "one two", "title": "a \\ud800 b"}\n')
    score_jsonl(tmp_path / "in.jsonl", tmp_path / "out.jsonl", lambda t: {"n": np.ones(len(t))}, progress=False)
    assert json.loads((tmp_path / "out.jsonl").read_text()) == {"line": 1, "title": "a \ud800 b", "n": 1.0}
