"""Figures shared by the simulations: metric curves over generations and density panels.

Everything draws with matplotlib's Agg backend (no display needed) and writes PNGs
atomically, so an interrupted run never leaves a truncated figure.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from collapse_sim.metrics import SimulationResult  # noqa: E402
from hygiene.atomic import atomic_open  # noqa: E402


_THEORY_STYLES = [("--", "k"), ("-.", "C3"), (":", "C2")]  # reference curves, in order

#: What each metric of ``metrics.json`` is, for a panel: its title and its y axis (what is measured, in
#: what unit). A panel's title also names the metric's key, so a reader finds it in ``metrics.json``.
LABELS: dict[str, tuple[str, str]] = {
    # discrete
    "support": ("Support size", "states with probability > 0"),
    "entropy": ("Entropy", "Shannon entropy (bits)"),
    "tv_distance": ("Distance to the original", "total variation (0 = same, 1 = disjoint)"),
    # gaussian
    "mu": ("Fitted mean", "mean of generation n's fit (units of x)"),
    "sigma2": ("Fitted variance", "unbiased variance of the fit (units of x squared)"),
    "mu_error_squared": ("Error of the mean", "(mean_n - original mean)^2 (units of x squared)"),
    "w2_squared": ("Distance to the original", "squared Wasserstein-2 (units of x squared)"),
    "tail_mass": ("Mass in the original's tails", "probability beyond 3 sigma (GMM: its 1%, 99% quantiles)"),
    # gmm
    "w2": ("Distance to the original", "Wasserstein-2 (units of x)"),
    "l2": ("Density error", "L2 distance between densities"),
    "holdout_loglik": ("Fit to held-out original data", "mean log-likelihood (nats per point)"),
    # vae
    "frechet_distance": ("Frechet distance", "to held-out real images (feature-space units; lower: closer)"),
    "precision": ("Precision", "share of samples inside the real manifold (0-1)"),
    "recall": ("Recall", "share of real images covered by the samples (0-1)"),
    "class_entropy": ("Class diversity", "entropy of the predicted digit classes (bits; 10 even: 3.32)"),
    "tail_class_share": ("Rarest classes", "share of samples in the 3 rarest classes (10 even: 0.3)"),
    "pairwise_distance": ("Sample spread", "mean Euclidean distance between samples (pixel units)"),
    "pixel_variance": ("Pixel variance", "variance across samples, mean over pixels"),
    "latent_spread": ("Latent spread", "std of the generation-0 encoder's means (latent units)"),
}
_INDEXED = {"mean": ("Component {i} mean", "units of x"), "variance": ("Component {i} variance", "units of x squared"),
            "weight": ("Component {i} weight", "mixture weight (0-1)")}


def metric_label(name: str) -> tuple[str, str]:
    """A panel's title and y-axis label for metric ``name`` (``mean_2``: the second component's mean)."""
    if name in LABELS:
        return LABELS[name]
    stem, _, index = name.rpartition("_")
    if stem in _INDEXED and index.isdigit():
        title, unit = _INDEXED[stem]
        return title.format(i=index), unit
    return name.replace("_", " "), ""


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically and close it."""
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path


def save_markdown(lines: Sequence[str], path: str | Path) -> Path:
    """Write a report's ``lines`` to ``path`` atomically."""
    path = Path(path)
    with atomic_open(path) as fh:
        fh.write("\n".join(lines))
    return path


def _grid(n: int, max_cols: int = 3) -> tuple[plt.Figure, np.ndarray]:
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def plot_metric_curves(
    result: SimulationResult,
    names: Sequence[str],
    path: str | Path,
    *,
    theory: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    log_y: Iterable[str] = (),
    title: str | None = None,
    marks: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """One panel per metric: mean and median over runs with the p10-p90 band, per generation.

    ``theory`` maps a metric name to up to three labelled reference curves (one value
    per generation) drawn broken on that metric's panel; metrics in ``log_y`` get a log axis;
    ``marks`` maps a metric name to labelled generations drawn as vertical lines. Each panel is
    titled and its y axis labelled from :data:`LABELS`.
    """
    theory = theory or {}
    log_y = set(log_y)
    gens = np.asarray(result.generations)
    fig, axes = _grid(len(names))
    for ax, name in zip(axes, names):
        m = {k: np.asarray(v, dtype=float) for k, v in result.metrics[name].items()}
        ax.fill_between(gens, m["p10"], m["p90"], alpha=0.25, label="p10-p90")
        ax.plot(gens, m["mean"], lw=1.5, label="mean")
        ax.plot(gens, m["median"], lw=1, ls=":", label="median")
        for (label, curve), (ls, color) in zip(theory.get(name, {}).items(), _THEORY_STYLES):
            ax.plot(gens, np.asarray(curve, dtype=float), ls=ls, lw=1.2, color=color, label=label)
        for (mark, at), (ls, color) in zip((marks or {}).get(name, {}).items(), _THEORY_STYLES):
            ax.axvline(at, ls=ls, lw=1.2, color=color, label=mark)
        if name in log_y:
            ax.set_yscale("log")
        heading, unit = metric_label(name)
        ax.set_title(f"{heading} ({name})" if heading != name else name, fontsize=9)
        ax.set_ylabel(textwrap.fill(unit, 36), fontsize=8)
        ax.set_xlabel("generation")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_density_panels(
    x: np.ndarray,
    reference: np.ndarray,
    panels: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    reference_label: str = "original",
    title: str | None = None,
) -> Path:
    """One panel per entry of ``panels`` (label -> density on ``x``), each over the ``reference`` density."""
    fig, axes = _grid(len(panels), max_cols=4)
    for ax, (label, density) in zip(axes, panels.items()):
        ax.fill_between(x, reference, color="0.8", label=reference_label)
        ax.plot(x, density, lw=1.5, color="C3", label="fitted")
        ax.set_title(label)
        ax.set_xlim(x[0], x[-1])
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
