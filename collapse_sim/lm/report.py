"""What a person reads after ``collapse-sim lm``: the perplexity curves, the per-generation
histograms of sample perplexity, and ``report.md`` setting the measured curve beside the paper's."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from collapse_sim.metrics import SimulationResult  # noqa: E402
from collapse_sim.plots import save_figure, save_markdown  # noqa: E402


def _arms(result: SimulationResult) -> list[str]:
    return list(result.summary["arms"])


def _series(result: SimulationResult, arm: str, name: str) -> list[float]:
    return result.metrics[f"{arm}/{name}"]["mean"]


def plot_perplexity(result: SimulationResult, path: Path) -> None:
    """Human-test perplexity per generation for every arm, absolute and as a ratio to generation 0."""
    fig, (ax, rx) = plt.subplots(1, 2, figsize=(11, 4))
    for arm in _arms(result):
        ppl = np.array(_series(result, arm, "eval_perplexity"))
        ax.plot(result.generations, ppl, marker="o", label=arm)
        rx.plot(result.generations, ppl / ppl[0], marker="o", label=arm)
    paper = result.summary["paper"]
    rx.axhspan(*paper["replace_ratio"], color="tab:red", alpha=0.12, label="paper, no data kept (Fig. 1b)")
    rx.axhspan(1.0, paper["mix_ratio_max"], color="tab:green", alpha=0.12, label="paper, 10% kept (Fig. 1c)")
    ax.set(xlabel="generation", ylabel="perplexity on human test text", title="Test perplexity")
    rx.set(xlabel="generation", ylabel="ratio to generation 0", title="Relative to generation 0")
    for a in (ax, rx):
        a.set_yscale("log")
        a.set_xticks(result.generations)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def plot_histograms(per_generation: Sequence[np.ndarray], human: np.ndarray, path: Path, title: str = "") -> None:
    """One histogram per generation of its samples' perplexity under generation 0 (the paper's Fig. 1 insets)."""
    all_values = np.concatenate([np.asarray(h) for h in per_generation] + [np.asarray(human)])
    bins = np.logspace(np.log10(max(all_values.min(), 1.0)), np.log10(all_values.max()), 60)
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = plt.cm.viridis(np.linspace(0, 1, len(per_generation)))
    for g, (values, colour) in enumerate(zip(per_generation, colours)):
        ax.hist(values, bins=bins, histtype="step", weights=np.full(len(values), 1 / len(values)), color=colour,
                label=f"generation {g}")
    ax.hist(human, bins=bins, histtype="stepfilled", weights=np.full(len(human), 1 / len(human)), color="grey",
            alpha=0.3, label="human test text")
    ax.set_xscale("log")
    ax.set(xlabel="perplexity of a sample under generation 0", ylabel="share of samples", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def write_report(out: Path, result: SimulationResult) -> Path:
    """``report.md``: the measured curves beside the paper's, and what each generation trained on."""
    s = result.summary
    paper = s["paper"]
    lines = [
        "# Recursive training of a language model on its own output",
        "",
        f"Base model: `{s['base_model']}`. Each generation fine-tunes this same base: generation 0 on the human "
        "training blocks, generation n+1 on data generation n wrote (see *trained on* below). Perplexity is measured "
        "on the human evaluation text. Files: `metrics.json`, `perplexity.png`, `histograms-*.png`, `corpus/`.",
        "",
        "## Beside the paper (Shumailov et al., Nature 2024, Fig. 1; OPT-125m on WikiText-2)",
        "",
        f"The paper: zero-shot perplexity {paper['zero_shot_perplexity']}, fine-tuned on real data "
        f"{paper['real_finetune_perplexity']}; with no original data kept, generations lose about "
        f"{paper['replace_points_lost'][0]}-{paper['replace_points_lost'][1]} points (a ratio of "
        f"{paper['replace_ratio'][0]:.2f}-{paper['replace_ratio'][1]:.2f} to generation 0); with 10% kept, only minor "
        f"degradation (the plot's axis spans {paper['mix_axis'][0]}-{paper['mix_axis'][1]}, a ratio of at most "
        f"{paper['mix_ratio_max']:.2f}). A small model starts far above 34, so compare ratios.",
        "",
        "| arm | gen 0 | last gen | ratio last/gen 0 | max ratio | paper ratio |",
        "|---|---|---|---|---|---|",
    ]
    for arm, a in s["arms"].items():
        ref = (f"{paper['replace_ratio'][0]:.2f}-{paper['replace_ratio'][1]:.2f}" if arm.startswith("replace")
               else f"<= {paper['mix_ratio_max']:.2f}" if arm.startswith("mix") else "-")
        lines.append(f"| {arm} | {a['eval_perplexity_gen0']:.1f} | {a['eval_perplexity_last']:.1f} | "
                     f"{a['ratio_last_to_gen0']:.2f} | {a['max_ratio_to_gen0']:.2f} | {ref} |")
    lines += ["", "## Per generation", ""]
    cols = ("eval_perplexity", "ppl_q50", "share_below_human_p05", "share_above_human_p95", "distinct_2",
            "vocabulary_size", "unigram_kl", "repeated_4gram_share")
    for arm, a in s["arms"].items():
        lines += [f"### {arm}", "", f"Generation 1 trains on {a['trained_on']}; each later generation likewise "
                  f"on its predecessor's output. Checkpoints selected on {a['selected_on']}.", "", "| gen | " + " | ".join(cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        for i, g in enumerate(result.generations):
            vals = [result.metrics[f"{arm}/{c}"]["mean"][i] for c in cols]
            lines.append(f"| {g} | " + " | ".join(f"{v:.3g}" for v in vals) + " |")
        lines.append("")
    h = s["human"]
    lines += [
        "Human evaluation text, for reference: "
        f"distinct-2 {h['distinct_2']:.3g}, vocabulary size {h['vocabulary_size']:.0f}, unigram KL "
        f"{h['unigram_kl']:.3g}, repeated 4-gram share {h['repeated_4gram_share']:.3g}.",
        "",
        "Columns: `ppl_q50` is the median perplexity of a generation's samples under generation 0; the shares are "
        "of samples below the 5th / above the 95th percentile of human text's perplexity under generation 0 "
        "(collapse piles samples where generation 0 is confident and grows a tail of errors).",
        "",
    ]
    return save_markdown(lines, out / "report.md")
