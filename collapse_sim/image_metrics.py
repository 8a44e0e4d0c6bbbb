"""How far a set of generated images is from real ones, in a feature space fixed once.

- ``FeatureSpace``: a small classifier trained once on real images; its penultimate
  layer is the feature space (the FID recipe with a domain classifier in place of
  Inception) and its predictions give the class of each generated image;
- ``frechet_distance``: distance between Gaussians fitted to two feature sets
  (Heusel et al. 2017);
- ``precision_recall``: the k-nearest-neighbour manifold estimate of Kynkaanniemi
  et al. 2019 (precision: share of generated points inside the real manifold; recall:
  share of real points inside the generated manifold);
- ``class_coverage``: entropy of the predicted-class distribution and the share of
  the rarest classes (the tails that collapse loses first);
- ``mean_pairwise_distance``, ``pixel_variance``: the spread of a sample set.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from scipy.spatial.distance import pdist
from scipy.stats import entropy
from sklearn.metrics import pairwise_distances_chunked
from sklearn.neighbors import NearestNeighbors
from torch import nn


@dataclass(frozen=True)
class ImageFeatureConfig:
    """The fixed feature classifier: a two-layer MLP with a bounded (tanh) feature layer."""

    hidden: int = 256
    features: int = 32
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4


class FeatureSpace:
    """A classifier trained once on real images: ``embed`` gives features, ``predict`` classes."""

    def __init__(self, net: nn.Sequential, head: nn.Linear) -> None:
        self.net = net.eval()
        self.head = head.eval()

    @classmethod
    def fit(
        cls, x: np.ndarray, y: np.ndarray, n_classes: int, seed: int = 0, cfg: ImageFeatureConfig = ImageFeatureConfig()
    ) -> "FeatureSpace":
        """Train the classifier on real images ``x`` (rows of pixels) with labels ``y``."""
        xt = torch.as_tensor(x, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.long)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = nn.Sequential(
                nn.Linear(xt.shape[1], cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.features), nn.Tanh()
            )
            head = nn.Linear(cfg.features, n_classes)
            opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
            for _ in range(cfg.epochs):
                for idx in torch.randperm(len(xt)).split(cfg.batch_size):
                    loss = nn.functional.cross_entropy(head(net(xt[idx])), yt[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        return cls(net, head)

    @torch.inference_mode()
    def embed(self, x: np.ndarray) -> np.ndarray:
        """Features of images ``x``, shape ``(n, features)``, float64."""
        return self.net(torch.as_tensor(x, dtype=torch.float32)).double().numpy()

    @torch.inference_mode()
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted class of each image in ``x``."""
        return self.head(self.net(torch.as_tensor(x, dtype=torch.float32))).argmax(1).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets ``a`` and ``b`` (rows = points).

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``; 0 for identical distributions.
    """
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = scipy.linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # singular product: regularise as in Heusel et al.'s reference code
        eps = 1e-6 * np.eye(len(s_a))
        covmean = scipy.linalg.sqrtm((s_a + eps) @ (s_b + eps))
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean.real))


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point of ``x`` to its ``k``-th nearest other point."""
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return dist[:, k]


def manifold_coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """Share of ``points`` inside at least one ball ``(centres[i], radii[i])``."""
    inside = [
        (chunk <= radii[None, :]).any(axis=1) for chunk in pairwise_distances_chunked(points, centres)
    ]
    return float(np.concatenate(inside).mean())


def precision_recall(real: np.ndarray, generated: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall of ``generated`` against ``real`` (Kynkaanniemi et al. 2019).

    Each set's manifold is the union of balls reaching each point's ``k``-th nearest
    neighbour in that set (the paper uses ``k = 3``).
    """
    precision = manifold_coverage(generated, real, knn_radii(real, k))
    recall = manifold_coverage(real, generated, knn_radii(generated, k))
    return precision, recall


def class_coverage(predicted: np.ndarray, n_classes: int, tail: int = 3) -> tuple[float, float]:
    """Entropy (bits) of the predicted-class distribution and the share of its ``tail`` rarest classes.

    A uniform distribution over 10 classes gives ``log2(10) = 3.32`` bits and a tail
    share of ``tail / 10``; collapse onto a few classes drives both down.
    """
    share = np.bincount(predicted, minlength=n_classes) / len(predicted)
    return float(entropy(share, base=2)), float(np.sort(share)[:tail].sum())


def mean_pairwise_distance(x: np.ndarray, max_points: int = 2000) -> float:
    """Mean Euclidean distance between pairs of the first ``max_points`` rows (rows are i.i.d.)."""
    return float(pdist(x[:max_points]).mean())


def pixel_variance(x: np.ndarray) -> float:
    """Per-pixel variance across the set, averaged over pixels."""
    return float(x.var(axis=0).mean())
