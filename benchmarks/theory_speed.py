"""Speed of the theory simulations against the issue's targets, with baselines timed in the same run.

- ``collapse-sim gaussian`` settings (1,000 generations, M = 100, 1,000 runs): target < 10 s;
  the chain itself (``gaussian.trajectories``) is compared with a baseline that fits
  explicitly drawn samples (vectorised over runs), the rest is the per-generation summary.
- ``collapse-sim gmm`` paper settings (2,000 generations, 1,000 samples, one run): target < 60 s;
  baseline: one bare scikit-learn EM fit on 1,000 points, times 2,000.

Run: ``.venv/bin/python benchmarks/theory_speed.py``
"""
from __future__ import annotations

import time

import numpy as np
from threadpoolctl import threadpool_limits

from collapse_sim import gaussian, gmm


def _timed(fn, *args, **kwargs) -> float:
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


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
    g_time = _timed(gaussian.simulate, g_cfg)
    g_chain = _timed(gaussian.trajectories, g_cfg)
    g_base = _timed(explicit_gaussian_chain, g_cfg)
    print(f"gaussian  1000 gens x M=100 x 1000 runs: {g_time:6.2f} s (target < 10 s: "
          f"{'PASS' if g_time < 10 else 'FAIL'}); chain {g_chain:.2f} s vs explicit-sample chain "
          f"{g_base:.2f} s, ratio {g_base / g_chain:.1f}x")

    m_cfg = gmm.GMMConfig()
    x = m_cfg.original.sample(np.random.default_rng(0), m_cfg.samples)
    fits = 100
    with threadpool_limits(limits=1):
        fit_time = _timed(lambda: [gmm.fit_em(x, 2, s) for s in range(fits)]) / fits
    m_time = _timed(gmm.simulate, m_cfg)
    per_gen = m_time / m_cfg.generations
    print(f"gmm       2000 gens x 1000 samples x 1 run: {m_time:6.2f} s (target < 60 s: "
          f"{'PASS' if m_time < 60 else 'FAIL'}); {per_gen * 1e3:.1f} ms per generation, "
          f"bare EM fit {fit_time * 1e3:.1f} ms, ratio per-generation/EM-fit {per_gen / fit_time:.2f}x")


if __name__ == "__main__":
    main()
