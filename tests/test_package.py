"""The package installs, both command groups answer --help and --version, writes are atomic."""
from __future__ import annotations

import json
from pathlib import Path

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


@pytest.mark.slow
def test_wheel_ships_the_models_and_finds_them(tmp_path):
    """A non-editable install carries every file of models/ and resolves the shipped folders from it."""
    import os
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"  # a copy, so the build's own build/ folder stays out of the checkout
    shutil.copytree(root, src, ignore=shutil.ignore_patterns(".*", "runs", "build", "dist", "*.egg-info",
                                                             "__pycache__", "tests", "benchmarks", "examples"))
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "whl"), str(src)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "whl").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"hygiene/_models/{p.relative_to(root / 'models').as_posix()}"
               for p in (root / "models").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert shipped and shipped <= names, sorted(shipped - names)[:5]

    site = tmp_path / "site"
    subprocess.run([*pip, "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   capture_output=True)
    probe = ("from hygiene.paths import detector_path, local_or_shipped, models_dir; "
             "print(models_dir()); print(detector_path() / 'manifest.json'); "
             "print(local_or_shipped('reference-lm') / 'model.safetensors')")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("COLLAPSE_HYGIENE_MODELS", None)
    # -I would drop PYTHONPATH; -S keeps the editable install's path hook out, so only the wheel is importable
    out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:0] = [{str(site)!r}]; {probe}"],
                         check=True, capture_output=True, text=True, cwd=tmp_path, env=env).stdout.split()
    assert Path(out[0]) == site / "hygiene" / "_models"
    assert all(Path(p).is_file() for p in out[1:]), out


def test_shipped_names_and_checkout_paths_resolve_from_any_folder(tmp_path, monkeypatch):
    """What the docs show (``models/detector``, ``--recipe models/detector/recipe.yaml``) works from a folder
    without the checkout, as the shipped names do; a path that exists here wins; a missing absolute path or
    Hub id comes back as given."""
    from hygiene.paths import local_or_shipped, models_dir
    from hygiene.recipe import load_recipe

    shipped = models_dir()
    monkeypatch.chdir(tmp_path)
    assert local_or_shipped("models/detector") == shipped / "detector" == local_or_shipped("detector")
    assert local_or_shipped("models/detector/recipe.yaml") == shipped / "detector" / "recipe.yaml"
    assert local_or_shipped("/no/such/model") == Path("/no/such/model")
    assert local_or_shipped("gpt2") == Path("gpt2") and local_or_shipped("models/gpt2") == Path("models/gpt2")
    (tmp_path / "models" / "detector").mkdir(parents=True)
    assert local_or_shipped("models/detector") == Path("models/detector")
    for name in ("detector", "models/detector/recipe.yaml", str(shipped / "detector")):
        assert load_recipe(name).out == "models/detector"


def test_a_recipe_that_would_read_another_machine_lm_than_it_writes_is_refused(tmp_path, monkeypatch):
    """Run outside the checkout, the shipped recipe writes ./models/machine-lm while its detector's name
    ``machine-lm`` loads the shipped model: refused before any work, naming both; in the checkout it holds."""
    from hygiene.errors import UserInputError
    from hygiene.paths import models_dir
    from hygiene.recipe import check_machine_lm, load_recipe

    recipe = load_recipe("detector")
    monkeypatch.chdir(models_dir().parent)
    if (models_dir().parent / recipe.machine_lm.out).resolve() == (models_dir() / "machine-lm").resolve():
        check_machine_lm(recipe)  # a checkout: the recipe's folder is the shipped one
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserInputError, match=r"features\.performer, features\.contrast_lm \(machine-lm\) loads "):
        check_machine_lm(recipe)


def test_missing_default_data_says_where_it_looked_and_how_to_name_it(tmp_path, monkeypatch):
    from hygiene.errors import UserInputError
    from hygiene.labelled import human_pool

    monkeypatch.setenv("COLLAPSE_HYGIENE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(UserInputError, match="no data directory at .*nowhere: set COLLAPSE_HYGIENE_DATA"):
        human_pool("eval", sources=["web"])
    r = CliRunner().invoke(sim_main, ["pages", "--lm", "models/base-lm", "--n", "3", "--out",
                                      str(tmp_path / "p.jsonl"), "--quiet"])
    assert r.exit_code == 1 and "no human-pool document" in r.output and "COLLAPSE_HYGIENE_DATA" in r.output, r.output
    r = CliRunner().invoke(sim_main, ["pages", "--lm", str(tmp_path / "no-lm"), "--out", str(tmp_path / "q.jsonl")])
    assert r.exit_code == 1 and "shipped model's name" in r.output, r.output


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    """A write killed midway leaves ``.<name>.<pid>.*.tmp``; the next write of that file removes it once that
    process has ended, and leaves a live process's alone."""
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".x.json.{int(dead.stdout)}.abc.tmp"
    live = tmp_path / f".x.json.{os.getpid()}.def.tmp"
    for p in (stale, live):
        p.write_text("half")
    write_json(tmp_path / "x.json", {"a": 1})
    assert not stale.exists() and live.exists() and json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
