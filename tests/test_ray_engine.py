"""The Ray engine makes the same decisions as the local engine, record by record, and loses no record."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from hygiene.config import FilterConfig, load_config  # noqa: E402
from hygiene.errors import UserInputError  # noqa: E402
from hygiene.filter_run import run_filter  # noqa: E402
from hygiene.normalize import normalize_text  # noqa: E402
from hygiene.ray_engine import RayConfig, cluster_roots, run_filter_ray  # noqa: E402
from gopher_docs import make_doc  # noqa: E402
from tiny_detector import save_tiny_detector  # noqa: E402



def edit(text: str, seed: int, n: int = 1) -> str:
    """``text`` with ``n`` words replaced: a near-duplicate (Jaccard of 5-gram shingles about 0.9 for n=1)."""
    words = text.split()
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(words), n, replace=False):
        words[i] = "edited"
    return " ".join(words)


class MarkerDetector:
    """Fake detector: texts containing 'machine' score 0.9, others 0.1 (threshold 0.5); a cascade's first pass
    settles the others."""

    threshold_ = 0.5

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.last_settled_ = np.array(["machine" not in t for t in texts])
        p = np.array([0.9 if "machine" in t else 0.1 for t in texts])
        return np.stack([1 - p, p], axis=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three shards (JSONL, gzipped JSONL, Parquet) with exact and near duplicates (across shards and in
    chains), low-quality, empty and synthetic documents, and unreadable records."""
    d = tmp_path_factory.mktemp("crawl")
    docs = [make_doc(i) for i in range(30)]
    a = [{"text": t, "url": f"a{i}"} for i, t in enumerate(docs[:10])]
    a += [{"text": docs[2]}, {"text": edit(docs[3], 1)}, {"text": "too short to keep"}, {"text": " \u200b "},
          {"text": make_doc(100) + " machine"}, {"text": edit(edit(docs[3], 1), 2)}, {"title": "no text"}]
    text_a = "".join(json.dumps(r) + "\n" for r in a) + "{not json\n" + json.dumps({"text": docs[10]}) + "\n"
    (d / "a.jsonl").write_text(text_a, encoding="utf-8")
    b = [{"text": t} for t in docs[11:20]] + [{"text": docs[5]}, {"text": chr(ord(docs[6][0]) + 0xFEE0) + docs[6][1:]},
                                              {"text": edit(docs[12], 3)}, {"text": make_doc(101) + " machine"},
                                              {"text": "\n".join(["same line"] * 60)}, {"text": 7}]
    with gzip.open(d / "b.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in b)
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = docs[20:30] + [docs[0], edit(docs[21], 4), edit(docs[11], 5)]
    pq.write_table(pa.table({"text": rows, "row": list(range(len(rows)))}), d / "c.parquet")
    return d


def _read(out: Path, name: str) -> list[dict]:
    """Every record of one output file (the same layout from both engines)."""
    return [json.loads(line) for line in (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


def _by_id(records: list[dict]) -> dict[str, dict]:
    ids = [r["hygiene"]["id"] for r in records]
    assert len(set(ids)) == len(ids)
    return dict(zip(ids, records))


def _config(**overrides) -> FilterConfig:
    return load_config(overrides={"output.annotate": True, "batch_size": 10, **overrides}, profile="gopher")


@pytest.mark.slow
@pytest.mark.ray
def test_ray_and_local_make_the_same_decisions(ray_cluster, corpus: Path, tmp_path: Path) -> None:
    config = _config(stages=[{"path": "shout_stage:Shout"}])  # a stage from outside the package, too
    odd = tmp_path / "odd.jsonl"  # a lone surrogate, which JSON allows and Arrow strings do not
    odd.write_text("".join(json.dumps({"text": t}) + "\n" for t in (make_doc(102) + " \ud800", make_doc(0),
                                                                     make_doc(103).upper())))
    inputs = [corpus, odd]
    local = run_filter(inputs, tmp_path / "local", config, detector=MarkerDetector(), progress=False)
    stats = run_filter_ray(inputs, tmp_path / "ray", config, RayConfig(workers=2), detector=MarkerDetector(),
                           progress=False)
    for name in ("kept", "rejected"):
        assert _by_id(_read(tmp_path / "ray", name)) == _by_id(_read(tmp_path / "local", name)), name
    key = lambda e: (e["shard"], e["line"] or 0)  # noqa: E731
    assert sorted(_read(tmp_path / "ray", "errors"), key=key) == sorted(_read(tmp_path / "local", "errors"), key=key)
    for k in ("records_in", "kept", "rejected", "errors", "by_stage", "synthetic_threshold", "groups",
              "p_machine_histogram", "detector_first_pass"):
        assert stats[k] == local[k], k
    assert stats["detector_first_pass"]["settled"] > 0
    assert stats["detector_first_pass"]["scored"] == stats["by_stage"]["synthetic"]["machine_generated"]
    untimed = lambda stages: [{k: v for k, v in s.items() if k != "seconds"} for s in stages]  # noqa: E731
    assert untimed(stats["stages"]) == untimed(local["stages"])
    assert all(s["seconds"] > 0 for s in stats["stages"] if s["records_in"]), stats["stages"]
    assert stats["records_in"] == stats["kept"] + stats["rejected"] + stats["errors"]
    assert set(stats["by_stage"]) == {"input", "exact_dedup", "quality", "near_dedup", "shout", "synthetic"}
    assert stats["by_stage"]["shout"] == {"too_loud": 1}
    assert stats["by_stage"]["near_dedup"]["near_duplicate"] == 5 and stats["errors"] == 3
    assert stats["by_stage"]["exact_dedup"]["duplicate"] == 5  # one full-width until NFKC, one across files
    assert any("\ud800" in r["text"] for r in _read(tmp_path / "ray", "kept"))
    rejected = _by_id(_read(tmp_path / "ray", "rejected"))
    chain = [r for r in rejected.values() if r["hygiene"]["id"].endswith("a.jsonl:16")]
    assert chain[0]["hygiene"]["scores"]["near_cluster"] == 3  # an edit of an edit joins the first one's cluster
    assert not (tmp_path / "ray" / ".partial").exists()


@pytest.mark.slow
@pytest.mark.ray
def test_a_detector_loaded_from_its_folder_decides_as_in_the_local_engine(ray_cluster, corpus: Path,
                                                                          tmp_path: Path) -> None:
    """The detector's cheap features are computed in the fused map (its ``prepare`` step), its language model
    on the actors: the same decisions and scores as the local engine, and no prepared column in the output."""
    config = _config(**save_tiny_detector(tmp_path))
    local = run_filter([corpus], tmp_path / "local", config, progress=False)
    stats = run_filter_ray([corpus], tmp_path / "ray", config, RayConfig(workers=2), progress=False)
    for name in ("kept", "rejected"):
        ray_out, local_out = _by_id(_read(tmp_path / "ray", name)), _by_id(_read(tmp_path / "local", name))
        assert ray_out.keys() == local_out.keys(), name
        for k, r in ray_out.items():
            assert r["hygiene"]["scores"].keys() == local_out[k]["hygiene"]["scores"].keys()
            p, q = r["hygiene"]["scores"].get("synthetic_p"), local_out[k]["hygiene"]["scores"].get("synthetic_p")
            assert p == q or p == pytest.approx(q, rel=1e-6), k
            assert "synthetic_first_pass" not in r["hygiene"]["scores"]
    assert stats["by_stage"] == local["by_stage"] and stats["by_stage"]["synthetic"]


@pytest.mark.slow
@pytest.mark.ray
def test_annotate_only_and_parquet_from_the_command_line(ray_cluster, corpus: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hygiene.cli import main

    config = _config(**{"output.annotate_only": True, "synthetic.enabled": False, "output.format": "parquet"})
    local = run_filter([corpus], tmp_path / "local", config, progress=False)
    args = ["filter", str(corpus), "--out", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2",
            "--profile", "gopher", "--annotate-only", "--no-synthetic", "--format", "parquet", "--batch-size", "10", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "ray" / "stats.json").read_text())
    import pyarrow.parquet as pq

    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(p.name for p in (tmp_path / "local").iterdir())
    kept = pq.read_table(tmp_path / "ray" / "kept.parquet").to_pylist()
    assert len(kept) == stats["kept"] == local["kept"] == stats["records_in"] - stats["errors"]
    assert stats["by_stage"] == local["by_stage"] and stats["rejected"] == 0
    assert stats["engine"] == "ray" and stats["ray"]["workers"] == 2
    with pytest.raises(UserInputError, match="already holds a finished run"):
        run_filter_ray([corpus], tmp_path / "ray", config, progress=False)
    with pytest.raises(UserInputError, match="more than 1 unreadable records"):
        run_filter_ray([corpus], tmp_path / "ray2", _config(max_errors=1, **{"synthetic.enabled": False}),
                       progress=False)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_out_in_an_input_directory_never_reads_or_deletes_an_input(ray_cluster, corpus: Path, tmp_path: Path,
                                                                     engine: str) -> None:
    import shutil

    d = tmp_path / "crawl"
    shutil.copytree(corpus, d)
    (d / "notes").mkdir()
    (d / "notes" / "notes.jsonl").write_text(json.dumps({"text": make_doc(7)}) + "\n")  # input: refused as --out
    before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    run = run_filter if engine == "local" else run_filter_ray
    config = _config(**{"synthetic.enabled": False})
    with pytest.raises(UserInputError, match="lies inside the output folder"):
        run([d], d, config, progress=False)
    with pytest.raises(UserInputError, match="lies in an input folder and holds .*notes.jsonl"):
        run([d], d / "notes", config, progress=False)
    stats = run([d], d / "clean", config, progress=False)
    again = run([d], d / "clean", config, overwrite=True, progress=False)
    read = run_filter([corpus], None, config, progress=False)["records_in"] + 1  # and notes.jsonl
    assert stats["records_in"] == again["records_in"] == read
    assert all(p.read_bytes() == data for p, data in before.items())


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("selection", [{"limit": 24}, {"sample": 20, "sample_seed": 3}])
def test_limit_and_sample_choose_the_same_records_as_the_local_engine(ray_cluster, corpus: Path, tmp_path: Path,
                                                                       selection: dict) -> None:
    config = _config(**{"synthetic.enabled": False, **selection})  # 24: all of a.jsonl (19 lines), 5 of b.jsonl.gz
    local = run_filter([corpus], tmp_path / "local", config, progress=False)
    stats = run_filter_ray([corpus], tmp_path / "ray", config, RayConfig(workers=2), progress=False)
    assert stats["records_in"] == local["records_in"] == next(iter(selection.values()))
    for name in ("kept", "rejected"):
        assert _by_id(_read(tmp_path / "ray", name)) == _by_id(_read(tmp_path / "local", name)), name
    key = lambda e: (e["shard"], e["line"] or 0)  # noqa: E731
    assert sorted(_read(tmp_path / "ray", "errors"), key=key) == sorted(_read(tmp_path / "local", "errors"), key=key)
    for k in ("kept", "rejected", "errors", "by_stage", "groups"):
        assert stats[k] == local[k], k
    shards = {r["hygiene"]["id"].rsplit(":", 1)[0] for name in ("kept", "rejected") for r in _read(tmp_path / "ray", name)}
    assert len(shards) > 1  # the selection spans shards


@pytest.mark.slow
@pytest.mark.ray
def test_a_stage_that_raises_is_one_line_on_ray(ray_cluster, corpus: Path, tmp_path: Path) -> None:
    """The stage's one-line error reaches the caller, not Ray's wrapping of it (a traceback of its own)."""
    (tmp_path / "raises.py").write_text("from hygiene.stages import Filter\n\n\nclass Raises(Filter):\n"
                                        "    name = 'raises'\n\n    def score(self, texts):\n"
                                        "        raise RuntimeError('kaboom')\n")
    config = _config(stages=[{"path": f"{tmp_path / 'raises.py'}:Raises"}], **{"synthetic.enabled": False})
    with pytest.raises(UserInputError) as caught:
        run_filter_ray([corpus], tmp_path / "o", config, progress=False)
    assert str(caught.value) == "stage raises (Raises) failed: RuntimeError: kaboom"
    # from the command line, nothing of Ray Data's logged traceback of it comes before that line
    import subprocess
    import sys

    hygiene = Path(sys.executable).parent / "hygiene"
    done = subprocess.run([str(hygiene), "filter", str(corpus), "--out", str(tmp_path / "cli"), "--engine", "ray",
                           "--no-synthetic", "--no-progress", "--stage", f"{tmp_path / 'raises.py'}:Raises"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.splitlines()[-1] == "Error: stage raises (Raises) failed: RuntimeError: kaboom"


def test_cluster_roots_follow_chains() -> None:
    child, root = cluster_roots(np.array([5, 2, 9, 7, 3]), np.array([2, 1, 7, 5, 0]))
    assert child.tolist() == [2, 3, 5, 7, 9] and root.tolist() == [1, 0, 1, 1, 1]


def test_cli_engine_options(corpus: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hygiene.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["filter", str(corpus), "--out", str(tmp_path / "o"), "--ray-address", "auto"])
    assert result.exit_code == 2 and "--ray-address and --gpus-per-worker need --engine ray" in result.output
    result = runner.invoke(main, ["filter", str(corpus), "--out", str(tmp_path / "o"), "--engine", "ray", "--resume",
                                  "--no-synthetic"])
    assert result.exit_code == 1 and result.output.startswith("Error: the Ray engine cannot resume")
    assert result.output.count("\n") == 1


_OWN = '''
from hygiene.stages import Stage


class TextLength(Stage):
    name = "length"
    columns = {"chars": int}

    def process(self, batch):
        return {**batch, "chars": [len(t) for t in batch["text"]]}


class DropsARow(Stage):
    name = "drops"

    def process(self, batch):
        return {k: v[:-1] for k, v in batch.items()}


class SetupFails(Stage):
    name = "setup_fails"
    pure = False

    def setup(self):
        raise RuntimeError("cannot load model")

    def process(self, batch):
        return batch
'''


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_stage_of_ones_own_sees_the_same_batch_and_is_held_to_its_rows_on_either_engine(
        ray_cluster, tmp_path: Path, engine: str) -> None:
    """Its ``text`` is the normalised text on both engines; one that drops a row, or whose setup raises, is a
    one-line error on both (before, Ray silently lost the records and the local engine gave a traceback)."""
    (tmp_path / "own.py").write_text(_OWN)
    suffixes = ["", " \u200bzero\u200bwidth", " \ufb01ne \uff21", " a\r\nb"]  # normalisation changes three
    texts = [make_doc(i) + suffix for i, suffix in enumerate(suffixes)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    run = run_filter if engine == "local" else run_filter_ray
    config = _config(stages=[{"path": f"{tmp_path / 'own.py'}:TextLength"}], **{"synthetic.enabled": False})
    run([src], tmp_path / "o", config, progress=False)
    chars = {r["hygiene"]["id"]: r["hygiene"]["scores"]["chars"] for r in _read(tmp_path / "o", "kept")}
    assert sorted(chars.values()) == sorted(len(normalize_text(t)) for t in texts)
    for name, message in (("DropsARow", r"stage drops \(DropsARow\) returned \d+ rows of .* a stage never drops"),
                          ("SetupFails", r"^stage setup_fails \(SetupFails\) could not set up: RuntimeError: cannot")):
        config = _config(stages=[{"path": f"{tmp_path / 'own.py'}:{name}"}], **{"synthetic.enabled": False})
        with pytest.raises(UserInputError, match=message):
            run([src], tmp_path / name, config, progress=False)
