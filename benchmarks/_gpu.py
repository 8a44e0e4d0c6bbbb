"""The device a GPU benchmark measures: the one named, else CUDA; none where no GPU is here and none was named."""
from __future__ import annotations

import torch

from hygiene.lm import select_device


def gpu_to_measure(device: str | None) -> torch.device | None:
    """``device`` (any torch device), else the CUDA GPU; None, after saying so, when neither is here."""
    if device is None and not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to measure (--device cpu runs it on the CPU)")
        return None
    return select_device(device or "cuda")
