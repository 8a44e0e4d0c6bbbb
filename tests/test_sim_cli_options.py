"""The simulation commands check what they are given before any work: an output directory that cannot
be made, a number that is not finite, a device this machine lacks, sizes past its memory, an output
over an input; and --quiet silences the libraries' bars too."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from collapse_sim.cli import main

SMALL = ["--generations", "2", "--runs", "2", "--samples", "10", "--quiet"]


@pytest.mark.parametrize("args, message", [
    (["discrete", *SMALL, "--out", "{tmp}/file/sub"], "Invalid value for '--out': cannot create"),
    (["gaussian", *SMALL, "--sigma", "inf", "--out", "{tmp}/g"], "Invalid value for '--sigma': 'inf' is not a finite"),
    (["gaussian", *SMALL, "--mu", "nan", "--out", "{tmp}/g"], "Invalid value for '--mu': 'nan' is not a finite"),
    (["gaussian", *SMALL, "--mu", "1e308", "--out", "{tmp}/g"], "mu and sigma must be at most 1e+150"),
    (["discrete", *SMALL, "--zipf-exponent", "inf", "--out", "{tmp}/d"], "'inf' is not a finite number"),
    (["corpus", "{tmp}", "--split", "--fractions", "nan", "0.5", "0.5"], "'nan' is not a finite number"),
    (["vae", "--generations", "1", "--device", "bogus", "--out", "{tmp}/v"], "unknown torch device 'bogus'"),
    (["discrete", "--generations", "2", "--runs", "100000000000", "--samples", "10", "--quiet", "--out", "{tmp}/d"],
     "the sizes asked for are too large for this machine (MemoryError"),
    (["lm", "--preset", "tiny", "--train-file", "{tmp}/run/report.md", "--out", "{tmp}/run"],
     "overlaps the input"),
    (["pages", "--lm", "{tmp}/model", "--out", "{tmp}/model/tokenizer.json", "--n", "3"], "overlaps the input"),
    (["gmm", "--generations", "1", "--samples", "3", "--quiet", "--out", "{tmp}/m"], "3 is not in the range x>=4"),
    (["pretrain", "--time-budget", "0", "--out", "{tmp}/p"], "0.0 is not in the range x>0.0"),
    (["finetune-lm", "--time-budget", "-5", "--out", "{tmp}/f"], "-5.0 is not in the range x>0.0"),
])
def test_bad_values_are_refused_in_one_line_before_any_work(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report.md").write_text("human text\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "model" / "tokenizer.json").write_text("{}")
    result = CliRunner().invoke(main, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code != 0 and "Traceback" not in result.output and result.exception is not None
    assert message in result.output, result.output
    assert (tmp_path / "run" / "report.md").read_text() == "human text\n"  # inputs untouched
    assert (tmp_path / "model" / "tokenizer.json").read_text() == "{}"


def test_quiet_silences_the_libraries_progress_bars(tmp_path: Path) -> None:
    import datasets
    import huggingface_hub.utils
    import transformers.utils.logging as hf_logging

    try:
        result = CliRunner().invoke(main, ["gaussian", *SMALL, "--out", str(tmp_path / "g")])
        assert result.exit_code == 0, result.output
        assert not hf_logging.is_progress_bar_enabled() and not datasets.is_progress_bar_enabled()
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"  # and for libraries imported later
    finally:  # the variables go with the test (conftest); the libraries' switches are put back here
        for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
            os.environ[name] = "0"
        hf_logging.enable_progress_bar()
        datasets.enable_progress_bars()
        huggingface_hub.utils.enable_progress_bars()


@pytest.mark.parametrize("command", ["gaussian", "corpus", "pretrain", "finetune-lm", "gmm"])
def test_help_states_each_range_as_it_is(command: str) -> None:
    """An unbounded finite option reads "finite", not click's "x<=None"."""
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0 and "None]" not in result.output and "x<=None" not in result.output
