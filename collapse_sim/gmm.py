"""The paper's Gaussian-mixture experiment: EM re-fitted on its own samples for 2,000 generations.

Shumailov et al. (2024, Fig. "GMM fitting data at iterations 0, 50, 100, 150, 200,
350, 2000"): a two-component 1-D mixture is fitted by EM (scikit-learn) to 1,000
samples of the previous generation's fit. The fit first matches the data, then
drifts, and by generation 2,000 has very little variance left.

Each run is checkpointed as JSON when it finishes, so an interrupted multi-run job
resumes at the first unfinished run; run ``r`` draws from its own seed stream, so
results do not depend on where a job was interrupted.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from collapse_sim.metrics import SimulationResult, config_dict
from collapse_sim.mixture import Mixture, l2_distance, w2_distance
from collapse_sim.plots import plot_density_panels, plot_metric_curves
from collapse_sim.resume import config_changes, read_record, reading
from collapse_sim.reuse import Reuse
from hygiene.atomic import write_json
from hygiene.errors import UserInputError


class CheckpointError(UserInputError):
    """A stored run that cannot be reused: unreadable, or written under another configuration."""


@dataclass(frozen=True)
class GMMConfig:
    """Settings of the mixture simulation; defaults are the paper's where it gives them."""

    generations: int = 2000  # paper: 2,000 generations
    samples: int = 1000  # paper: "GMM is sampled a thousand times" per generation
    runs: int = 1  # paper: one trajectory
    seed: int = 0
    reuse: Reuse = Reuse()  # paper: replace
    # The paper does not print the original mixture; two equal, unit-variance,
    # clearly separated components (a bimodal density, as in its figure).
    weights: tuple[float, ...] = (0.5, 0.5)
    means: tuple[float, ...] = (-2.0, 2.0)
    variances: tuple[float, ...] = (1.0, 1.0)
    holdout: int = 2000  # held-out original points for the log-likelihood
    w2_levels: int = 1000  # quantile levels of the W2 integral
    snapshots: tuple[int, ...] = (0, 50, 100, 150, 200, 350, 2000)  # the paper's figure (+ the last generation)

    def __post_init__(self) -> None:
        if self.generations < 1 or self.runs < 1:
            raise ValueError("generations and runs must be at least 1")
        if not len(self.weights) == len(self.means) == len(self.variances) >= 1:
            raise ValueError("weights, means and variances need one entry per component")
        if self.samples < 2 * len(self.means):
            raise ValueError(f"samples must be at least {2 * len(self.means)} to fit {len(self.means)} components")
        if min(self.variances) <= 0 or min(self.weights) <= 0:
            raise ValueError("weights and variances must be positive")

    @property
    def original(self) -> Mixture:
        """The generation-0 mixture, weights normalised."""
        w = np.asarray(self.weights, dtype=float)
        return Mixture.of(w / w.sum(), self.means, self.variances)


@dataclass(frozen=True)
class Chain:
    """One run: the fitted mixture of every generation (generation 0 is the original)."""

    fits: Mixture  # (generations + 1, components), components ordered by mean
    not_converged: int  # EM fits that hit the iteration cap


def fit_em(x: np.ndarray, components: int, seed: int) -> tuple[Mixture, bool]:
    """EM fit of a 1-D mixture with scikit-learn's defaults; components ordered by mean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(components, random_state=seed).fit(x[:, None])
    order = np.argsort(gm.means_[:, 0])
    fit = Mixture.of(gm.weights_[order], gm.means_[order, 0], gm.covariances_[order, 0, 0])
    return fit, bool(gm.converged_)


def run_chain(cfg: GMMConfig, rng: np.random.Generator, progress: bool = False, desc: str = "gmm") -> Chain:
    """Fit, sample and re-fit for ``cfg.generations`` generations under ``cfg.reuse``.

    One thread: a 1,000-point fit gains nothing from OpenMP, and on a busy machine
    the k-means initialisation's spinning threads made each fit ten times slower.
    """
    original = cfg.original
    k = len(cfg.means)
    n_real = cfg.reuse.n_real(cfg.samples)
    shape = (cfg.generations + 1, k)
    w, m, v = np.empty(shape), np.empty(shape), np.empty(shape)
    w[0], m[0], v[0] = original.weights, original.means, original.variances
    current, history, not_converged = original, [], 0
    bar = tqdm(range(1, cfg.generations + 1), desc=desc, disable=not progress, leave=False)
    with threadpool_limits(limits=1):
        for g in bar:
            synthetic = current.sample(rng, cfg.samples)
            real = original.sample(rng, n_real)
            x = cfg.reuse.compose(rng, real, synthetic, history)
            if cfg.reuse.mode == "accumulate":
                history.append(synthetic)
            current, converged = fit_em(x, k, int(rng.integers(2**31 - 1)))
            not_converged += not converged
            w[g], m[g], v[g] = current.weights, current.means, current.variances
    return Chain(Mixture(w, m, v), not_converged)


def chain_metrics(fits: Mixture, original: Mixture, holdout: np.ndarray, w2_levels: int) -> dict[str, np.ndarray]:
    """Per-generation metrics of fitted mixtures ``(generations + 1, components)`` against the original."""
    q01, q99 = original.quantile(np.array([0.01, 0.99]))
    cdf = fits.cdf(np.array([q01, q99]))
    out: dict[str, np.ndarray] = {}
    for i in range(fits.means.shape[-1]):
        out[f"mean_{i + 1}"] = fits.means[:, i]
        out[f"variance_{i + 1}"] = fits.variances[:, i]
        out[f"weight_{i + 1}"] = fits.weights[:, i]
    out["w2"] = w2_distance(fits, original, w2_levels)
    out["l2"] = l2_distance(fits, original)
    out["holdout_loglik"] = fits.logpdf(holdout).mean(axis=-1)
    out["tail_mass"] = cdf[:, 0] + 1.0 - cdf[:, 1]
    return out


def _load_checkpoint(path: Path, cfg_json: dict, run: int) -> Chain | None:
    """The finished run stored at ``path``, or None; refuses one unreadable, written under another config,
    or whose arrays are not one row per generation and one column per component."""
    if not path.exists():
        return None
    fix = f"delete it to recompute run {run}"
    try:
        rec = read_record(path, "config", "weights", "means", "variances", "not_converged", fix=fix)
        with reading(path, fix):
            fits = Mixture.of(rec["weights"], rec["means"], rec["variances"])
            not_converged = int(rec["not_converged"])
    except UserInputError as exc:
        raise CheckpointError(str(exc)) from exc
    # a run's chain depends on its own seed only, never on how many runs there are: another --runs reuses it
    changed = config_changes(rec["config"], cfg_json, may_change=("runs",))
    if changed:
        raise CheckpointError(f"{path}: written with a different configuration ({', '.join(changed)}); "
                              "use another output directory")
    shape = (cfg_json["generations"] + 1, len(cfg_json["means"]))
    if fits.weights.shape != shape:
        raise CheckpointError(f"{path}: arrays of shape {fits.weights.shape}, not {shape} (generations + 1, "
                              f"components); {fix}")
    return Chain(fits, not_converged)


def _save_checkpoint(path: Path, cfg_json: dict, run: int, chain: Chain) -> None:
    """Store a finished run as JSON (atomically), with the configuration it was run under."""
    write_json(path, {
        "config": cfg_json, "run": run, "not_converged": chain.not_converged,
        "weights": chain.fits.weights.tolist(), "means": chain.fits.means.tolist(),
        "variances": chain.fits.variances.tolist(),
    })


def simulate(cfg: GMMConfig, checkpoint_dir: str | Path | None = None, progress: bool = False) -> SimulationResult:
    """Run ``cfg.runs`` independent chains and summarise them in the shared metrics schema.

    With ``checkpoint_dir``, finished runs are stored there (``run_0000.json``, ...)
    and reused when the same configuration is run again, with as many runs or another number.
    """
    cfg_json = json.loads(json.dumps(config_dict(cfg)))
    seeds = np.random.SeedSequence(cfg.seed).spawn(cfg.runs + 1)
    original = cfg.original
    holdout = original.sample(np.random.default_rng(seeds[0]), cfg.holdout)
    chains: list[Chain] = []
    for r in range(cfg.runs):
        path = Path(checkpoint_dir) / f"run_{r:04d}.json" if checkpoint_dir is not None else None
        chain = _load_checkpoint(path, cfg_json, r) if path is not None else None
        if chain is None:
            chain = run_chain(cfg, np.random.default_rng(seeds[r + 1]), progress, f"gmm run {r + 1}/{cfg.runs}")
            if path is not None:
                _save_checkpoint(path, cfg_json, r, chain)
        chains.append(chain)

    per_run = [chain_metrics(c.fits, original, holdout, cfg.w2_levels) for c in chains]
    result = SimulationResult("gmm", cfg_json, list(range(cfg.generations + 1)))
    for name in per_run[0]:
        result.add(name, np.stack([m[name] for m in per_run]))
    first = chains[0].fits
    result.summary = {
        "final": {name: {k: v[-1] for k, v in m.items()} for name, m in result.metrics.items()},
        "original": {name: result.metrics[name]["mean"][0] for name in ("holdout_loglik", "tail_mass")},
        "em_not_converged": sum(c.not_converged for c in chains),
        "snapshots_run_0": {
            str(g): {"weights": first.weights[g].tolist(), "means": first.means[g].tolist(),
                     "variances": first.variances[g].tolist()}
            for g in sorted({g for g in cfg.snapshots if g <= cfg.generations} | {cfg.generations})
        },
    }
    return result


def plot(result: SimulationResult, out_dir: str | Path) -> list[Path]:
    """The density snapshots of run 0 over the original (``densities.png``) and the metric curves."""
    out_dir = Path(out_dir)
    cfg = result.config
    original = Mixture.of(np.asarray(cfg["weights"]) / np.sum(cfg["weights"]), cfg["means"], cfg["variances"])
    sd = np.sqrt(np.max(original.variances))
    x = np.linspace(np.min(original.means) - 4 * sd, np.max(original.means) + 4 * sd, 800)
    panels = {
        f"generation {g}": Mixture.of(s["weights"], s["means"], s["variances"]).pdf(x)
        for g, s in result.summary["snapshots_run_0"].items()
    }
    k = len(cfg["means"])
    names = ["w2", "l2", "holdout_loglik", "tail_mass"]
    names += [f"{p}_{i + 1}" for p in ("mean", "variance", "weight") for i in range(k)]
    return [
        plot_density_panels(x, original.pdf(x), panels, out_dir / "densities.png",
                            title="GMM fitted by EM on its own samples (run 0)"),
        plot_metric_curves(result, names, out_dir / "metrics.png", log_y=["l2"]),
    ]
