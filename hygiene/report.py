"""One self-contained page about a filter run: ``report.html`` beside its ``stats.json``.

The page shows the funnel by stage, every rejection reason with excerpts of example
records, kept and rejected per input group, the P(machine) histogram per group, and an
estimate of the share of machine-written text among the records the detector scored,
with a confidence interval. It needs no network: figures are PNGs inlined as base64,
and every number on it comes from ``stats.json`` (excerpts from ``rejected``).

The estimate is adjusted classify-and-count (Forman 2008): with the detector's
true-positive rate ``TPR`` and false-positive rate ``FPR`` at the run's threshold,
``share = (flagged - FPR) / (TPR - FPR)``, clipped to [0, 1]; the interval carries the error
of the flagged rate and, where the detector records the counts they were measured on, of TPR
and FPR too (:func:`machine_share`). It is only as good as those rates are for the input: on the example crawl the
recorded TPR (0.65, chat-era text) is neither its own-LM pages' (0.96) nor other LLMs' (0.31).
"""
from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hygiene.errors import UserInputError
from hygiene.paths import detector_path
from hygiene.normalize import without_lone_surrogates
from hygiene.records import ReadOptions, Shard, read_shard

EXCERPT_CHARS = 300
MAX_GROUPS_PLOTTED = 8
#: evaluation sets whose "machine_flagged" gives the TPR, in order of preference (real LLM text first)
TPR_SETS = ("detect-chat", "detect-dev", "corpus-test")


@dataclass
class DetectorRates:
    """The detector's measured rates at a threshold, and where they come from (``None``: unknown)."""

    tpr: float | None
    fpr: float | None
    threshold: float | None
    source: str
    #: the machine texts TPR was measured on, and the human texts FPR was (None: not recorded)
    n_tpr: int | None = None
    n_fpr: int | None = None


@dataclass
class MachineShare:
    """Adjusted classify-and-count estimate of the machine-written share, with its interval."""

    flagged: int
    scored: int
    estimate: float | None
    low: float | None
    high: float | None
    level: float = 0.95
    #: the flagged rate lies outside [FPR, TPR]: the rates do not fit this input, and the estimate is clipped
    clipped: bool = False


def detector_rates(detector_dir: str | Path | None, threshold: float | None) -> DetectorRates:
    """TPR and FPR of the detector at ``threshold``, from its ``detector.json`` (FPR on held-out human
    calibration text) and ``evaluation.json`` (TPR, the share of machine text flagged); unknown when
    missing or measured at another threshold."""
    path = detector_path(detector_dir)
    try:
        card = json.loads((path / "detector.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return DetectorRates(None, None, threshold, f"no detector.json in {path}")
    if threshold is None or card.get("threshold") is None or abs(card["threshold"] - threshold) > 1e-9:
        return DetectorRates(None, None, threshold, "the run's threshold is not the one the detector was measured at")
    calibration = card.get("metrics", {}).get("calibration", {})
    fpr, n_fpr = calibration.get("human_flagged"), calibration.get("n_human")
    try:
        evaluation = json.loads((path / "evaluation.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        evaluation = {}
    for name in TPR_SETS:
        at = evaluation.get(name, {}).get("at_threshold", {})
        if at.get("machine_flagged") is not None and abs(at.get("threshold", -1) - threshold) < 1e-9:
            return DetectorRates(at["machine_flagged"], fpr, threshold,
                                 f"{path}: FPR on human calibration text, TPR on the '{name}' evaluation set",
                                 at.get("n_machine"), n_fpr)
    return DetectorRates(None, fpr, threshold, f"{path}: no TPR measured at this threshold", None, n_fpr)


def machine_share(flagged: int, scored: int, rates: DetectorRates, level: float = 0.95, draws: int = 20_000,
                  seed: int = 0) -> MachineShare:
    """(flagged rate - FPR) / (TPR - FPR), clipped to [0, 1], and its interval.

    With the counts TPR and FPR were measured on (``n_tpr``, ``n_fpr``), the interval carries the error of all
    three rates: the share computed over ``draws`` seeded draws of each rate from its Jeffreys posterior
    (Beta(k + 1/2, n - k + 1/2)); without them, the exact binomial interval of the flagged rate, mapped the
    same way. Neither is ever of zero width at 0 or all flagged, as a bootstrap of the records is."""
    from scipy.stats import beta, binomtest

    if not scored or rates.tpr is None or rates.fpr is None or rates.tpr <= rates.fpr:
        return MachineShare(flagged, scored, None, None, None, level)

    def adjust(rate: Any, tpr: Any = rates.tpr, fpr: Any = rates.fpr) -> np.ndarray:
        return np.clip((np.asarray(rate) - fpr) / np.maximum(np.asarray(tpr) - fpr, 1e-12), 0.0, 1.0)

    rate = flagged / scored
    if rates.n_tpr and rates.n_fpr:
        rng = np.random.default_rng(seed)

        def posterior(k: float, n: int) -> np.ndarray:
            return beta.rvs(k + 0.5, n - k + 0.5, size=draws, random_state=rng)

        shares = adjust(posterior(flagged, scored), posterior(rates.tpr * rates.n_tpr, rates.n_tpr),
                        posterior(rates.fpr * rates.n_fpr, rates.n_fpr))
        low, high = np.quantile(shares, [(1 - level) / 2, (1 + level) / 2])
    else:
        ci = binomtest(flagged, scored).proportion_ci(confidence_level=level, method="exact")
        low, high = adjust(ci.low), adjust(ci.high)
    return MachineShare(flagged, scored, float(adjust(rate)), float(low), float(high), level,
                        clipped=not rates.fpr <= rate <= rates.tpr)


def _png(fig: Any) -> str:
    """A matplotlib figure as an inline ``<img>``."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _funnel_figure(stages: list[dict[str, Any]]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.4 * len(stages) + 1))
    names = [s["name"] for s in stages]
    ax.barh(names, [s["records_out"] for s in stages], color="#4c72b0", label="went on")
    ax.barh(names, [s["records_in"] - s["records_out"] for s in stages], left=[s["records_out"] for s in stages],
            color="#dd8452", label="rejected")
    ax.invert_yaxis()
    ax.set_xlabel("records")
    ax.legend(loc="lower right")
    return _png(fig)


def _groups_figure(groups: dict[str, dict[str, int]]) -> str:
    import matplotlib.pyplot as plt

    names = list(groups)[:MAX_GROUPS_PLOTTED * 3]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1))
    left = np.zeros(len(names))
    for output, color in (("kept", "#55a868"), ("rejected", "#dd8452"), ("errors", "#c44e52")):
        values = np.array([groups[g][output] for g in names])
        ax.barh(names, values, left=left, color=color, label=output)
        left += values
    ax.invert_yaxis()
    ax.set_xlabel("records")
    ax.legend(loc="lower right")
    return _png(fig)


def _histogram_figure(by_group: dict[str, list[int]], threshold: float | None) -> str:
    import matplotlib.pyplot as plt

    largest = sorted(by_group, key=lambda g: -sum(by_group[g]))[:MAX_GROUPS_PLOTTED]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for group in largest:
        counts = np.asarray(by_group[group], float)
        edges = np.linspace(0, 1, len(counts) + 1)
        ax.stairs(counts / max(counts.sum(), 1), edges, label=f"{group} ({int(counts.sum())})")
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("P(machine)")
    ax.set_ylabel("share of the group's scored records")
    ax.legend(fontsize="small")
    return _png(fig)


def _rejected_path(run_dir: Path) -> Path | None:
    return next((p for p in (run_dir / "rejected.jsonl", run_dir / "rejected.parquet") if p.exists()), None)


def excerpts(run_dir: str | Path, ids: set[str], text_field: str = "text") -> dict[str, str]:
    """The opening of the text of each rejected record whose id is in ``ids``."""
    path = _rejected_path(Path(run_dir))
    found: dict[str, str] = {}
    if path is None or not ids:
        return found
    shard = Shard(path, "parquet" if path.suffix == ".parquet" else "jsonl", path.name)
    for item in read_shard(shard, ReadOptions(text_field)):
        note = (item.record or {}).get("hygiene") or {}
        if note.get("id") in ids:
            text = str(item.record.get(text_field, ""))
            found[note["id"]] = text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else "")
            if len(found) == len(ids):
                break
    return found


def _cell(key: str, value: Any) -> str:
    """A table cell carrying the stats key it shows (so the page can be checked against ``stats.json``)."""
    return f'<td data-key="{html.escape(key)}">{html.escape(str(value))}</td>'


def _percent(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.1%}"


def render(stats: Mapping[str, Any], run_dir: str | Path) -> str:
    """The report page of the run whose ``stats.json`` is ``stats``."""
    e = html.escape
    stages = stats["stages"]
    parts = [f"<h1>Filter run: {e(str(run_dir))}</h1>",
             f"<p>Inputs: {e(', '.join(stats['inputs']))}; profile <b>{e(str(stats.get('profile')))}</b>; "
             f"groups by <code>{e(stats['group_field'])}</code>; engine {e(stats['engine'])}; "
             f"{stats['elapsed_s']} s.</p>",
             "<table><tr><th>records in</th><th>kept</th><th>rejected</th><th>errors</th></tr><tr>"
             + "".join(_cell(k, stats[k]) for k in ("records_in", "kept", "rejected", "errors")) + "</tr></table>"]

    parts.append("<h2>Funnel by stage</h2><table><tr><th>stage</th><th>in</th><th>out</th><th>rejected</th>"
                 "<th>seconds</th></tr>")
    for s in stages:
        parts.append(f"<tr><td>{e(s['name'])}</td>" + _cell(f"stages.{s['name']}.records_in", s["records_in"])
                     + _cell(f"stages.{s['name']}.records_out", s["records_out"])
                     + f"<td>{s['records_in'] - s['records_out']}</td>"
                     + _cell(f"stages.{s['name']}.seconds", s["seconds"]) + "</tr>")
    parts.append("</table>" + _funnel_figure(stages))

    parts.append("<h2>Why records were rejected</h2>")
    wanted = {i for s in stages for ids in s["examples"].values() for i in ids}
    text = excerpts(run_dir, wanted, stats["config"]["text_field"])
    for s in stages:
        for reason, count in sorted(s["reasons"].items(), key=lambda x: -x[1]):
            groups = ", ".join(f"{g}: {r[reason]}" for g, r in s["by_group"].items() if reason in r)
            parts.append(f"<h3>{e(s['name'])} / {e(reason)}: "
                         f'<span data-key="stages.{e(s["name"])}.reasons.{e(reason)}">{count}</span></h3>'
                         f"<p>By group: {e(groups)}</p><ul>")
            parts += [f"<li><code>{e(i)}</code>: <pre>{e(text.get(i, '(not found in the rejected output)'))}</pre></li>"
                      for i in s["examples"][reason]]
            parts.append("</ul>")

    parts.append("<h2>Kept and rejected per group</h2><table><tr><th>group</th><th>records in</th><th>kept</th>"
                 "<th>rejected</th><th>errors</th></tr>")
    for group, tally in stats["groups"].items():
        parts.append(f"<tr><td>{e(group)}</td>" + "".join(_cell(f"groups.{group}.{k}", tally[k])
                                                          for k in ("records_in", "kept", "rejected", "errors")) + "</tr>")
    parts.append("</table>")
    if stats["groups"]:
        parts.append(_groups_figure(stats["groups"]))

    hist = stats["p_machine_histogram"]["by_group"]
    threshold = stats["synthetic_threshold"]
    parts.append("<h2>P(machine) per group</h2>")
    if not hist:
        parts.append("<p>The detector did not run (or scored nothing).</p>")
        return _page(parts)
    parts.append(_histogram_figure(hist, threshold))
    first = stats.get("detector_first_pass", {})
    if first.get("settled", 0) + first.get("scored", 0):
        parts.append(f'<p>The detector\'s cascade settled <span data-key="detector_first_pass.settled">'
                     f'{first["settled"]}</span> records in its first pass; its language models scored '
                     f'<span data-key="detector_first_pass.scored">{first["scored"]}</span>.</p>')

    saved = stats.get("detector_rates")  # as the detector stood when the run was made (older runs: as it is now)
    rates = DetectorRates(**saved) if saved else detector_rates(stats["config"]["synthetic"]["model"], threshold)
    flagged = stats["by_stage"].get("synthetic", {}).get("machine_generated", 0)
    scored = sum(sum(c) for c in hist.values())
    share = machine_share(flagged, scored, rates)
    spread = ("carries the error of the flagged rate and of TPR and FPR (from the counts they were measured on)"
              if rates.n_tpr and rates.n_fpr else
              "is the exact binomial one of the flagged rate; the error of TPR and FPR is not in it")
    misfit = ("<p><b>The rates do not fit this input</b>: its flagged rate lies outside [FPR, TPR], so the "
              "estimate is clipped; its machine text is not the kind the detector was measured on.</p>"
              if share.clipped else "")
    parts.append(
        "<h2>Share of machine-written text</h2>"
        f"<p>Estimate: <b data-key='machine_share.estimate'>{_percent(share.estimate)}</b> "
        f"({share.level:.0%} interval {_percent(share.low)} to {_percent(share.high)}) of the "
        f"<span data-key='machine_share.scored'>{scored}</span> records the detector scored; "
        f"<span data-key='machine_share.flagged'>{flagged}</span> flagged above the threshold {threshold}.</p>"
        f"{misfit}"
        f"<p>Detector rates: TPR {_percent(rates.tpr)}, FPR {_percent(rates.fpr)} ({e(rates.source)}).</p>"
        "<p>Assumptions: adjusted classify-and-count, (flagged rate - FPR) / (TPR - FPR), clipped to [0, 1]. "
        "It holds if the detector flags the machine text in this input as often as in its evaluation set (TPR) "
        "and the human text as often as on its human calibration text (FPR); a generator, domain or language "
        "unlike those breaks it, and the interval with it (no interval can see rates that are wrong for the "
        "input). It covers only the records that reached the detector (after "
        "dedup and the quality rules; with --annotate-only, those no earlier stage would have rejected). The "
        f"interval {spread}.</p>")
    return _page(parts)


def _page(parts: list[str]) -> str:
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}pre{white-space:pre-wrap;"
             "font-size:smaller;background:#f6f6f6;padding:4px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>hygiene report</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` (or ``out``) for the finished run in ``run_dir``; return its path."""
    from hygiene.atomic import atomic_open

    run_dir = Path(run_dir)
    try:
        stats = json.loads((run_dir / "stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserInputError(f"no finished run in {run_dir}: cannot read stats.json ({exc})") from None
    if "stages" not in stats:
        raise UserInputError(f"{run_dir}/stats.json was written by an older version: rerun the filter")
    path = Path(out) if out is not None else run_dir / "report.html"
    if path.suffix.lower() not in (".html", ".htm"):
        raise UserInputError(f"the report is a page: give --out a .html path, not {path}")
    page = without_lone_surrogates(render(stats, run_dir))  # a record's lone surrogate, quoted as an example
    with atomic_open(path, "w") as fh:
        fh.write(page)
    return path
