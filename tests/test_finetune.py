"""Fine-tuning the detector's machine LM: it learns the register of the text it is given."""
from __future__ import annotations

import json

import pytest

from tiny_lm import tiny_gpt2, tiny_tokenizer


def test_finetune_lowers_held_out_perplexity_and_writes_a_card(tmp_path):
    import dataclasses

    from collapse_sim.finetune import FinetuneConfig, finetune_lm
    from hygiene.lm import load_lm

    tok = tiny_tokenizer()
    tiny_gpt2(tok, seed=0, init=0.02).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    texts = [f"Certainly! Here is a balanced answer number {i}. In conclusion, it is important to note this."
             for i in range(120)]
    cfg = FinetuneConfig(base=str(tmp_path / "base"), val_fraction=0.1, save_dtype="float32")
    cfg.train = dataclasses.replace(cfg.train, epochs=3.0, lr=3e-3, batch_size=8, evals_per_epoch=1)
    out = finetune_lm(texts, cfg, tmp_path / "machine", progress=False, command="collapse-sim finetune-lm")
    m = json.loads((out / "finetune.json").read_text())["metrics"]
    assert m["val_perplexity"] < 0.5 * m["val_perplexity_before"]
    assert "collapse-sim finetune-lm" in (out / "CARD.md").read_text()
    assert load_lm(out).tokenizer.get_vocab() == tok.get_vocab()  # same tokenizer: the ratio is defined
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        finetune_lm(texts, FinetuneConfig(base=str(tmp_path / "nowhere")), tmp_path / "x", progress=False)
