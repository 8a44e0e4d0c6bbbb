"""The base-model pre-training: tokenizer round trip, learning, cached data, loadable output."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from collapse_sim.pretrain import encode_documents, pack_blocks, preset, pretrain, train_tokenizer


def test_tokenizer_round_trips_and_packs():
    tok = train_tokenizer(["the cat sat on the mat. " * 50, "a dog ran far away. " * 50], 300)
    text = "the dog sat."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    stream = encode_documents(tok, ["a b", "c d"])
    assert (stream == tok.eos_token_id).sum() == 2
    blocks = pack_blocks(np.arange(10, dtype=np.uint16), 4)
    assert blocks.shape == (2, 4) and blocks[1, 0] == 4


@pytest.mark.slow
def test_tiny_pretrain_learns_and_saves(tmp_path, shared_data):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = preset("tiny")
    out = pretrain(cfg, tmp_path / "m", root=shared_data, progress=False)
    info = json.loads((out / "pretrain.json").read_text())
    vocab = len(AutoTokenizer.from_pretrained(out))
    # it learned: an untrained model is near the uniform guess (perplexity ~ vocab size)
    assert info["metrics"]["val_perplexity"] < vocab / 2
    model = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(model, torch.nn.Module)
    assert (out / "CARD.md").exists() and (out / "model.safetensors").exists()
    # the prepared data is cached: a second run reuses it
    cached = list((out / ".cache").iterdir())
    assert len(cached) == 1
