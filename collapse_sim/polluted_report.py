"""What a person reads after ``collapse-sim polluted``: perplexity against generation for the three
chains with their spread over runs, and ``report.md`` with the headline gap closed and the per-generation
training-set sizes and filter statistics."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from collapse_sim.metrics import SimulationResult  # noqa: E402
from collapse_sim.plots import save_figure, save_markdown  # noqa: E402

_COLOURS = {"unfiltered": "tab:red", "filtered": "tab:blue", "oracle": "tab:green"}


def _chains(result: SimulationResult) -> list[str]:
    """The chains of a result, in its order (``<chain>/eval_perplexity`` for each)."""
    return [k.split("/")[0] for k in result.metrics if k.endswith("/eval_perplexity")]


def plot_chains(result: SimulationResult, path: Path) -> Path:
    """Human-test perplexity per generation: mean of each chain over runs, with the p10-p90 band."""
    gens = np.asarray(result.generations)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for chain in _chains(result):
        m = {k: np.asarray(v, dtype=float) for k, v in result.metrics[f"{chain}/eval_perplexity"].items()}
        ax.fill_between(gens, m["p10"], m["p90"], color=_COLOURS[chain], alpha=0.15)
        ax.plot(gens, m["mean"], marker="o", color=_COLOURS[chain], label=chain)
    s = result.summary
    closed = s["gap_closed"]
    title = f"synthetic share {s['synthetic_fraction']:.0%}, policy {s['policy']}"
    if closed == closed:  # not NaN
        title += f": filtering closes {closed:.0%} of the gap"
    ax.set(xlabel="generation", ylabel="perplexity on human test text", title=title)
    ax.set_xticks(gens)
    ax.grid(alpha=0.3)
    ax.legend(title=f"mean, p10-p90 over {s['runs']} run(s)", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _fmt(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:.3g}"


def write_report(out: Path, result: SimulationResult) -> Path:
    """``report.md``: the headline, then per generation each chain's perplexity and training-set size
    and the filter's recall and human-document retention."""
    s = result.summary
    spread = s["gap_closed_spread"]
    chains = _chains(result)
    lines = [
        "# Recursive training on polluted crawls: unfiltered, filtered, oracle",
        "",
        f"Each generation's crawl is {s['synthetic_fraction']:.0%} text the chain's previous model wrote; "
        f"`filtered` passes it through the hygiene filter (policy `{s['policy']}`"
        + (f", beta {s['beta']}" if s["policy"] == "resample" else "")
        + f"), `oracle` keeps its human documents only. Detector: `{s['detector']}`, threshold "
        f"{_fmt(s['synthetic_threshold'])}. Base model: `{s['base_model']}`. {s['runs']} run(s).",
        "",
        f"**Gap closed at the last generation: {_fmt(s['gap_closed'])}** (from the mean perplexities; "
        f"per run {', '.join(_fmt(v) for v in s['gap_closed_per_run'])}"
        + (f"; min {_fmt(spread['min'])}, max {_fmt(spread['max'])}" if spread else "")
        + f"). Collapse gap (unfiltered - oracle): {_fmt(s['collapse_gap_ppl'])} perplexity points; "
        f"generation 0: {_fmt(s['gen0_perplexity'])}.",
        "",
        "| gen | " + " | ".join(f"ppl {c}" for c in chains) + " | " + " | ".join(f"docs {c}" for c in chains)
        + " | detector recall | human flagged | human kept | synthetic share (filtered) |",
        "|---" * 11 + "|",
    ]
    m = result.metrics
    for i, g in enumerate(result.generations):
        ppl = [m[f"{c}/eval_perplexity"]["mean"][i] for c in chains]
        docs = [m[f"{c}/train_docs"]["mean"][i] for c in chains]
        flt = [m[f"filtered/{k}"]["mean"][i] for k in
               ("detector_recall", "detector_human_flagged", "human_kept", "train_synthetic_share")]
        lines.append(f"| {g} | " + " | ".join(_fmt(v) for v in ppl + docs + flt) + " |")
    lines += [
        "",
        "Means over runs. `docs`: documents in the training set (with repeats under resampling; generation 0 "
        "counts its blocks in documents). `detector recall`: share of the synthetic documents the detector scored "
        "(those that survived dedup and quality) that it flagged; `human flagged`: the same for human documents; "
        "`human kept`: share of the crawl's human documents in the training set. Quantiles and tail shares of the "
        "generated samples' perplexity under generation 0 are in `metrics.json` (`<chain>/ppl_q50`, "
        "`<chain>/share_above_human_p95`, ...).",
        "",
    ]
    return save_markdown(lines, out / "report.md")
