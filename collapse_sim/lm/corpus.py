"""The labelled generational corpus of an lm run: human blocks and every generation's continuations."""
from __future__ import annotations

from pathlib import Path

from collapse_sim.lm.models import load_tokenizer, model_dir
from collapse_sim.resume import load_tensors, read_record


def build_corpus(run_dir: str | Path) -> Path:
    """Write ``run_dir/corpus`` from the run's saved generations: the human training blocks
    (generation 0) and the continuations of every finished generation the run's last configuration
    asks for (generation ``g + 1`` is what model generation ``g`` wrote; one an earlier, longer run left
    is not part of this run). Returns the corpus directory."""
    from collapse_sim.corpus import CorpusRow, write_corpus  # imports `datasets`, slow: only when needed

    run = Path(run_dir)
    info_path = run / "run.json"
    if not info_path.is_file() or not (run / "human.safetensors").is_file():
        raise FileNotFoundError(f"{run} is not an lm run directory (no run.json / human.safetensors)")
    info = read_record(info_path, "config", "base_model", "train_file",
                       fix="it is the lm run's own record: rerun collapse-sim lm into a fresh --out")
    seed = info["config"]["seed"]
    tokenizer = load_tokenizer(info["base_model"])
    human = load_tensors(run / "human.safetensors", "train", "train_ids")
    prompts = tokenizer.batch_decode(human["train"].tolist())
    source_ids = [f"{info['train_file']}:{i}" for i in human["train_ids"].tolist()]
    rows = [
        CorpusRow(text=text, generation=0, label="human", generator="human", decoding="", mode="", seed=seed,
                  prompt="", source_id=sid)
        for text, sid in zip(prompts, source_ids)
    ]
    for mode in info["config"]["modes"]:
        for gdir in sorted(run.glob(f"{mode}/*/gen-*")):
            if not (gdir / "gen.json").is_file():
                continue
            g, method = int(gdir.name.split("-")[1]), gdir.parent.name
            if g >= info["config"].get("generations", g + 1):
                continue
            continuations = load_tensors(gdir / "data.safetensors", "continuations")["continuations"]
            texts = tokenizer.batch_decode(continuations.tolist())
            generator = f"{model_dir(run, mode, method, g)} (generation {g})"
            rows.extend(
                CorpusRow(text=text, generation=g + 1, label="synthetic", generator=generator, decoding=method,
                          mode=mode, seed=seed, prompt=prompt, source_id=sid)
                for text, prompt, sid in zip(texts, prompts, source_ids)
            )
    write_corpus(rows, run / "corpus")
    return run / "corpus"

