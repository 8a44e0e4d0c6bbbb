"""The real digit images the VAE simulation starts from, split into training and held-out sets.

Pixels are scaled to [0, 1] on a grid of ``levels + 1`` values, so that a pixel is
``k / levels`` with ``k`` a count of "on" sub-pixels:

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images); each pixel counts the
  set pixels of a 4x4 block of a 32x32 bitmap, so ``levels = 16``;
- ``mnist``: 28x28 MNIST images read from idx files (by default the 10,000 test
  images in the shared data directory), binarised at half intensity, ``levels = 1``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collapse_sim.idx import IdxError, read_idx
from hygiene.paths import data_dir, data_hint

DATASETS = ("digits", "mnist")


@dataclass(frozen=True)
class ImageSet:
    """Real images flattened to ``(n, pixels)`` float32 rows, with their class labels."""

    train: np.ndarray
    train_labels: np.ndarray
    held_out: np.ndarray
    held_out_labels: np.ndarray
    shape: tuple[int, int]
    levels: int
    n_classes: int

    @property
    def n_pixels(self) -> int:
        return self.shape[0] * self.shape[1]


def default_mnist_files() -> tuple[Path, Path]:
    """The MNIST test images and labels in the shared data directory."""
    d = data_dir() / "mnist"
    return d / "t10k-images-idx3-ubyte.gz", d / "t10k-labels-idx1-ubyte.gz"


def load_images(
    dataset: str = "digits",
    held_out_fraction: float = 0.3,
    seed: int = 0,
    images: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
) -> ImageSet:
    """Load ``dataset`` and hold out a class-stratified ``held_out_fraction`` for evaluation.

    ``images``/``labels`` are idx files for ``mnist`` (default: the shared MNIST test set).
    Raises ``ValueError`` naming the file on unreadable or inconsistent input.
    """
    if dataset == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x, y, shape, levels = bunch.data / 16.0, bunch.target, (8, 8), 16
    elif dataset == "mnist":
        default_images, default_labels = default_mnist_files()
        images_path = Path(images or default_images)
        labels_path = Path(labels or default_labels)
        for p in (images_path, labels_path):
            if not p.is_file():
                raise ValueError(f"{p}: no such idx file{data_hint(p)}")
        try:
            raw, y = read_idx(images_path), read_idx(labels_path)
        except IdxError as exc:
            raise ValueError(str(exc)) from exc
        if raw.ndim != 3:
            raise ValueError(f"{images_path}: expected a 3-d idx array of images, got shape {raw.shape}")
        if y.ndim != 1 or len(y) != len(raw):
            raise ValueError(f"{labels_path}: {y.shape} labels do not match {len(raw)} images in {images_path}")
        x = (raw.reshape(len(raw), -1) >= 128).astype(np.float64)
        shape, levels = (raw.shape[1], raw.shape[2]), 1
    else:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    from sklearn.model_selection import train_test_split  # imported here: keeps the CLI's start light

    y = np.asarray(y, dtype=np.int64)
    x_tr, x_ho, y_tr, y_ho = train_test_split(
        x.astype(np.float32), y, test_size=held_out_fraction, random_state=seed, stratify=y
    )
    return ImageSet(x_tr, y_tr, x_ho, y_ho, shape, levels, int(y.max()) + 1)
