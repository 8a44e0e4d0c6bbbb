"""Tiny randomly initialised GPT-2 models sharing one byte-level BPE tokenizer, for fast scoring tests."""
from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from hygiene.lm import LanguageModel, wrap_lm

# tiny models gain nothing from intra-op threads, and on a shared 2-core machine they lose 50x to contention
torch.set_num_threads(1)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A model trained on its own samples forgets the tails of the distribution.",
    "Human text is varied; machine text sits in the model's high-probability region.",
    "It was the best of times, it was the worst of times.",
] * 4


def tiny_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few sentences (GPT-2 style, no special tokens but EOS)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def tiny_gpt2(tokenizer: PreTrainedTokenizerFast, seed: int, init: float = 0.3, n_positions: int = 64) -> GPT2LMHeadModel:
    """A 2-layer GPT-2 with peaked (large-init) random weights, so ranks and entropies vary."""
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
        initializer_range=init, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
    )
    return GPT2LMHeadModel(cfg)


def tiny_lms(n: int = 1, seed: int = 0) -> list[LanguageModel]:
    """``n`` different tiny models over one shared tokenizer."""
    tok = tiny_tokenizer()
    return [wrap_lm(tiny_gpt2(tok, seed + i), tok, name=f"tiny-{seed + i}") for i in range(n)]
