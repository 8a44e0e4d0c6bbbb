"""One-dimensional Gaussian mixtures: sampling, densities, quantiles and distances.

Every function broadcasts over leading axes of the parameters, so the metrics of
a whole trajectory of fitted mixtures (``(generations, components)`` arrays) are
computed in one vectorised call.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp, ndtr

# Standard-normal points each component contributes to the CDF grid of ``Mixture.quantile``:
# an even grid over +-9 sd (every level down to 1e-19 is bracketed finely) plus far ends.
_Z_GRID = np.concatenate([[-40.0], np.linspace(-9.0, 9.0, 1024), [40.0]])


@dataclass(frozen=True)
class Mixture:
    """Weights, means and variances of 1-D Gaussian mixtures, components on the last axis."""

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray

    @classmethod
    def of(cls, weights, means, variances) -> "Mixture":
        """A mixture from array-likes, broadcast to one shape."""
        w, m, v = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (weights, means, variances)))
        return cls(w, m, v)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` draws from a single mixture (1-D parameters)."""
        cum = np.cumsum(self.weights)
        comp = np.minimum(np.searchsorted(cum / cum[-1], rng.random(n), side="right"), len(cum) - 1)
        return self.means[comp] + np.sqrt(self.variances[comp]) * rng.standard_normal(n)

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """Log-density at points ``x`` (shape ``(n,)``), shape ``(..., n)``."""
        x = np.asarray(x, dtype=float)[..., None]
        w, m, v = (a[..., None, :] for a in (self.weights, self.means, self.variances))
        with np.errstate(divide="ignore"):
            comp = np.log(w) - 0.5 * (np.log(2 * np.pi * v) + (x - m) ** 2 / v)
        return logsumexp(comp, axis=-1)

    def pdf(self, x: np.ndarray) -> np.ndarray:
        """Density at points ``x``, shape ``(..., n)``."""
        return np.exp(self.logpdf(x))

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """Distribution function at points ``x`` (shape ``(n,)``), shape ``(..., n)``."""
        x = np.asarray(x, dtype=float)[..., None]
        w, m, v = (a[..., None, :] for a in (self.weights, self.means, self.variances))
        return np.sum(w * ndtr((x - m) / np.sqrt(v)), axis=-1)

    def quantile(self, u: np.ndarray) -> np.ndarray:
        """Quantiles at levels ``u`` (shape ``(n,)``), shape ``(..., n)``.

        A mixture's quantile function has no closed form: the CDF is evaluated on a
        grid laid out in every component's own standard units (so a component of any
        width is resolved) and inverted by linear interpolation, all rows at once.
        """
        u = np.asarray(u, dtype=float)
        lead = self.means.shape[:-1]
        sd = np.sqrt(self.variances)
        x = np.sort((self.means[..., None] + sd[..., None] * _Z_GRID).reshape(*lead, -1), axis=-1)
        c = self.cdf(x)
        rows = int(np.prod(lead, dtype=int))
        x, c = x.reshape(rows, -1), c.reshape(rows, -1)
        n = x.shape[1]
        # One searchsorted for all rows: offset row r by 2r so the flattened CDFs stay sorted.
        offset = 2.0 * np.arange(rows)[:, None]
        j = np.searchsorted((c + offset).ravel(), (u + offset).ravel()).reshape(rows, -1)
        j = np.clip(j - n * np.arange(rows)[:, None], 1, n - 1)
        x0, x1 = np.take_along_axis(x, j - 1, 1), np.take_along_axis(x, j, 1)
        c0, c1 = np.take_along_axis(c, j - 1, 1), np.take_along_axis(c, j, 1)
        t = np.clip((u - c0) / np.where(c1 > c0, c1 - c0, 1.0), 0.0, 1.0)
        return (x0 + t * (x1 - x0)).reshape(*lead, -1)


def quantile_levels(n: int) -> np.ndarray:
    """Midpoints of ``n`` equal slices of (0, 1): the grid for quantile integrals."""
    return (np.arange(n) + 0.5) / n


def w2_distance(p: Mixture, q: Mixture, levels: int = 1000) -> np.ndarray:
    """Wasserstein-2 distance between 1-D mixtures, broadcast over leading axes.

    In one dimension ``W2^2 = int_0^1 (F^-1(u) - G^-1(u))^2 du``; the integral is
    taken by the midpoint rule on ``levels`` quantile levels.
    """
    u = quantile_levels(levels)
    return np.sqrt(np.mean((p.quantile(u) - q.quantile(u)) ** 2, axis=-1))


def _cross_overlap(p: Mixture, q: Mixture) -> np.ndarray:
    """``int p(x) q(x) dx``: Gaussian products integrate to a Gaussian density in the mean gap."""
    var = p.variances[..., :, None] + q.variances[..., None, :]
    gap = p.means[..., :, None] - q.means[..., None, :]
    dens = np.exp(-0.5 * gap**2 / var) / np.sqrt(2 * np.pi * var)
    return np.einsum("...i,...j,...ij->...", p.weights, q.weights, dens)


def l2_distance(p: Mixture, q: Mixture) -> np.ndarray:
    """L2 distance ``sqrt(int (p - q)^2)`` between mixture densities, in closed form."""
    sq = _cross_overlap(p, p) + _cross_overlap(q, q) - 2 * _cross_overlap(p, q)
    return np.sqrt(np.maximum(sq, 0.0))
