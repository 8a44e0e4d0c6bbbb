"""Tokens per second of the recursive-training simulation's three hot paths, each against a
baseline measured in the same run:

- training (``train_lm``): fp32 with N threads vs bf16 autocast, and vs 1 thread;
- generation (``generate_continuations``): KV cache vs no cache, for greedy, sampling and beam 5;
- scoring (``sample_perplexities``): batched vs one sequence at a time.

The model is a freshly initialised GPT-2 of the preset's base size (speed does not depend
on the weights). Run: ``python benchmarks/lm_throughput.py --preset cpu``.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from collapse_sim.generation import Decoding, generate_continuations
from collapse_sim.lm import preset
from collapse_sim.text_metrics import sample_perplexities
from collapse_sim.training import TrainConfig, resolve_device, train_lm


def build(preset_name: str, device: torch.device) -> tuple[GPT2LMHeadModel, int, int]:
    cfg = preset(preset_name)
    b = cfg.base
    conf = GPT2Config(vocab_size=b.vocab_size, n_positions=max(b.context, 2 * cfg.block), n_embd=b.n_embd,
                      n_layer=b.n_layer, n_head=b.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    return GPT2LMHeadModel(conf).to(device), cfg.block, cfg.train.batch_size


def train_rate(model: GPT2LMHeadModel, blocks: torch.Tensor, cfg: TrainConfig) -> float:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    info = train_lm(model, blocks, cfg, progress=False)
    model.load_state_dict(state)
    return info["tokens_per_s"]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=20, help="training steps per measurement")
    ap.add_argument("--prompts", type=int, default=64, help="prompts per generation measurement")
    args = ap.parse_args()
    device = resolve_device(args.device)
    model, block, batch = build(args.preset, device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"preset {args.preset}: GPT-2 {n_params / 1e6:.2f}M parameters, {block}-token blocks, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(1, model.config.vocab_size, (batch * args.steps, block), generator=g)

    base = TrainConfig(epochs=1.0, batch_size=batch, device=str(device), threads=torch.get_num_threads())
    fp32 = train_rate(model, blocks, base)
    print(f"train fp32, {base.threads} threads: {fp32:,.0f} tokens/s")
    bf16 = train_rate(model, blocks, dataclasses.replace(base, bf16=True))
    print(f"train bf16 autocast: {bf16:,.0f} tokens/s  (x{bf16 / fp32:.2f} vs fp32)")
    if device.type == "cpu" and base.threads > 1:
        one = train_rate(model, blocks, dataclasses.replace(base, threads=1))
        torch.set_num_threads(base.threads)
        print(f"train fp32, 1 thread: {one:,.0f} tokens/s  ({base.threads} threads are x{fp32 / one:.2f})")

    prompts = blocks[: args.prompts]
    for method in ("greedy", "sample", "beam"):
        dec = Decoding(method=method, max_new_tokens=block)
        n_new = len(prompts) * block
        kw = dict(pad_token_id=0, batch_size=64, progress=False)
        cached = timed(lambda: generate_continuations(model, prompts, dec, **kw))
        uncached = timed(lambda: generate_continuations(model, prompts, dec, use_cache=False, **kw))
        print(f"generate {method}: {n_new / cached:,.0f} new tokens/s with KV cache, {n_new / uncached:,.0f} "
              f"without (x{uncached / cached:.2f})")

    conts = blocks[args.prompts : 2 * args.prompts]
    n_tok = len(conts) * block
    batched = timed(lambda: sample_perplexities(model, prompts, conts, batch_size=64, progress=False))
    single = timed(lambda: sample_perplexities(model, prompts, conts, batch_size=1, progress=False))
    print(f"score: {n_tok / batched:,.0f} scored tokens/s batched (64), {n_tok / single:,.0f} one at a time "
          f"(x{single / batched:.2f})")


if __name__ == "__main__":
    main()
