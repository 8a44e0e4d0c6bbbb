"""Stages of one's own from ``.py`` files: in worker processes, two files of one name, results miscounted."""
from __future__ import annotations

import json
import multiprocessing
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from hygiene.cli import main
from hygiene.config import StageSpec
from hygiene.errors import UserInputError
from hygiene.stages import load_stage
from gopher_docs import make_doc  # noqa: E402

SHOUT = Path(__file__).parent / "shout_stage.py"

#: a stage that rejects texts holding ``word``; its ``name`` and ``word`` differ per file
_CONTAINS = '''
from hygiene.stages import Filter


class S(Filter):
    name = "{name}"
    columns = {{"hits": int}}

    def __init__(self, word: str = "{word}") -> None:
        self.word = word

    def score(self, texts):
        hits = [t.count(self.word) for t in texts]
        return ["has_" + self.word if h else None for h in hits], {{"hits": hits}}
'''

#: a stage that returns one result too few (``cut = -1``) or too many (``cut = 1``) for its batch
_MISCOUNT = '''
from hygiene.stages import Filter


class Miscount(Filter):
    name = "miscount"
    columns = {"length": int}

    def __init__(self, cut: int, column_only: bool = False) -> None:
        self.cut, self.column_only = cut, column_only

    def score(self, texts):
        reasons, length = [None] * len(texts), [len(t) for t in texts]
        wrong = reasons[:self.cut] if self.cut < 0 else reasons + [None] * self.cut
        if self.column_only:
            return reasons, {"length": length[:self.cut] if self.cut < 0 else length + [0] * self.cut}
        return wrong, {"length": length}
'''


def _filter(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["filter", *args, "--no-synthetic", "--no-progress"])
    return result.exit_code, result.output


def _corpus(tmp_path: Path, n: int = 60) -> Path:
    path = tmp_path / "in.jsonl"
    docs = [make_doc(i).upper() if i % 3 == 0 else make_doc(i) for i in range(n)]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs), encoding="utf-8")
    return path


def _outputs(out: Path) -> dict[str, str]:
    return {name: (out / name).read_text(encoding="utf-8") for name in ("kept.jsonl", "rejected.jsonl")}


def test_a_stage_from_a_file_runs_in_worker_processes_and_decides_as_one_process(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"o{workers}"
        code, output = _filter([str(corpus), "--out", str(out), "--workers", str(workers), "--batch-size", "8",
                                "--stage", f"{SHOUT}:Shout"])
        assert code == 0, output
        runs[workers] = _outputs(out), json.loads((out / "stats.json").read_text())["by_stage"]
    assert runs[2] == runs[1]
    assert runs[1][1]["shout"] == {"too_loud": 20}


def _run_in(stage, batch):  # a module-level function a spawned process can unpickle
    return stage(batch)


def test_a_stage_from_a_file_pickles_by_its_file_for_a_spawned_process(tmp_path: Path) -> None:
    (tmp_path / "spawned.py").write_text(_CONTAINS.format(name="spawned", word="cat"))
    stage = load_stage(StageSpec(f"{tmp_path / 'spawned.py'}:S", {"word": "dog"}))
    stage.annotate_only = True  # state set after loading travels too
    batch = {"n": [0, 1], "text": ["a dog", "a cat"], "stage": ["earlier", None], "reason": ["x", None]}
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        out = pool.apply_async(_run_in, (stage, batch)).get(timeout=60)  # a worker that cannot unpickle hangs
    assert out["hits"] == [1, 0] and out["reason"] == ["x", None]


def test_two_stage_files_of_one_name_are_two_stages(tmp_path: Path) -> None:
    for folder, word in (("sa", "apple"), ("sb", "pear")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "st.py").write_text(_CONTAINS.format(name=folder, word=word))
    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"{make_doc(i)} {w}"}) + "\n"
                              for i, w in enumerate(["apple", "pear", "plum"])))
    code, output = _filter([str(corpus), "--out", str(tmp_path / "o"), "--stage", f"{tmp_path / 'sa' / 'st.py'}:S",
                            "--stage", f"{tmp_path / 'sb' / 'st.py'}:S"])
    assert code == 0, output
    by_stage = json.loads((tmp_path / "o" / "stats.json").read_text())["by_stage"]
    assert by_stage["sa"] == {"has_apple": 1} and by_stage["sb"] == {"has_pear": 1}


@pytest.mark.parametrize("cut", [-1, 1])
@pytest.mark.parametrize("column_only", [False, True])
def test_a_stage_returning_too_few_or_too_many_results_is_a_one_line_error(tmp_path: Path, cut: int,
                                                                           column_only: bool) -> None:
    (tmp_path / "miscount.py").write_text(_MISCOUNT)
    stage = load_stage(StageSpec(f"{tmp_path / 'miscount.py'}:Miscount", {"cut": cut, "column_only": column_only}))
    what = "'length' scores" if column_only else "reasons"
    with pytest.raises(UserInputError, match=f"^stage miscount returned {3 + cut} {what} for 3 texts$"):
        stage({"n": [0, 1, 2], "text": ["a", "b", "c"]})


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_miscounting_stage_stops_a_run_with_one_line(tmp_path: Path, workers: str) -> None:
    (tmp_path / "miscount.py").write_text(_MISCOUNT)
    config = tmp_path / "c.yaml"
    config.write_text(f"stages:\n  - path: {tmp_path / 'miscount.py'}:Miscount\n    params: {{cut: -1}}\n")
    code, output = _filter([str(_corpus(tmp_path, 20)), "--out", str(tmp_path / "o"), "--config", str(config),
                            "--workers", workers, "--batch-size", "8"])
    assert code == 1 and output.count("\n") == 1
    counts = re.search(r"stage miscount returned (\d+) reasons for (\d+) texts", output)
    assert counts and int(counts[1]) == int(counts[2]) - 1


def test_a_stage_file_that_does_not_parse_is_a_one_line_error_and_loads_once_mended(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("class S(:\n")
    code, output = _filter([str(_corpus(tmp_path, 3)), "--out", str(tmp_path / "o"), "--stage", f"{broken}:S"])
    assert code == 1 and output.count("\n") == 1 and "cannot load stage" in output and "broken.py" in output
    broken.write_text(_CONTAINS.format(name="mended", word="cat"))
    assert load_stage(StageSpec(f"{broken}:S")).name == "mended"


#: a stage that raises on its first batch
_RAISES = '''
from hygiene.stages import Filter


class Raises(Filter):
    name = "raises"

    def score(self, texts):
        raise RuntimeError("kaboom\\nsecond line")
'''


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_stage_of_ones_own_that_raises_stops_the_run_with_one_line(tmp_path: Path, workers: str) -> None:
    (tmp_path / "raises.py").write_text(_RAISES)
    code, output = _filter([str(_corpus(tmp_path, 20)), "--out", str(tmp_path / "o"), "--workers", workers,
                            "--stage", f"{tmp_path / 'raises.py'}:Raises", "--batch-size", "8"])
    assert code == 1 and "Traceback" not in output
    assert output == "Error: stage raises (Raises) failed: RuntimeError: kaboom\n"


def test_a_built_in_stage_that_raises_keeps_its_traceback() -> None:
    """A bug in this package's own stages is not dressed up as the user's error."""
    from hygiene.stages import QualityFilter

    with pytest.raises((TypeError, KeyError)):
        QualityFilter()({"n": [0], "text": [None]})


def test_dedup_runs_no_stage_but_dedup(tmp_path: Path) -> None:
    """`hygiene dedup` takes no --stage or --profile, and ignores the quality, detector and own stages of a
    config file."""
    config = tmp_path / "c.yaml"
    config.write_text(f"stages:\n  - path: {SHOUT}:Shout\n")
    corpus = _corpus(tmp_path, 12)
    result = CliRunner().invoke(main, ["dedup", str(corpus), "--out", str(tmp_path / "o"), "--config", str(config),
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert [s["name"] for s in stats["stages"]] == ["normalize", "input", "exact_dedup", "near_dedup"]
    assert stats["kept"] == 12  # a third of the corpus shouts: the config's stage would reject 4
    shouted = CliRunner().invoke(main, ["filter", str(corpus), "--out", str(tmp_path / "f"), "--config", str(config),
                                        "--no-progress", "--no-synthetic"])
    assert shouted.exit_code == 0 and json.loads((tmp_path / "f" / "stats.json").read_text())["rejected"] == 4
    for option in ("--stage", "--profile", "--gpus-per-worker"):
        bad = CliRunner().invoke(main, ["dedup", str(corpus), "--out", str(tmp_path / "p"), option, "x"])
        assert bad.exit_code == 2 and f"No such option '{option}'" in bad.output


_PIPELINE_STAGES = '''
import threading

import numpy as np

from hygiene.stages import Filter


class WordCount(Filter):
    """A filter whose counts come from a prepare step (run in worker processes by the file engine)."""
    name = "wc"
    columns = {"wc": int}
    prepared_columns = {"wc_n": int}

    def prepare(self, batch):
        return {**batch, "wc_n": [len(t.split()) for t in batch["text"]]}

    def score(self, texts, prepared):
        n = prepared["wc_n"]
        return [None if x > 5 else "short" for x in n], {"wc": n}


class PrepareRaises(WordCount):
    name = "prepraise"

    def prepare(self, batch):
        raise RuntimeError("boom in prepare\\nsecond line")


class NumpyScores(Filter):
    name = "np"
    columns = {"s": float}

    def score(self, texts):
        s = np.arange(len(texts), dtype=np.float32)
        s[0] = np.nan
        return [None] * len(texts), {"s": s}


class Unpicklable(Filter):
    name = "unpick"

    def __init__(self):
        self.lock = threading.Lock()

    def score(self, texts):
        return [None] * len(texts), {}
'''


def _own(tmp_path: Path, name: str, **overrides):
    from hygiene.config import load_config

    (tmp_path / "pipeline_stages.py").write_text(_PIPELINE_STAGES)
    return load_config(overrides={"synthetic.enabled": False, **overrides,
                                  "stages": [{"path": f"{tmp_path / 'pipeline_stages.py'}:{name}"}]})


def test_a_prepare_step_of_ones_own_runs_in_the_library_and_its_errors_are_one_line(tmp_path: Path) -> None:
    import hygiene
    from hygiene.filter_run import run_filter

    texts = [make_doc(i) for i in range(6)] + ["two words"]
    decisions = list(hygiene.filter_records(texts, _own(tmp_path, "WordCount")))
    assert [d.reason for d in decisions] == [None] * 6 + ["too_few_words"]  # quality rejects it before wc
    assert all(d.scores["wc"] > 5 for d in decisions[:6])
    corpus = _corpus(tmp_path, 20)
    for workers in (1, 2):
        with pytest.raises(UserInputError) as caught:
            run_filter([corpus], tmp_path / f"o{workers}", _own(tmp_path, "PrepareRaises", workers=workers),
                       progress=False)
        assert str(caught.value) == "stage prepraise (PrepareRaises) failed to prepare: RuntimeError: boom in prepare"


def test_numpy_and_nan_scores_reach_every_output_as_json(tmp_path: Path) -> None:
    import datasets

    import hygiene
    from hygiene.filter_run import run_filter

    config = _own(tmp_path, "NumpyScores", **{"output.annotate": True})
    ds = datasets.Dataset.from_dict({"text": [make_doc(i) for i in range(4)]})
    kept, _ = hygiene.filter_dataset(ds, config)
    assert [json.loads(s).get("s") for s in kept["hygiene_scores"]] == [None, 1.0, 2.0, 3.0]  # NaN: no score
    run_filter([_corpus(tmp_path, 4)], tmp_path / "o", config, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "o" / "kept.jsonl").read_text().splitlines()]
    assert "s" not in rows[0]["hygiene"]["scores"] and rows[1]["hygiene"]["scores"]["s"] == 1.0


def test_a_stage_that_cannot_go_to_worker_processes_is_refused_in_one_line(tmp_path: Path) -> None:
    from hygiene.filter_run import run_filter

    with pytest.raises(UserInputError, match=r"^stage unpick \(Unpicklable\) cannot be sent to worker processes "
                                             r"\(TypeError: .*lock.*\): run with --workers 1"):
        run_filter([_corpus(tmp_path, 8)], tmp_path / "o", _own(tmp_path, "Unpicklable", workers=2), progress=False)
    assert run_filter([_corpus(tmp_path, 8)], tmp_path / "o1", _own(tmp_path, "Unpicklable"),
                      progress=False)["records_in"] == 8
