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


def test_a_step_cap_fits_the_schedule_to_it_and_repeats_exactly():
    """``max_steps`` stops training and fits the cosine decay to the steps it allows, as a time budget does,
    but on any machine: a 3-epoch plan capped at one epoch's steps is the 1-epoch run, to the bit."""
    import torch

    from collapse_sim.training import TrainConfig, train_lm

    tok = tiny_tokenizer()
    blocks = torch.randint(0, len(tok), (40, 16), generator=torch.Generator().manual_seed(0))

    def trained(**kw) -> tuple[dict, torch.nn.Module]:
        model = tiny_gpt2(tok, seed=0, init=0.02)
        cfg = TrainConfig(lr=3e-3, batch_size=8, warmup_frac=0.0, **kw)
        return train_lm(model, blocks, cfg, progress=False), model

    planned, a = trained(epochs=1.0)
    capped, b = trained(epochs=3.0, max_steps=5)
    _, c = trained(epochs=3.0, max_steps=5)
    uncapped, _ = trained(epochs=3.0)
    assert planned["steps"] == capped["steps"] == 5 and uncapped["steps"] == 15
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    # equal to the bit: had the decay stayed planned for 15 steps, steps 2-5 would have run at higher rates
    assert all(torch.equal(sa[k], sb[k]) and torch.equal(sb[k], sc[k]) for k in sa)
