"""One causal-LM training loop, read top to bottom: data, model, optimiser, schedule, evaluation, checkpoint.

Used for pre-training the base/reference model and for every fine-tuning generation
of the recursive-training simulations.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from tqdm.auto import tqdm


@dataclass
class TrainConfig:
    """Training hyper-parameters; defaults are the fine-tuning values of the paper's setup."""

    epochs: float = 5.0  # the paper: 5 epochs with no original data kept, 10 with 10% kept
    lr: float = 2e-4
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_frac: float = 0.05  # share of steps with a linear warm-up
    min_lr_frac: float = 0.1  # cosine decay ends at this share of lr
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"  # "auto" picks CUDA when present
    bf16: bool = False  # bf16 autocast (CUDA, or CPU where it is faster)
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    evals_per_epoch: int = 1  # validation passes per epoch (checkpoint selection granularity)
    time_budget_s: float | None = None  # stop early after this many seconds (schedule re-fitted once)
    max_steps: int | None = None  # stop after this many steps, the schedule fitted to them as a time budget does;
    #                               unlike a time budget, it trains the same on any machine


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


@torch.inference_mode()
def block_nll(model: torch.nn.Module, blocks: torch.Tensor, batch_size: int = 64, bf16: bool = False) -> float:
    """Mean next-token negative log-likelihood (nats) over all predicted tokens of ``blocks`` (N, T)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        x = blocks[i : i + batch_size].to(device)
        with _autocast(device, bf16):
            logits = model(input_ids=x).logits
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="sum"
        )
        total += float(nll)
        count += x[:, 1:].numel()
    model.train(was_training)
    return total / max(count, 1)


def block_perplexity(model: torch.nn.Module, blocks: torch.Tensor, batch_size: int = 64, bf16: bool = False) -> float:
    """Perplexity of ``model`` on token ``blocks`` (N, T): exp of the mean next-token NLL."""
    return math.exp(block_nll(model, blocks, batch_size, bf16))


def batch_indices(n: int, batch_size: int, gen: torch.Generator, full: bool = False) -> Iterator[torch.Tensor]:
    """Row indices of each training batch, endlessly: every epoch a new shuffle of ``n`` rows. An epoch's last
    batch is short when ``batch_size`` does not divide ``n``, unless ``full``: then it is filled from the next
    epoch's shuffle, so every batch holds ``batch_size`` rows (the same batches when it divides ``n``)."""
    order, pos = torch.randperm(n, generator=gen), 0
    while True:
        if pos >= n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        while full and len(idx) < batch_size:
            order = torch.randperm(n, generator=gen)
            pos = min(batch_size - len(idx), n)
            idx = torch.cat([idx, order[:pos]])
        yield idx


def train_lm(
    model: torch.nn.Module,
    train_blocks: torch.Tensor,
    cfg: TrainConfig,
    val_blocks: torch.Tensor | None = None,
    progress: bool = True,
    full_batches: bool = False,
) -> dict[str, Any]:
    """Train ``model`` (an HF causal LM) on ``train_blocks`` (N, T) with AdamW and a cosine schedule.

    With ``val_blocks`` the weights with the best validation loss are restored at the
    end (the paper selects checkpoints on validation data). With ``full_batches`` every
    batch holds ``cfg.batch_size`` blocks (see :func:`batch_indices`) and an epoch is
    ``N / batch_size`` steps. Returns the history and the selected evaluation point.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model.to(device).train()
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    n = len(train_blocks)
    steps_per_epoch = n / cfg.batch_size if full_batches else max(1, math.ceil(n / cfg.batch_size))
    total_steps = max(1, int(round(cfg.epochs * steps_per_epoch)))
    warmup = int(cfg.warmup_frac * total_steps)
    eval_every = max(1, int(round(steps_per_epoch)) // max(1, cfg.evals_per_epoch))

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "ln" in name or "norm" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )
    sched_total = [min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps]  # a time budget re-fits it

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        t = min(1.0, (step - warmup) / max(1, sched_total[0] - warmup))
        return cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"val_loss": float("inf"), "step": 0, "state": None}
    start = time.perf_counter()
    bar = tqdm(total=sched_total[0], desc="train", unit="step", disable=not progress, leave=False)
    step = 0
    batches = batch_indices(n, cfg.batch_size, gen, full_batches)
    while step < sched_total[0]:
        x = train_blocks[next(batches)].to(device, non_blocking=True)
        with _autocast(device, cfg.bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        if cfg.time_budget_s and step == 50:
            rate = step / (time.perf_counter() - start)
            sched_total[0] = max(step + 1, min(sched_total[0], int(rate * cfg.time_budget_s)))
            bar.total = sched_total[0]
        if step % eval_every == 0 or step == sched_total[0]:
            rec: dict[str, float] = {"step": step, "epoch": step / steps_per_epoch, "train_loss": float(loss.detach())}
            if val_blocks is not None:
                rec["val_loss"] = block_nll(model, val_blocks, batch_size=max(cfg.batch_size, 32), bf16=cfg.bf16)
                if rec["val_loss"] < best["val_loss"]:
                    best = {"val_loss": rec["val_loss"], "step": step, "state": copy.deepcopy(model.state_dict())}
            history.append(rec)
            bar.set_postfix({k: round(v, 3) for k, v in rec.items() if k.endswith("loss")})
    bar.close()
    seconds = time.perf_counter() - start
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    return {
        "history": history,
        "steps": step,
        "seconds": seconds,
        "tokens_per_s": step * cfg.batch_size * train_blocks.shape[1] / seconds,
        "best_step": best["step"] if best["state"] is not None else step,
        "best_val_loss": best["val_loss"] if best["state"] is not None else None,
    }


def run_summary(info: dict[str, Any], cfg: TrainConfig, train_blocks: torch.Tensor, val_blocks: torch.Tensor,
                seconds: float) -> dict[str, Any]:
    """What a model card reports of a :func:`train_lm` run: data, steps, speed, device, best validation perplexity."""
    return {
        "train_tokens": int(train_blocks.numel()),
        "val_tokens": int(val_blocks.numel()),
        "steps": info["steps"],
        "epochs_seen": info["steps"] * cfg.batch_size / max(1, len(train_blocks)),
        "train_seconds": seconds,
        "train_tokens_per_s": info["tokens_per_s"],
        "device": str(resolve_device(cfg.device)),
        "val_perplexity": math.exp(info["best_val_loss"]) if info["best_val_loss"] is not None else None,
    }
