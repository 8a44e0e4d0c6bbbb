"""Speed of the theory simulations against the issue's targets, with baselines timed in the same run.

- ``collapse-sim gaussian`` settings (1,000 generations, M = 100, 1,000 runs): target < 10 s;
  the chain itself (``gaussian.trajectories``) is compared with a baseline that fits
  explicitly drawn samples (vectorised over runs), the rest is the per-generation summary.
- ``collapse-sim gmm`` paper settings (2,000 generations, 1,000 samples, one run): target < 60 s;
  baseline: one bare scikit-learn EM fit on 1,000 points, times 2,000.

Both wall-clock and CPU seconds are printed: the simulations are single-threaded, so on a
machine shared with other jobs the CPU time is what an idle machine's wall clock would show.

Run: ``.venv/bin/python benchmarks/theory_speed.py``
"""
from __future__ import annotations

import time

import numpy as np
from threadpoolctl import threadpool_limits

from collapse_sim import gaussian, gmm


class Timing:
    """Wall-clock and CPU seconds of one call."""

    def __init__(self, fn, *args, **kwargs) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        fn(*args, **kwargs)
        self.wall, self.cpu = time.perf_counter() - wall, time.process_time() - cpu

    def __str__(self) -> str:
        return f"{self.wall:6.2f} s wall, {self.cpu:6.2f} s CPU"

    def within(self, limit: float) -> str:
        verdict = {True: "PASS", False: "FAIL"}
        return f"wall {verdict[self.wall < limit]}, CPU {verdict[self.cpu < limit]}"


def explicit_gaussian_chain(cfg: gaussian.GaussianConfig) -> np.ndarray:
    """Baseline: draw the M samples of every run and generation, then fit mean and unbiased variance."""
    rng = np.random.default_rng(cfg.seed)
    mu, sd = np.full(cfg.runs, cfg.mu), np.full(cfg.runs, cfg.sigma)
    for _ in range(cfg.generations):
        x = mu[:, None] + sd[:, None] * rng.standard_normal((cfg.runs, cfg.samples))
        mu, sd = x.mean(axis=1), x.std(axis=1, ddof=1)
    return sd**2


def main() -> None:
    g_cfg = gaussian.GaussianConfig(generations=1000, samples=100, runs=1000)
    g_time = Timing(gaussian.simulate, g_cfg)
    g_chain = Timing(gaussian.trajectories, g_cfg)
    g_base = Timing(explicit_gaussian_chain, g_cfg)
    print(f"gaussian  1000 gens x M=100 x 1000 runs: {g_time} (target < 10 s: {g_time.within(10)})")
    print(f"          chain alone {g_chain.cpu:.2f} s CPU vs explicit-sample chain {g_base.cpu:.2f} s CPU: "
          f"ratio {g_base.cpu / g_chain.cpu:.1f}x")

    m_cfg = gmm.GMMConfig()
    x = m_cfg.original.sample(np.random.default_rng(0), m_cfg.samples)
    fits = 100
    with threadpool_limits(limits=1):
        fit = Timing(lambda: [gmm.fit_em(x, 2, s) for s in range(fits)])
    m_time = Timing(gmm.simulate, m_cfg)
    per_gen, per_fit = m_time.cpu / m_cfg.generations, fit.cpu / fits
    print(f"gmm       2000 gens x 1000 samples x 1 run: {m_time} (target < 60 s: {m_time.within(60)})")
    print(f"          {per_gen * 1e3:.1f} ms CPU per generation, bare EM fit {per_fit * 1e3:.1f} ms CPU "
          f"(wall {fit.wall / fits * 1e3:.1f} ms): ratio per-generation/EM-fit {per_gen / per_fit:.2f}x")


if __name__ == "__main__":
    main()
