"""A variational autoencoder over flattened grey-level images (Kingma & Welling 2014).

Pixels are ``k / levels`` with ``k`` a count of ``levels`` binary sub-pixels (see
``image_data``), so the decoder's likelihood is Binomial(``levels``, p) per pixel:
its negative log-likelihood is ``levels`` times the binary cross-entropy between
``p`` and the pixel value, up to a constant. A generated image is either the
decoder mean ``p`` or a draw of ``Binomial(levels, p) / levels`` (sampled pixels).
The MLP encoder and decoder train in large mini-batches of whole tensors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn
from torch.nn import functional as F

from hygiene.atomic import atomic_open

PIXELS = ("sample", "mean")


@dataclass(frozen=True)
class VAEConfig:
    """Architecture and training of one generation's VAE."""

    latent_dim: int = 20  # the authors' notebook: a 20-d latent
    hidden: int = 256  # two hidden layers; an MLP, not the notebook's conv net, for the CPU budget
    epochs: int = 30  # the authors' notebook: 30 epochs per generation
    batch_size: int = 128
    lr: float = 1e-3  # Adam
    device: str = "cpu"


class VAE(nn.Module):
    """MLP encoder to a diagonal Gaussian posterior, MLP decoder to per-pixel logits."""

    def __init__(self, n_pixels: int, cfg: VAEConfig = VAEConfig()) -> None:
        super().__init__()
        h, d = cfg.hidden, cfg.latent_dim
        self.latent_dim = d
        self.encoder = nn.Sequential(nn.Linear(n_pixels, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2 * d))
        self.decoder = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, n_pixels))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of each image."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def neg_elbo(self, x: torch.Tensor, levels: int) -> torch.Tensor:
        """Negative evidence lower bound per image (nats, up to the binomial constant), batch mean."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = levels * F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="sum")
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum()
        return (recon + kl) / len(x)


def train_vae(x: np.ndarray, levels: int, cfg: VAEConfig = VAEConfig(), seed: int = 0) -> VAE:
    """A fresh VAE trained on images ``x`` (rows of pixels in [0, 1]) with Adam; deterministic in ``seed``."""
    data = torch.as_tensor(x, dtype=torch.float32, device=cfg.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = VAE(data.shape[1], cfg).to(cfg.device)
        opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
        for _ in range(cfg.epochs):
            for idx in torch.randperm(len(data)).split(cfg.batch_size):
                loss = vae.neg_elbo(data[idx], levels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return vae.eval()


@torch.inference_mode()
def sample_images(vae: VAE, n: int, levels: int, pixels: str = "sample", seed: int = 0) -> np.ndarray:
    """``n`` images decoded from prior draws ``z ~ N(0, I)``: decoder means or sampled pixels."""
    if pixels not in PIXELS:
        raise ValueError(f"pixels must be one of {PIXELS}, got {pixels!r}")
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, vae.latent_dim, generator=gen)
    device = next(vae.parameters()).device
    p = torch.sigmoid(vae.decoder(z.to(device))).double().cpu().numpy()
    if pixels == "mean":
        return p.astype(np.float32)
    rng = np.random.default_rng(seed)
    return (rng.binomial(levels, p) / levels).astype(np.float32)


@torch.inference_mode()
def encode_means(vae: VAE, x: np.ndarray) -> np.ndarray:
    """Posterior means of images ``x`` under ``vae``'s encoder, shape ``(n, latent_dim)``."""
    device = next(vae.parameters()).device
    mu, _ = vae.encode(torch.as_tensor(x, dtype=torch.float32, device=device))
    return mu.double().cpu().numpy()


def save_vae(vae: VAE, path: str | os.PathLike) -> None:
    """Write the weights as safetensors, atomically (the caller's config rebuilds the architecture)."""
    with atomic_open(path, "wb") as fh:
        fh.write(safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}))


def load_vae(path: str | os.PathLike, n_pixels: int, cfg: VAEConfig = VAEConfig()) -> VAE:
    """A VAE with ``cfg``'s architecture and the weights saved at ``path``; weights of another architecture
    are a one-line ``ValueError``."""
    vae = VAE(n_pixels, cfg)
    try:
        vae.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:  # load_state_dict's missing, unexpected or mis-shaped tensors
        if not str(exc).startswith("Error(s) in loading state_dict"):
            raise
        raise ValueError(f"weights of another architecture, not a VAE of {n_pixels} pixels with this "
                         "configuration") from None
    return vae.to(cfg.device).eval()
