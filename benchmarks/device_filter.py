"""The default filter on the example crawl with its detector on a GPU, against the same machine's CPU.

Runs of the default (human) profile over the example crawl (``examples/crawl``), the same documents:
the detector on the CPU with its cascade (the default there: the baseline, one process, every core to
torch), on the GPU with the cascade, and on the GPU scoring every document in full
(``synthetic.cascade: false``), each in one process and with ``--workers`` processes (the pure steps
and the detector's cheap features in the workers, the language models in the main process with the
GPU; then again with one wave of batches in flight instead of two, the engine as it was before waves
overlapped). Prints documents per second (wall, the detector loaded beforehand), the ratio to the CPU, and
the documents whose outcome (kept, or the rejection reason) differs from the CPU run's; writes
``device_filter.json`` and ``.md`` to ``--out``.

    python benchmarks/device_filter.py [--device cuda] [--workers 8] [--limit N] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

import hygiene.filter_run
from _gpu import gpu_to_measure  # benchmarks/_gpu.py, beside this script
from _results import save  # benchmarks/_results.py, beside this script
from cascade_speed import CRAWL, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="the GPU to measure [cuda; without one, nothing to measure]")
    ap.add_argument("--crawl", type=Path, default=CRAWL / "crawl.jsonl.gz")
    ap.add_argument("--limit", type=int, default=None, help="the first N documents only [all]")
    ap.add_argument("--workers", type=int, default=8, help="worker processes of the parallel runs [8]")
    ap.add_argument("--out", type=Path, default=None, help="folder for device_filter.json and .md")
    args = ap.parse_args()
    device = gpu_to_measure(args.device)
    if device is None:
        return
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    w = args.workers
    waves = hygiene.filter_run.IN_FLIGHT
    runs = {"CPU, cascade (baseline)": ("cpu", True, 1, waves),
            f"{name}, cascade": (str(device), True, 1, waves),
            f"{name}, every document scored in full": (str(device), False, 1, waves),
            f"{name}, cascade, --workers {w}": (str(device), True, w, waves),
            f"{name}, every document scored in full, --workers {w}": (str(device), False, w, waves),
            f"{name}, cascade, --workers {w}, one wave in flight": (str(device), True, w, 1),
            f"{name}, every document scored in full, --workers {w}, one wave in flight": (str(device), False, w, 1)}
    head = f"The example crawl, default profile, one process; {os.cpu_count()} CPU cores, torch {torch.__version__}"
    lines = [head, "", "| run | docs/s (wall) | ratio to CPU | outcomes that differ from the CPU run |", "|---|---|---|---|"]
    result: dict = {"device": name, "cpu_cores": os.cpu_count(), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, (dev, cascade, workers, in_flight)) in enumerate(runs.items()):
            hygiene.filter_run.IN_FLIGHT = in_flight
            run = timed(args.crawl, Path(tmp) / str(i), args.limit, "human", cascade, workers, dev)
            base = result["runs"].get("CPU, cascade (baseline)", run)
            differ = sum(run["outcome"].get(k) != v for k, v in base["outcome"].items())
            result["runs"][label] = {**run, "ratio": run["docs_per_s"] / base["docs_per_s"], "differ": differ}
            lines.append(f"| {label} | {run['docs_per_s']:.1f} | {run['docs_per_s'] / base['docs_per_s']:.1f}x | "
                         f"{differ} of {run['docs']} |")
            print(lines[-1], flush=True)
    hygiene.filter_run.IN_FLIGHT = waves
    for run in result["runs"].values():
        run.pop("outcome")
        run.pop("scored")
    if args.out:
        save(args.out, "device_filter", result, "\n".join(lines))


if __name__ == "__main__":
    main()
