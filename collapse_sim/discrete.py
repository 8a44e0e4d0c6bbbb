"""A categorical distribution re-estimated from its own samples ends in a single state.

Generation 0 is the original distribution over K states; generation ``i + 1`` is
the empirical frequency of M samples of generation ``i`` (Shumailov et al. 2024,
Methods, "discrete distributions with exact approximation"). Under ``replace``
this is the neutral Wright-Fisher chain of population genetics: a state that
receives no sample is lost for good, and every run is absorbed in one state.
All runs advance together, one multinomial draw per run and generation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import xlogy
from scipy.stats import entropy as shannon_entropy
from tqdm import tqdm

from collapse_sim.metrics import SimulationResult, config_dict, spread
from collapse_sim.plots import plot_metric_curves
from collapse_sim.reuse import Reuse


@dataclass(frozen=True)
class DiscreteConfig:
    """Settings of the discrete simulation (the paper gives no K or M for this case)."""

    generations: int = 1000
    samples: int = 100  # M
    runs: int = 1000
    seed: int = 0
    reuse: Reuse = Reuse()  # paper: replace
    states: int = 20  # K
    zipf_exponent: float = 1.0  # original p_k ∝ k^-s: a long tail, like word frequencies; 0 gives uniform

    def __post_init__(self) -> None:
        if self.states < 2:
            raise ValueError("states must be at least 2")
        if self.samples < 1 or self.generations < 1 or self.runs < 1:
            raise ValueError("samples, generations and runs must be at least 1")

    @property
    def original(self) -> np.ndarray:
        """The generation-0 probabilities, shape ``(states,)``."""
        p = np.arange(1, self.states + 1, dtype=float) ** -self.zipf_exponent
        return p / p.sum()


def expected_absorption_time(p: np.ndarray, samples: int) -> float:
    """Diffusion approximation of the mean generation of absorption in one state, under ``replace``.

    For the neutral Wright-Fisher chain with population ``N`` (here ``N = M``,
    haploid) started at frequencies ``p``, the mean time until one state remains is
    ``-2N sum_k (1 - p_k) ln(1 - p_k)`` generations (Littler 1975, *Math. Biosci.*
    25; the diploid form has ``2N`` genes where this haploid chain has ``N``).
    """
    q = 1.0 - np.asarray(p, dtype=float)
    return float(-2.0 * samples * np.sum(xlogy(q, q)))


def trajectories(cfg: DiscreteConfig, progress: bool = False) -> dict[str, np.ndarray]:
    """Support size, entropy (bits) and total-variation distance per run and generation, ``(runs, generations + 1)``."""
    rng = np.random.default_rng(cfg.seed)
    p0 = cfg.original
    p = np.broadcast_to(p0, (cfg.runs, cfg.states)).copy()
    k = cfg.reuse.n_real(cfg.samples)  # fresh original samples per generation (mix)
    seen = np.zeros((cfg.runs, cfg.states))  # counts of all data so far (accumulate)
    shape = (cfg.runs, cfg.generations + 1)
    support, entropy, tv = np.empty(shape), np.empty(shape), np.empty(shape)
    for g in tqdm(range(cfg.generations + 1), desc="discrete", disable=not progress, leave=False):
        support[:, g] = np.count_nonzero(p, axis=1)
        entropy[:, g] = shannon_entropy(p, base=2, axis=1)
        tv[:, g] = 0.5 * np.abs(p - p0).sum(axis=1)
        if g == cfg.generations:
            break
        counts = rng.multinomial(cfg.samples - k, p).astype(float)
        if k:
            counts += rng.multinomial(k, p0, size=cfg.runs)
        if cfg.reuse.mode == "accumulate":
            seen += counts
            counts = seen
        p = counts / counts.sum(axis=1, keepdims=True)
    return {"support": support, "entropy": entropy, "tv_distance": tv}


def absorption_generation(support: np.ndarray) -> np.ndarray:
    """Per run, the first generation with a single state left (NaN if never), from ``(runs, generations + 1)``."""
    absorbed = support == 1
    return np.where(absorbed.any(axis=1), absorbed.argmax(axis=1), np.nan)


def simulate(cfg: DiscreteConfig, progress: bool = False) -> SimulationResult:
    """Run the simulation and summarise it in the shared metrics schema."""
    t = trajectories(cfg, progress)
    result = SimulationResult("discrete", config_dict(cfg), list(range(cfg.generations + 1)))
    for name, values in t.items():
        result.add(name, values)
    absorbed = absorption_generation(t["support"])
    hit = absorbed[~np.isnan(absorbed)]
    result.summary = {
        "final": {name: {k: v[-1] for k, v in m.items()} for name, m in result.metrics.items()},
        "absorbed_fraction": float(len(hit) / cfg.runs),
        "absorption_generation_per_run": [None if np.isnan(a) else int(a) for a in absorbed],
        "absorption_generation": {k: v[0] for k, v in spread(hit[:, None]).items()} if len(hit) else None,
        # Valid for mode=replace (absorption is certain there).
        "absorption_generation_theory": expected_absorption_time(cfg.original, cfg.samples),
    }
    return result


def plot(result: SimulationResult, out_dir: str | Path) -> list[Path]:
    """``support.png`` (the headline: support size against the expected absorption generation) and
    ``metrics.png`` (support size, entropy and TV distance over generations)."""
    out_dir = Path(out_dir)
    marks = {}
    if result.config["reuse"]["mode"] == "replace":
        marks = {"support": {"expected absorption (theory)": result.summary["absorption_generation_theory"]}}
    return [
        plot_metric_curves(result, ["support"], out_dir / "support.png", marks=marks,
                           title="Tails vanish: states left, generation by generation"),
        plot_metric_curves(result, ["support", "entropy", "tv_distance"], out_dir / "metrics.png",
                           title="Categorical distribution re-estimated from its own samples"),
    ]
