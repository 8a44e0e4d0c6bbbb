"""Speed of the VAE simulation on the 8x8 digits.

Prints (1) the training loop's speed against the common DataLoader loop (per-sample
indexing and collation) on the same model, data and number of steps, measured in
this run, and (2) one generation's wall time (train + sample + metrics) projected
to the issue's target: 20 generations after generation 0 in under 3 minutes.

    .venv/bin/python benchmarks/vae.py
"""
from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from collapse_sim.image_data import load_images
from collapse_sim.image_metrics import FeatureSpace
from collapse_sim.vae import VAE, sample_images, train_vae
from collapse_sim.vae_collapse import config_for, generation_metrics

TARGET_S = 180.0


def dataloader_baseline(x: torch.Tensor, levels: int, cfg, seed: int = 0) -> VAE:
    """The textbook loop: a DataLoader that indexes and collates one sample at a time."""
    torch.manual_seed(seed)
    vae = VAE(x.shape[1], cfg)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
    loader = DataLoader(TensorDataset(x), batch_size=cfg.batch_size, shuffle=True)
    for _ in range(cfg.epochs):
        for (batch,) in loader:
            loss = vae.neg_elbo(batch, levels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return vae


def main() -> None:
    torch.set_num_threads(1)  # as the CLI does
    cfg = config_for("digits")
    data = load_images("digits")
    train_vae(data.train[:256], data.levels, cfg.vae)  # warm-up: one-time imports and allocations

    t = time.perf_counter()
    dataloader_baseline(torch.as_tensor(data.train), data.levels, cfg.vae)
    baseline = time.perf_counter() - t
    t = time.perf_counter()
    vae = train_vae(data.train, data.levels, cfg.vae)
    ours = time.perf_counter() - t
    print(f"training, {cfg.vae.epochs} epochs: DataLoader {baseline:.2f} s, tensor batches {ours:.2f} s, "
          f"speed-up x{baseline / ours:.2f}")

    space = FeatureSpace.fit(data.train, data.train_labels, data.n_classes, cfg=cfg.features)
    held_out = space.embed(data.held_out)
    t = time.perf_counter()
    vae = train_vae(data.train, data.levels, cfg.vae, seed=1)
    samples = sample_images(vae, len(data.train), data.levels, cfg.pixels, seed=1)
    generation_metrics(samples, held_out, space, vae, data.n_classes, cfg.k, cfg.tail_classes)
    one = time.perf_counter() - t
    total = one * (cfg.generations + 1)
    print(f"one generation {one:.2f} s; {cfg.generations + 1} generations ~{total:.0f} s "
          f"= {total / TARGET_S:.2f} of the {TARGET_S:.0f} s target")


if __name__ == "__main__":
    main()
