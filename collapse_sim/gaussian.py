"""A Gaussian re-fitted on its own samples: the variance is lost, the error grows like n/M.

Generation 0 is the original ``N(mu, sigma^2)``; generation ``i + 1`` is fitted to
``M_i`` samples of generation ``i`` with the sample mean and the unbiased variance
(Shumailov et al. 2024, Methods, "single-dimensional Gaussian").

The simulation never materialises the samples. For Gaussian data the sample mean
and the sum of squared deviations are independent, ``mean ~ N(mu_i, sigma_i^2 / n)``
and ``SS ~ sigma_i^2 chi^2_{n-1}``, so drawing those two numbers per run and
generation has exactly the distribution of fitting ``n`` explicit samples, at a cost
that does not depend on ``n`` (needed for ``--growth quadratic``, where ``M_i``
reaches 10^8). Groups of different origin (fresh original data, synthetic data,
all earlier data) are pooled with the parallel-variance formula.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import ndtr, poch
from tqdm import tqdm

from collapse_sim.metrics import SimulationResult, config_dict
from collapse_sim.plots import plot_metric_curves
from collapse_sim.reuse import Reuse

GROWTHS = ("constant", "linear", "quadratic")


#: the largest |mu| and sigma the simulation takes: squares and sums of squares stay finite in float64
MAX_SCALE = 1e150


@dataclass(frozen=True)
class GaussianConfig:
    """Settings of the Gaussian simulation."""

    generations: int = 1000
    samples: int = 100  # M; with 1,000 generations and runs, the timed setting
    runs: int = 1000
    seed: int = 0
    reuse: Reuse = Reuse()  # paper: replace
    growth: str = "constant"  # M_i = M, M (i + 1) or M (i + 1)^2: the paper's remedy is super-linear growth
    mu: float = 0.0
    sigma: float = 1.0
    tail_sigmas: float = 3.0  # "beyond the original's 3-sigma tails"

    def __post_init__(self) -> None:
        if self.growth not in GROWTHS:
            raise ValueError(f"growth must be one of {GROWTHS}, got {self.growth!r}")
        if self.samples < 2:
            raise ValueError("samples must be at least 2 (the unbiased variance needs two)")
        if self.generations < 1 or self.runs < 1:
            raise ValueError("generations and runs must be at least 1")
        if self.sigma <= 0:
            raise ValueError("sigma must be positive")
        if max(abs(self.mu), self.sigma) > MAX_SCALE:  # the metrics square them: float64 would overflow
            raise ValueError(f"mu and sigma must be at most {MAX_SCALE:g} in size (their squares overflow past it)")



def sample_sizes(cfg: GaussianConfig) -> np.ndarray:
    """``M_i`` for ``i = 0 .. generations - 1``: the new samples drawn to fit generation ``i + 1``."""
    i = np.arange(cfg.generations, dtype=np.int64)
    return cfg.samples * {"constant": np.ones_like(i), "linear": i + 1, "quadratic": (i + 1) ** 2}[cfg.growth]


def _chi_mean(dof: np.ndarray) -> np.ndarray:
    """``E[sqrt(chi^2_k / k)] = sqrt(2/k) Gamma((k+1)/2) / Gamma(k/2)`` (accurate for huge ``k``)."""
    dof = np.asarray(dof, dtype=float)
    return np.sqrt(2.0 / dof) * poch(dof / 2.0, 0.5)


def expected_w2_squared(sizes: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Exact ``E[W2^2]`` between the original and generation ``n = 0 .. len(sizes)`` under ``replace``.

    With ``W2^2 = (mu_n - mu)^2 + (sigma_n - sigma)^2`` (closed form for Gaussians),
    ``mu_n - mu`` is a martingale with increments of variance ``E[sigma_i^2] / M_i =
    sigma^2 / M_i`` (the unbiased variance keeps ``E[sigma_i^2] = sigma^2``), and
    ``sigma_n = sigma * prod_i sqrt(chi^2_{M_i-1} / (M_i-1))`` with independent factors, so

        E[W2^2] = sigma^2 sum_{i<n} 1/M_i + 2 sigma^2 (1 - prod_{i<n} c(M_i - 1)),
        c(k) = sqrt(2/k) Gamma((k+1)/2) / Gamma(k/2) = 1 - 1/(4k) + O(k^-2).

    To first order in ``1/M_i`` this is the expression Shumailov et al. (2024, Nature,
    "Theoretical intuition", single-dimensional Gaussian) give for the W2 error,
    ``(3/2) sigma^2 sum_i 1/M_i`` (see ``first_order_w2_squared``). The exact form
    also holds once ``n`` is comparable to ``M``, where the first-order one does not:
    the ``(sigma_n - sigma)^2`` term saturates at ``sigma^2`` as ``sigma_n -> 0``.
    """
    sizes = np.asarray(sizes, dtype=float)
    mean_term = np.concatenate([[0.0], np.cumsum(1.0 / sizes)])
    log_c = np.concatenate([[0.0], np.cumsum(np.log(_chi_mean(sizes - 1.0)))])
    return sigma**2 * (mean_term - 2.0 * np.expm1(log_c))


def first_order_w2_squared(sizes: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """The paper's first-order ``E[W2^2] ~ (3/2) sigma^2 sum_{i<n} 1/M_i``, ``n = 0 .. len(sizes)``."""
    return 1.5 * sigma**2 * np.concatenate([[0.0], np.cumsum(1.0 / np.asarray(sizes, dtype=float))])


def _group_stats(rng: np.random.Generator, n: int, mu: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sum of squared deviations of ``n`` draws from each ``N(mu, var)``, drawn exactly."""
    mean = mu + np.sqrt(var / n) * rng.standard_normal(mu.shape)
    ss = var * rng.chisquare(n - 1, mu.shape) if n > 1 else np.zeros_like(mu)
    return mean, ss


def _pool(
    n_a: int, mean_a: np.ndarray, ss_a: np.ndarray, n_b: int, mean_b: np.ndarray, ss_b: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray]:
    """Count, mean and sum of squared deviations of two groups together (Chan et al.'s formula)."""
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * (n_b / n), ss_a + ss_b + delta**2 * (n_a * n_b / n)


def trajectories(cfg: GaussianConfig, progress: bool = False) -> dict[str, np.ndarray]:
    """Fitted ``mu`` and ``sigma2`` per run and generation, arrays ``(runs, generations + 1)``."""
    rng = np.random.default_rng(cfg.seed)
    shape = (cfg.runs, cfg.generations + 1)
    mu, var = np.empty(shape), np.empty(shape)
    mu[:, 0], var[:, 0] = cfg.mu, cfg.sigma**2
    orig_mu, orig_var = np.full(cfg.runs, cfg.mu), np.full(cfg.runs, cfg.sigma**2)
    mode = cfg.reuse.mode
    seen = None  # (count, mean, ss) of all data so far, for accumulate
    for i, m in enumerate(tqdm(sample_sizes(cfg), desc="gaussian", disable=not progress, leave=False)):
        m = int(m)
        k = cfg.reuse.n_real(m)  # fresh original samples (mix), the rest from generation i
        groups = [(g, *_group_stats(rng, g, a, b)) for g, a, b in
                  ((m - k, mu[:, i], var[:, i]), (k, orig_mu, orig_var)) if g]
        n, mean, ss = groups[0]
        for group in groups[1:]:
            n, mean, ss = _pool(n, mean, ss, *group)
        if mode == "accumulate":
            seen = (n, mean, ss) if seen is None else _pool(*seen, n, mean, ss)
            n, mean, ss = seen
        mu[:, i + 1], var[:, i + 1] = mean, ss / (n - 1)
    return {"mu": mu, "sigma2": var}


def w2_squared(mu: np.ndarray, sigma2: np.ndarray, mu0: float, sigma0: float) -> np.ndarray:
    """Squared Wasserstein-2 distance between ``N(mu, sigma2)`` and ``N(mu0, sigma0^2)`` (closed form)."""
    return (mu - mu0) ** 2 + (np.sqrt(sigma2) - sigma0) ** 2


def tail_mass(mu: np.ndarray, sigma2: np.ndarray, mu0: float, sigma0: float, k: float = 3.0) -> np.ndarray:
    """Probability that ``N(mu, sigma2)`` puts beyond ``mu0 +- k sigma0``."""
    sd = np.sqrt(sigma2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return ndtr((mu0 - k * sigma0 - mu) / sd) + ndtr((mu - mu0 - k * sigma0) / sd)


def simulate(cfg: GaussianConfig, progress: bool = False) -> SimulationResult:
    """Run the simulation and summarise it in the shared metrics schema, with the theory curves."""
    t = trajectories(cfg, progress)
    mu, s2 = t["mu"], t["sigma2"]
    result = SimulationResult("gaussian", config_dict(cfg), list(range(cfg.generations + 1)))
    result.add("mu", mu)
    result.add("sigma2", s2)
    result.add("mu_error_squared", (mu - cfg.mu) ** 2)
    result.add("w2_squared", w2_squared(mu, s2, cfg.mu, cfg.sigma))
    result.add("tail_mass", tail_mass(mu, s2, cfg.mu, cfg.sigma, cfg.tail_sigmas))
    sizes = sample_sizes(cfg)
    result.summary = {
        "final": {name: {k: v[-1] for k, v in m.items()} for name, m in result.metrics.items()},
        "sample_sizes": sizes.tolist(),
        "theory": {
            # Valid for mode=replace; other modes are compared against it in the plot.
            "w2_squared_exact": expected_w2_squared(sizes, cfg.sigma).tolist(),
            "w2_squared_first_order": first_order_w2_squared(sizes, cfg.sigma).tolist(),
            "mu_error_squared": (cfg.sigma**2 * np.concatenate([[0.0], np.cumsum(1.0 / sizes)])).tolist(),
        },
    }
    return result


def plot(result: SimulationResult, out_dir: str | Path) -> list[Path]:
    """``w2.png`` (E[W2^2] and E[(mu_n - mu)^2] against the replace-mode theory) and ``metrics.png``."""
    out_dir = Path(out_dir)
    th = result.summary["theory"]
    theory = {
        "w2_squared": {"theory, exact (replace)": th["w2_squared_exact"],
                       "theory, (3/2) s^2 sum 1/M_i": th["w2_squared_first_order"]},
        "mu_error_squared": {"theory: s^2 sum 1/M_i (replace)": th["mu_error_squared"]},
    }
    return [
        plot_metric_curves(result, ["w2_squared", "mu_error_squared"], out_dir / "w2.png", theory=theory,
                           title="Gaussian re-fitted on its own samples: error vs theory"),
        plot_metric_curves(result, ["mu", "sigma2", "tail_mass"], out_dir / "metrics.png"),
    ]
