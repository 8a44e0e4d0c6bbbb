"""What every simulation shares: its command-line options, resuming, panel labels, the generation-0 check."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from collapse_sim.cli import main
from collapse_sim.metrics import SimulationResult
from collapse_sim.plots import LABELS, metric_label
from collapse_sim.resume import check_resumable, config_changes

SIMULATIONS = ("discrete", "gaussian", "gmm", "vae", "lm", "polluted")


@pytest.mark.parametrize("command", SIMULATIONS)
def test_every_simulation_takes_out_defaulting_to_runs_command_and_quiet(command):
    params = {p.name: p for p in main.commands[command].params}
    assert str(params["out"].default) == f"runs/{command}"
    assert params["quiet"].is_flag


def test_config_changes_ignore_what_may_change_and_name_the_rest():
    before = {"generations": 3, "seed": 0, "train": {"threads": 1, "lr": 0.1}}
    assert config_changes(before, {**before, "generations": 5, "train": {"threads": 2, "lr": 0.1}},
                          ("generations", "train.threads")) == []
    assert config_changes(before, {**before, "seed": 1, "train": {"threads": 1, "lr": 0.2}}) == ["seed", "train.lr"]
    assert config_changes(before, {k: v for k, v in before.items() if k != "train"}) == ["train"]  # a section gone
    check_resumable(None, before, "fresh")  # nothing there: nothing to refuse
    with pytest.raises(ValueError, match=r"different configuration \(seed\)"):
        check_resumable(before, {**before, "seed": 1}, "out")


def test_every_simulation_metric_has_a_title_and_a_unit():
    from collapse_sim.vae_collapse import METRICS as VAE_METRICS

    names = ["support", "entropy", "tv_distance", "mu", "sigma2", "mu_error_squared", "w2_squared", "tail_mass",
             "w2", "l2", "holdout_loglik", *VAE_METRICS]
    for name in names:
        title, unit = metric_label(name)
        assert name in LABELS and title and unit, name
    assert metric_label("weight_2") == ("Component 2 weight", "mixture weight (0-1)")


def _vae_result(gen0_recall: float, real_recall: float) -> SimulationResult:
    result = SimulationResult("vae", {}, [0, 1])
    result.add("recall", np.array([[gen0_recall, gen0_recall / 2]]))
    result.summary = {"real_baseline": {"recall": real_recall}}
    return result


def test_undertrained_generation_0_is_flagged_by_its_recall_against_the_real_sets():
    from collapse_sim.vae_collapse import UNDERTRAINED_RECALL, undertrained

    assert undertrained(_vae_result(0.8, 0.9)) is None
    assert undertrained(_vae_result(UNDERTRAINED_RECALL * 0.9, 0.9)) is None  # at the bound: fine
    message = undertrained(_vae_result(0.01, 0.9))
    assert message and "undertrained" in message and "0.010" in message


def test_the_polluted_report_does_not_import_the_simulation():
    code = "import sys, collapse_sim.polluted_report; print('collapse_sim.polluted' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
