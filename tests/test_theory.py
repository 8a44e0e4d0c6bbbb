"""The theory simulations against theory: fixed seeds, tolerances from the sampling error."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats
from scipy.integrate import quad
from scipy.special import polygamma, psi

from collapse_sim import discrete, gaussian, gmm
from collapse_sim.cli import main
from collapse_sim.mixture import Mixture, l2_distance, w2_distance
from collapse_sim.reuse import Reuse


def _se(x: np.ndarray) -> np.ndarray:
    """Standard error of the mean over runs (axis 0)."""
    return x.std(axis=0, ddof=1) / np.sqrt(len(x))


# --- Gaussian ---------------------------------------------------------------------------------


def test_unbiased_variance_keeps_its_mean_while_its_median_falls_to_zero():
    m, n, runs = 50, 40, 20000
    s2 = gaussian.trajectories(gaussian.GaussianConfig(generations=n, samples=m, runs=runs, seed=1))["sigma2"]
    # sigma_n^2 = prod of n independent chi2_k / k factors, k = M - 1: mean 1, E[factor^2] = 1 + 2/k.
    k = m - 1
    sd_mean = np.sqrt(((1 + 2 / k) ** n - 1) / runs)
    assert abs(s2[:, n].mean() - 1.0) < 4 * sd_mean
    # log sigma_n^2 is a sum of n iid log(chi2_k / k): mean psi(k/2) + ln(2/k), variance psi'(k/2);
    # its median sits within |skew| * sd / 6 of its mean (near-normal sum).
    mean_log, var_log = n * (psi(k / 2) + np.log(2 / k)), n * polygamma(1, k / 2)
    skew = n * polygamma(2, k / 2) / var_log**1.5
    tol = 4 * 1.2533 * np.sqrt(var_log / runs) + abs(skew) * np.sqrt(var_log) / 6
    assert abs(np.log(np.median(s2[:, n])) - mean_log) < tol
    # over 10 M generations the median falls steadily to ~exp(10 M (psi(k/2) + ln(2/k))) ~ e^-10
    long = gaussian.trajectories(gaussian.GaussianConfig(generations=10 * m, samples=m, runs=1000, seed=1))
    medians = np.median(long["sigma2"], axis=0)
    assert medians[-1] < 1e-3
    assert np.all(np.diff(medians[::m]) < 0)


def test_mean_error_and_w2_grow_like_the_theory_while_the_variance_lasts():
    m, runs = 100, 20000
    cfg = gaussian.GaussianConfig(generations=m, samples=m, runs=runs, seed=2)
    t = gaussian.trajectories(cfg)
    sizes = gaussian.sample_sizes(cfg)
    err = (t["mu"] - cfg.mu) ** 2
    w2 = gaussian.w2_squared(t["mu"], t["sigma2"], cfg.mu, cfg.sigma)
    exact = gaussian.expected_w2_squared(sizes, cfg.sigma)
    for n in (10, 50, 100):
        assert abs(err[:, n].mean() - n / m) < 4 * _se(err[:, n])  # E[(mu_n - mu)^2] = sigma^2 n / M
        assert abs(w2[:, n].mean() - exact[n]) < 4 * _se(w2[:, n])
    # about linear in n / M: the exact curve is the paper's (3/2) sigma^2 n / M to first order
    first = gaussian.first_order_w2_squared(sizes, cfg.sigma)
    assert np.allclose(exact[1:11], first[1:11], rtol=0.02)


@pytest.mark.parametrize("mode", ["replace", "mix", "accumulate"])
def test_sufficient_statistics_match_fitting_explicit_samples(mode):
    """The simulation draws (mean, SS) directly; fitting real samples must give the same law."""
    m, gens, runs, frac = 10, 4, 4000, 0.3
    cfg = gaussian.GaussianConfig(generations=gens, samples=m, runs=runs, seed=3, reuse=Reuse(mode, frac))
    t = gaussian.trajectories(cfg)

    rng = np.random.default_rng(4)
    mu, sd = np.zeros(runs), np.ones(runs)
    seen = np.empty((runs, 0))
    k = cfg.reuse.n_real(m)
    for _ in range(gens):
        x = mu[:, None] + sd[:, None] * rng.standard_normal((runs, m))
        x[:, : k] = rng.standard_normal((runs, k))  # fresh original data (mix only: k = 0 otherwise)
        if mode == "accumulate":
            x = seen = np.concatenate([seen, x], axis=1)
        mu, sd = x.mean(axis=1), x.std(axis=1, ddof=1)
    assert stats.ks_2samp(t["mu"][:, -1], mu).pvalue > 1e-3
    assert stats.ks_2samp(t["sigma2"][:, -1], sd**2).pvalue > 1e-3


def test_accumulating_data_keeps_w2_bounded_and_replacing_does_not():
    m, gens, runs = 100, 1000, 1000
    w2 = {}
    for mode in ("replace", "accumulate"):
        cfg = gaussian.GaussianConfig(generations=gens, samples=m, runs=runs, seed=5, reuse=Reuse(mode))
        t = gaussian.trajectories(cfg)
        w2[mode] = gaussian.w2_squared(t["mu"], t["sigma2"], cfg.mu, cfg.sigma).mean(axis=0)
    # accumulate: generation i adds M of (i + 1) M points, so its step has ~1/(i + 1)^2 of the
    # first step's variance: the error stays below pi^2/6 times the first generation's.
    first = gaussian.expected_w2_squared([m])[1]
    assert w2["accumulate"].max() < np.pi**2 / 6 * first * 1.1
    assert w2["replace"][-1] > 50 * w2["accumulate"][-1]


def test_superlinear_sample_growth_keeps_the_error_bounded():
    m, gens, runs = 50, 1000, 2000
    finals = {}
    for growth in ("linear", "quadratic"):
        cfg = gaussian.GaussianConfig(generations=gens, samples=m, runs=runs, seed=6, growth=growth)
        t = gaussian.trajectories(cfg)
        w2 = gaussian.w2_squared(t["mu"], t["sigma2"], cfg.mu, cfg.sigma)
        exact = gaussian.expected_w2_squared(gaussian.sample_sizes(cfg), cfg.sigma)
        for n in (10, 100, gens):
            assert abs(w2[:, n].mean() - exact[n]) < 4 * _se(w2[:, n])
        finals[growth] = (w2[:, 10].mean(), w2[:, gens].mean())
    # quadratic: sum 1/M_i converges (pi^2/6M), so the error levels off; linear: it grows like ln n
    assert finals["quadratic"][1] < 1.2 * finals["quadratic"][0]
    assert finals["linear"][1] > 2 * finals["linear"][0]


# --- discrete ---------------------------------------------------------------------------------


def test_discrete_support_never_grows_and_every_run_is_absorbed_on_time():
    cfg = discrete.DiscreteConfig(generations=500, samples=30, runs=2000, seed=7, states=3, zipf_exponent=0.0)
    t = discrete.trajectories(cfg)
    assert np.all(np.diff(t["support"], axis=1) <= 0)
    absorbed = discrete.absorption_generation(t["support"])
    assert not np.isnan(absorbed).any()
    # Wright-Fisher diffusion approximation: allow 4 standard errors plus 5% for its O(1/M) bias
    theory = discrete.expected_absorption_time(cfg.original, cfg.samples)
    assert abs(absorbed.mean() - theory) < 4 * absorbed.std(ddof=1) / np.sqrt(cfg.runs) + 0.05 * theory
    # absorbed runs have zero entropy and sit at TV = 1 - p0[state]
    end = t["entropy"][:, -1]
    assert np.allclose(end, 0.0) and np.allclose(t["tv_distance"][:, -1], 1 - 1 / 3)


def test_fresh_or_accumulated_data_keeps_the_states_alive():
    base = dict(generations=300, samples=30, runs=300, seed=8, states=5)
    acc = discrete.trajectories(discrete.DiscreteConfig(**base, reuse=Reuse("accumulate")))
    assert np.all(np.diff(acc["support"][:, 1:], axis=1) >= 0)  # a state once sampled is never forgotten
    mix = discrete.trajectories(discrete.DiscreteConfig(**base, reuse=Reuse("mix", 0.1)))
    rep = discrete.trajectories(discrete.DiscreteConfig(**base))
    # replace: E[T] ~ 2M ln-terms ~ 80 generations, so nearly all runs end on one state; with
    # 3 fresh samples a generation, lost states come back (mix is not absorbing)
    assert np.mean(rep["support"][:, -1] == 1) > 0.9
    assert mix["support"][:, -1].mean() > 3
    assert mix["tv_distance"][:, -1].mean() < 0.5 * rep["tv_distance"][:, -1].mean()


# --- mixtures and GMM -------------------------------------------------------------------------


def test_mixture_distances_match_closed_forms():
    a, b = Mixture.of([1.0], [0.0], [1.0]), Mixture.of([1.0], [1.0], [4.0])
    # Gaussians: W2^2 = (mu_a - mu_b)^2 + (sd_a - sd_b)^2; midpoint-rule error is O(levels^-1)
    assert w2_distance(a, b, levels=4000) == pytest.approx(np.sqrt(2.0), rel=1e-3)
    p = Mixture.of([0.3, 0.7], [-2.0, 1.0], [0.5, 2.0])
    sq, _ = quad(lambda x: (p.pdf(np.array([x]))[0] - b.pdf(np.array([x]))[0]) ** 2, -30, 30, limit=200)
    assert l2_distance(p, b) == pytest.approx(np.sqrt(sq), rel=1e-6)
    narrow = Mixture.of([0.3, 0.7], [0.0, 5.0], [1e-8, 1.0])  # a near-delta component is still resolved
    u = np.linspace(0.01, 0.99, 99)
    assert np.allclose(narrow.cdf(narrow.quantile(u)), u, atol=1e-5)


def test_gmm_tail_mass_falls_under_replace_and_holds_with_ten_percent_fresh_data():
    # replace with M = 40: by n ~ 4M the variance is gone (sigma_n^2 ~ exp(-n/M)), so the mass
    # beyond the original's 1st/99th percentiles (2% at generation 0) vanishes in a typical run
    rep = gmm.simulate(gmm.GMMConfig(generations=150, samples=40, runs=2, seed=0, holdout=100, w2_levels=100))
    original = rep.metrics["tail_mass"]["mean"][0]
    assert original == pytest.approx(0.02, abs=1e-4)
    assert max(rep.metrics["tail_mass"]["median"][-10:]) < 0.1 * original
    # mix: 10 fresh original points of M = 100 each generation pull the fit back; its tail mass
    # fluctuates around the original's, averaged over generations 50-150
    mix = gmm.simulate(gmm.GMMConfig(generations=150, samples=100, runs=2, seed=0, holdout=100, w2_levels=100,
                                     reuse=Reuse("mix", 0.1)))
    assert 0.5 * original < np.mean(mix.metrics["tail_mass"]["mean"][50:]) < 2 * original


def test_gmm_runs_resume_from_checkpoints_with_identical_results(tmp_path):
    cfg = gmm.GMMConfig(generations=6, samples=50, runs=2, seed=9, holdout=100, w2_levels=50, snapshots=(0, 6))
    first = gmm.simulate(cfg, checkpoint_dir=tmp_path).to_dict()
    (tmp_path / "run_0001.json").unlink()  # as if interrupted during run 1
    assert gmm.simulate(cfg, checkpoint_dir=tmp_path).to_dict() == first
    assert gmm.simulate(cfg).to_dict() == first
    changed = r"run_0000.json: written with a different configuration \(holdout, seed, snapshots, w2_levels\)"
    with pytest.raises(gmm.CheckpointError, match=changed):
        gmm.simulate(gmm.GMMConfig(generations=6, samples=50, runs=2, seed=10), checkpoint_dir=tmp_path)
    # another number of runs reuses the finished ones (a run depends on its own seed only) and adds the rest
    more = dataclasses.replace(cfg, runs=3)
    before = (tmp_path / "run_0000.json").read_bytes()
    wider = gmm.simulate(more, checkpoint_dir=tmp_path).to_dict()
    assert (tmp_path / "run_0000.json").read_bytes() == before and (tmp_path / "run_0002.json").is_file()
    assert wider == gmm.simulate(more).to_dict()
    assert gmm.simulate(dataclasses.replace(cfg, runs=1), checkpoint_dir=tmp_path).to_dict() == \
        gmm.simulate(dataclasses.replace(cfg, runs=1)).to_dict()


# --- command line -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "figures"),
    [
        (["discrete", "--generations", "20", "--runs", "20", "--states", "4"], ["metrics.png"]),
        (["gaussian", "--generations", "20", "--runs", "50", "--growth", "linear"], ["w2.png", "metrics.png"]),
        (["gmm", "--generations", "5", "--samples", "40", "--mode", "mix", "--real-fraction", "0.5"],
         ["densities.png", "metrics.png"]),
    ],
)
def test_commands_write_metrics_in_the_shared_schema_and_figures(tmp_path, command, figures):
    res = CliRunner().invoke(main, [*command, "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert set(data) == {"experiment", "config", "generations", "metrics", "summary"}
    assert data["experiment"] == command[0] and data["generations"] == list(range(int(command[2]) + 1))
    for spread in data["metrics"].values():
        assert set(spread) == {"mean", "median", "p10", "p90"}
        assert all(len(v) == len(data["generations"]) for v in spread.values())
    for name in figures:
        assert (tmp_path / name).stat().st_size > 0


def test_bad_input_is_a_one_line_error(tmp_path):
    res = CliRunner().invoke(main, ["gaussian", "--samples", "1", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "'--samples': 1 is not in the range x>=2" in res.output
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "run_0000.json").write_text("{not json")
    res = CliRunner().invoke(main, ["gmm", "--generations", "3", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "run_0000.json" in res.output and "Traceback" not in res.output
