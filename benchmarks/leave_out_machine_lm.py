"""Leave-one-repository-out with the machine LM refitted too: the figure no model of the detector saw.

A build's leave-one-repository-out figures refit the classifier and the lexical model without the
left-out repository, but its machine LM (the contrast model) read the machine side of every
repository's training groups. Here the machine LM is fine-tuned again, as the recipe's ``machine_lm``
section says (same base, steps and seed) but without the given repositories, every training and
held-out text is scored with it in the shipped machine LM's place, and each repository is left out
of the classifier and the lexical model as the build does (``hygiene.detector_eval``). One machine
LM serves all the given repositories, so each is measured with the others missing from it as well:
if anything, lower than a refit per repository.

    .venv/bin/python benchmarks/leave_out_machine_lm.py [--recipe models/detector/recipe.yaml]
        [--repository OWNER/NAME ...] [--work runs/leave-out-machine-lm] [--out benchmarks/results]

Defaults to the four repositories the shipped detector transfers to worst. The fine-tuned model and
the feature cache stay in ``--work``: an interrupted run resumes there. About 17 min of fine-tuning
and 16 min of scoring on 2 CPU cores. Writes ``leave_out_machine_lm.json`` and ``.md`` to ``--out``,
beside the shipped detector's own figures for the same repositories.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from collapse_sim.finetune import FinetuneConfig, finetune_lm
from hygiene.atomic import write_json
from hygiene.detector_eval import leave_repositories_out
from hygiene.errors import UserInputError
from hygiene.recipe import held_out_repositories, load_recipe, machine_lm_texts

from _results import save  # benchmarks/_results.py, beside this script

WEAKEST = ("FreedomIntelligence/ChatGPT-Detection-PR-HPPT", "ryuryukke/OUTFOX",
           "LorenzM97/human-AI-generatedTextCorpus", "Dongping-Chen/MixSet")


def machine_lm_without(recipe_path: str, repositories: list[str], out: Path) -> Path:
    """The recipe's machine LM fine-tuned again without ``repositories`` (reused when ``out`` holds one
    fine-tuned without the same ones)."""
    record = out / "left_out.json"
    if (out / "finetune.json").is_file():
        if not record.is_file() or json.loads(record.read_text()) != sorted(repositories):
            raise SystemExit(f"{out} holds a machine LM fine-tuned without other repositories; give another --work")
        return out
    recipe = load_recipe(recipe_path)
    m = recipe.machine_lm
    cfg = FinetuneConfig(base=m.base, seed=recipe.seed)
    cfg.train = dataclasses.replace(cfg.train, time_budget_s=m.time_budget_s, max_steps=m.max_steps)
    texts = machine_lm_texts(recipe, leave_out=repositories)
    finetune_lm(texts, cfg, out, data_note=f"{len(texts):,} machine texts of `{recipe_path}`'s machine_lm "
                                           f"section without {', '.join(repositories)}.")
    write_json(record, sorted(repositories))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="models/detector/recipe.yaml")
    parser.add_argument("--repository", action="append", help="detect-chat repository (owner/name); repeatable")
    parser.add_argument("--work", type=Path, default=Path("runs/leave-out-machine-lm"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    repositories = args.repository or list(WEAKEST)
    # everything that can fail at once is checked before the fine-tuning, not after it
    try:
        recipe = load_recipe(args.recipe)
        build = Path(recipe.out) / "evaluation.json"
        shipped = json.loads(build.read_text())["all features"]["leave-one-source-out"]
    except (UserInputError, OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"error: {exc} (run from the repository's root, or give --recipe)") from None
    unknown = sorted(set(repositories) - held_out_repositories(recipe))
    if unknown:
        raise SystemExit(f"not a detect-chat repository with held-out texts: {', '.join(unknown)}")
    t0 = time.perf_counter()
    lm = machine_lm_without(args.recipe, repositories, args.work / "machine-lm")
    refit = leave_repositories_out(recipe, repositories, contrast_lm=str(lm), cache=args.work / "features.jsonl")
    rows = {r: {"shipped": shipped[r]["auroc"], "machine_lm_refitted": refit[r]["auroc"],
                "machine_lm_refitted_ci95": refit[r]["auroc_ci95"], "n": refit[r]["n_human"] + refit[r]["n_machine"]} for r in repositories}
    result = {"recipe": args.recipe, "repositories_left_out_of_the_machine_lm": repositories,
              "machine_lm": json.loads((lm / "finetune.json").read_text())["metrics"],
              "by_repository": rows, "seconds": time.perf_counter() - t0}
    table = ["| repository left out | texts | shipped build (machine LM saw its training groups) "
             "| machine LM refitted without it (95% interval) |", "|---|---|---|---|"]
    table += [f"| {r} | {v['n']} | {v['shipped']:.3f} | {v['machine_lm_refitted']:.3f} "
              f"({v['machine_lm_refitted_ci95'][0]:.3f}-{v['machine_lm_refitted_ci95'][1]:.3f}) |" for r, v in rows.items()]
    path = save(args.out, "leave_out_machine_lm", result, "\n".join(table))
    print("\n".join(table))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
