"""The package installs, both command groups answer --help and --version, writes are atomic."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from collapse_sim.cli import main as sim_main
from collapse_sim.metrics import SimulationResult, spread
from hygiene import __version__
from hygiene.atomic import atomic_open, write_json
from hygiene.cli import main as hyg_main


@pytest.mark.parametrize("group", [hyg_main, sim_main])
def test_groups_have_help_and_version(group):
    r = CliRunner().invoke(group, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = CliRunner().invoke(group, ["--help"])
    assert r.exit_code == 0
    for name in group.commands:
        r = CliRunner().invoke(group, [name, "--help"])
        assert r.exit_code == 0, (name, r.output)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "x.json"
    write_json(p, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(p) as fh:
            fh.write("partial")
            raise RuntimeError("boom")
    assert json.loads(p.read_text()) == {"a": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["x.json"]


def test_spread_and_schema(tmp_path):
    v = [[1.0, 2.0], [3.0, 4.0], [5.0, float("nan")]]
    s = spread(v)
    assert s["mean"] == [3.0, 3.0] and s["median"] == [3.0, 3.0]
    r = SimulationResult("x", {"k": 1}, [0, 1])
    r.add("m", v)
    d = json.loads(r.save(tmp_path).read_text())
    assert set(d) == {"experiment", "config", "generations", "metrics", "summary"}
    assert set(d["metrics"]["m"]) == {"mean", "median", "p10", "p90"}


def test_atomic_files_get_umask_permissions(tmp_path):
    import os

    p = tmp_path / "y.json"
    write_json(p, {})
    mask = os.umask(0)
    os.umask(mask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~mask)
