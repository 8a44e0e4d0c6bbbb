"""Cheaper CPU arithmetic for the detector's language models: int8, bfloat16 and ONNX Runtime against float32.

Peer APIs: ``torch.ao.quantization.quantize_dynamic`` (int8 weights, activations quantised
per batch, on ``nn.Linear``) and ``onnxruntime.InferenceSession`` (``CPUExecutionProvider``)
over a ``torch.onnx.export`` (dynamo) of the same model, in float32 and after
``onnxruntime.quantization.quantize_dynamic`` (int8 weights).

Variants of the shipped reference LM and machine LM (GPT-2, 10M parameters each):

- ``float32``: as ``hygiene.lm.load_lm`` loads them (the baseline, measured in the same run);
- ``torch int8, nn.Linear``: ``quantize_dynamic`` as is; in Hugging Face GPT-2 only the
  output head is an ``nn.Linear`` (the block projections are ``Conv1D``);
- ``torch int8, all projections``: every ``Conv1D`` rewritten as the equivalent ``nn.Linear``
  first, so every matrix multiply of the model runs in int8;
- ``onnxruntime float32`` and ``onnxruntime int8``: the exported graph;
- ``torch bfloat16 autocast``: the model run under ``torch.autocast("cpu", torch.bfloat16)`` (its
  matrix products in bfloat16, which pays on a CPU with bfloat16 instructions: AVX512-BF16, AMX),
  as ``--autocast bfloat16`` runs it (``LanguageModel.autocast``); ``..., float32 head``: the blocks
  so, the output head (and so every logit) in float32.

On held-out detect-chat texts (the recipe's ``eval`` groups, never trained or calibrated on;
half human, half machine), each variant is timed on the same texts as

- the reference LM's scores (``Scorer`` with the detector's scoring configuration), and
- the shipped detector's whole feature pass (``hygiene.load_detector()``, both LMs replaced);

and compared with float32: max abs difference of each per-text LM score, of P(machine), and
the share of the detector's decisions that agree. A variant is adopted only if the detector
pass is at least ``ADOPT_SPEEDUP`` times faster with scores and decisions within
``TOLERANCE``.

    .venv/bin/python benchmarks/quantization.py [--texts 200] [--rounds 2] [--threads N] [--variants ...] [--out DIR]

Writes ``quantization.json`` and ``quantization.md`` to ``--out`` (default ``benchmarks/results``).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import random
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch
from torch import nn

from hygiene.detector import Detector, load_detector
from hygiene.paths import detector_path
from hygiene.lm import LanguageModel, wrap_lm
from hygiene.recipe import chat_records, load_recipe
from hygiene.scoring import Scorer

from _results import save  # benchmarks/_results.py, beside this script

HERE = Path(__file__).resolve().parent
RECIPE = HERE.parent / "models" / "detector" / "recipe.yaml"
#: the speed-up over float32 (detector feature pass) that adoption needs
ADOPT_SPEEDUP = 1.5
#: adoption also needs the detector's decisions and P(machine), and the mean log-likelihood, this close to float32
TOLERANCE = {"decision_agreement_min": 0.995, "p_machine_max_abs_diff": 0.02, "ll_max_abs_diff": 0.01}
#: the variants measured against float32 (always measured, the baseline)
VARIANTS = ("torch int8, nn.Linear", "torch int8, all projections", "onnxruntime float32",
            "onnxruntime int8", "torch bfloat16 autocast", "torch bfloat16 autocast, float32 head")


def held_out_texts(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``n`` seeded texts of detect-chat's held-out groups, half human and half machine, and their labels."""
    rows = chat_records(load_recipe(RECIPE))["eval"]
    rng = random.Random(seed)
    picked = []
    for label, count in ((0, n // 2), (1, n - n // 2)):
        pool = [r for r in rows if r.label == label]
        picked += rng.sample(pool, min(count, len(pool)))
    return [r.text for r in picked], np.array([r.label for r in picked])


def linearized(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every transformers ``Conv1D`` replaced by the same map as an ``nn.Linear``.

    ``Conv1D`` computes ``x @ W + b`` with ``W`` of shape (in, out); ``nn.Linear`` stores ``W.T``.
    ``quantize_dynamic`` only knows ``nn.Linear``, so this is what lets it reach GPT-2's blocks.
    """
    from transformers.pytorch_utils import Conv1D

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                linear = nn.Linear(child.weight.shape[0], child.nf)
                linear.weight.data = child.weight.data.t().contiguous()
                linear.bias.data = child.bias.data.clone()
                setattr(parent, name, linear)
    return model


def torch_int8(lm: LanguageModel, all_projections: bool) -> LanguageModel:
    """``lm`` with its ``nn.Linear`` layers (with ``all_projections``, its Conv1D ones too) quantised to int8."""
    from torch.ao.quantization import quantize_dynamic

    model = linearized(lm.model) if all_projections else lm.model
    quantized = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return wrap_lm(quantized, lm.tokenizer, name=f"{lm.name} (torch int8)")


class Bf16HeadCausalLM(nn.Module):
    """A Hugging Face GPT-2 whose blocks run under CPU bfloat16 autocast and whose output head runs in
    float32, so every logit is a float32 product of the (rounded) last hidden state."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                output_hidden_states: bool = False) -> SimpleNamespace:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.model.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                         position_ids=position_ids, output_hidden_states=output_hidden_states,
                                         use_cache=False)
        hidden = tuple(h.float() for h in out.hidden_states) if output_hidden_states else None
        return SimpleNamespace(logits=self.model.lm_head(out.last_hidden_state.float()), hidden_states=hidden)


class _Export(nn.Module):
    """The model's logits and the hidden states at ``layers``, as a plain tuple for ONNX export."""

    def __init__(self, model: nn.Module, layers: tuple[int, ...]) -> None:
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         output_hidden_states=bool(self.layers), use_cache=False)
        return (out.logits, *(out.hidden_states[i] for i in self.layers))


class OrtCausalLM(nn.Module):
    """An ONNX Runtime session behind the call the ``Scorer`` makes of a Hugging Face causal LM."""

    def __init__(self, path: str, config: object, layers: tuple[int, ...]) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # what torch uses, for a fair comparison
        options.enable_mem_pattern = False  # the shapes change from batch to batch
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.config, self.layers = config, layers
        #: no weights live in torch; this gives ``LanguageModel.device`` a device to report
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                output_hidden_states: bool = False) -> SimpleNamespace:
        outputs = self.session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy(),
                                          "position_ids": position_ids.numpy()})
        hidden = dict(zip(self.layers, map(torch.from_numpy, outputs[1:])))
        return SimpleNamespace(logits=torch.from_numpy(outputs[0]), hidden_states=hidden)


def onnx_lm(lm: LanguageModel, layers: tuple[int, ...], folder: Path, int8: bool) -> LanguageModel:
    """``lm`` exported to ONNX (logits and the hidden states at ``layers``) and run by ONNX Runtime."""
    path = folder / f"{Path(lm.name).name}-{'-'.join(map(str, layers))}.onnx"
    if not path.exists():
        ids = torch.ones((2, 8), dtype=torch.long)
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=lm.max_length or 4096)
        shapes = ({0: batch, 1: seq},) * 3
        torch.onnx.export(_Export(lm.model, layers).eval(), (ids, torch.ones_like(ids), torch.arange(8).expand(2, 8)),
                          str(path), input_names=["input_ids", "attention_mask", "position_ids"],
                          dynamic_shapes=shapes, dynamo=True, verbose=False)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = path.with_suffix(".int8.onnx")
        if not quantized.exists():
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
        path = quantized
    return wrap_lm(OrtCausalLM(str(path), lm.model.config, layers), lm.tokenizer,
                   name=f"{lm.name} (onnxruntime{' int8' if int8 else ''})")


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """``fn()``'s result and its wall seconds."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def passes(det: Detector, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray, float, float]:
    """The reference LM's scores and the detector's features of ``texts``, and the wall seconds of each pass."""
    scorer = Scorer(det.featurizer.model(det.config.features.lm), config=det.config.features.scoring)
    lm_scores, lm_s = timed(lambda: scorer.score(texts))
    X, det_s = timed(lambda: det.features(texts))
    return lm_scores, X, lm_s, det_s


def measure(detectors: dict[str, Detector], texts: list[str], n_tokens: int, rounds: int) -> dict[str, dict]:
    """Every variant's tokens/s (best of ``rounds``, variants interleaved so that load drift hits them
    alike) and what its first round computed."""
    for det in detectors.values():  # warm-up: first-call allocations, ONNX Runtime's first runs
        passes(det, texts[:4])
    runs: dict[str, dict] = {name: {"lm_s": [], "detector_s": []} for name in detectors}
    for r in range(rounds):
        names = list(detectors)[r % len(detectors):] + list(detectors)[:r % len(detectors)]
        for name in names:
            lm_scores, X, lm_s, det_s = passes(detectors[name], texts)
            run = runs[name]
            run["lm_s"].append(lm_s)
            run["detector_s"].append(det_s)
            if "X" not in run:
                run.update(lm_scores=lm_scores, X=X, p_machine=detectors[name].predict_proba_features(X)[:, 1])
    for run in runs.values():
        run["lm_tokens_per_s"] = n_tokens / min(run["lm_s"])
        run["detector_tokens_per_s"] = n_tokens / min(run["detector_s"])
    return runs


def compare(base: dict, run: dict, det: Detector) -> dict:
    """How far a variant's scores and decisions are from float32's."""
    scores = {k: float(np.nanmax(np.abs(run["lm_scores"][k] - base["lm_scores"][k])))
              for k in base["lm_scores"] if not k.startswith("hidden") and k != "length"}
    hidden = [k for k in base["lm_scores"] if k.startswith("hidden")]
    flagged_base, flagged = base["p_machine"] > det.threshold_, run["p_machine"] > det.threshold_
    out = {
        "lm_speedup": run["lm_tokens_per_s"] / base["lm_tokens_per_s"],
        "detector_speedup": run["detector_tokens_per_s"] / base["detector_tokens_per_s"],
        "lm_score_max_abs_diff": scores,
        "hidden_state_max_abs_diff": float(max((np.nanmax(np.abs(run["lm_scores"][k] - base["lm_scores"][k]))
                                                for k in hidden), default=0.0)),
        "p_machine_max_abs_diff": float(np.max(np.abs(run["p_machine"] - base["p_machine"]))),
        "decision_agreement": float(np.mean(flagged == flagged_base)),
        "decisions_changed": int(np.sum(flagged != flagged_base)),
    }
    out["within_tolerance"] = (out["decision_agreement"] >= TOLERANCE["decision_agreement_min"]
                               and out["p_machine_max_abs_diff"] <= TOLERANCE["p_machine_max_abs_diff"]
                               and scores["ll"] <= TOLERANCE["ll_max_abs_diff"])
    out["adopt"] = out["within_tolerance"] and out["detector_speedup"] >= ADOPT_SPEEDUP
    return out


def markdown(result: dict) -> str:
    """The variants' speed and fidelity against float32, and the per-score differences, as markdown."""
    rows = result["variants"]
    lines = [f"{result['texts']} held-out detect-chat texts ({result['tokens']} tokens scored, at most "
             f"{result['max_tokens']} each), threads: {result['threads']}, best of {result['rounds']} "
             f"interleaved rounds; {result['machine']}, {result['load_average_end']} at the end.", "",
             "| variant | reference LM scores, tokens/s (x float32) | detector feature pass, tokens/s (x float32) "
             "| max abs diff, ll | max abs diff, P(machine) | decisions agreeing | adopt |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, r in rows.items():
        if name == "float32":
            lines.append(f"| float32 (baseline) | {r['lm_tokens_per_s']:,.0f} | {r['detector_tokens_per_s']:,.0f} "
                         "| - | - | - | - |")
            continue
        lines.append(f"| {name} | {r['lm_tokens_per_s']:,.0f} ({r['lm_speedup']:.2f}x) | "
                     f"{r['detector_tokens_per_s']:,.0f} ({r['detector_speedup']:.2f}x) | "
                     f"{r['lm_score_max_abs_diff']['ll']:.2g} | {r['p_machine_max_abs_diff']:.2g} | "
                     f"{r['decision_agreement']:.1%} ({r['decisions_changed']} changed) | "
                     f"{'yes' if r['adopt'] else 'no'} |")
    for name, why in result["not_measured"].items():
        lines.append(f"| {name}: not measured ({why}) | - | - | - | - | - | no |")
    others = [n for n in rows if n != "float32"]
    if others:
        names = list(rows[others[0]]["lm_score_max_abs_diff"])
        lines += ["", "Max abs difference from float32 of each per-text reference-LM score (and of the pooled "
                      "hidden states):", "",
                  "| score | " + " | ".join(others) + " |", "|---|" + "---:|" * len(others)]
        lines += [f"| {k} | " + " | ".join(f"{rows[n]['lm_score_max_abs_diff'][k]:.2g}" for n in others) + " |"
                  for k in names]
        lines.append("| hidden states | " + " | ".join(f"{rows[n]['hidden_state_max_abs_diff']:.2g}" for n in others)
                     + " |")
    lines += ["", f"Adopted only at >= {ADOPT_SPEEDUP}x on the detector pass with decisions agreeing >= "
                  f"{TOLERANCE['decision_agreement_min']:.1%}, P(machine) within {TOLERANCE['p_machine_max_abs_diff']} "
                  f"and ll within {TOLERANCE['ll_max_abs_diff']} nats/token."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2, help="timed passes of each variant (the best one counts)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for torch and ONNX Runtime alike [torch's default]; 1 on a machine shared with "
                         "other jobs, where threads that wait on each other distort the ratios")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="write quantization.json and .md here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    texts, labels = held_out_texts(args.texts)
    det = load_detector(backend="torch")  # the float32 baseline every variant is measured against
    f = det.config.features
    ref, machine = det.featurizer.model(f.lm), det.featurizer.model(f.contrast_lm)
    layers = det.featurizer.scorer.hidden_layers
    n_tokens = sum(len(x) - 1 for x in det.featurizer.scorer.tokenize(texts) if len(x) >= 2)
    versions = {p: importlib.metadata.version(p) for p in ("torch", "onnxruntime", "onnxscript")
                if importlib.util.find_spec(p)}
    result: dict = {"texts": len(texts), "machine_share": float(labels.mean()), "tokens": n_tokens,
                    "max_tokens": f.scoring.max_tokens, "threads": torch.get_num_threads(), "rounds": args.rounds,
                    "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
                    "detector": {"threshold": det.threshold_, "files_sha256": json.loads(
                        (detector_path() / "manifest.json").read_text(encoding="utf-8"))["files"]},
                    "versions": versions, "tolerance": TOLERANCE, "adopt_speedup": ADOPT_SPEEDUP,
                    "variants": {}, "not_measured": {}}
    detectors: dict[str, Detector] = {"float32": det}
    with tempfile.TemporaryDirectory() as tmp:
        builders: dict[str, Callable[[LanguageModel, tuple[int, ...]], LanguageModel]] = {
            "torch int8, nn.Linear": lambda lm, _: torch_int8(lm, all_projections=False),
            "torch int8, all projections": lambda lm, _: torch_int8(lm, all_projections=True),
            "onnxruntime float32": lambda lm, hidden: onnx_lm(lm, hidden, Path(tmp), int8=False),
            "onnxruntime int8": lambda lm, hidden: onnx_lm(lm, hidden, Path(tmp), int8=True),
            "torch bfloat16 autocast": lambda lm, _: dataclasses.replace(lm, autocast=torch.bfloat16),
            "torch bfloat16 autocast, float32 head": lambda lm, _: wrap_lm(
                Bf16HeadCausalLM(lm.model), lm.tokenizer, name=f"{lm.name} (bfloat16 blocks)"),
        }
        build_s: dict[str, float] = {}
        for name in args.variants:
            if name.startswith("onnxruntime") and not {"onnxruntime", "onnxscript"} <= set(versions):
                result["not_measured"][name] = "onnxruntime is not installed: pip install onnxruntime onnxscript"
                continue
            build = builders[name]
            models, build_s[name] = timed(lambda: {f.lm: build(ref, layers), f.contrast_lm: build(machine, ())})
            detectors[name] = load_detector(models=models)
        runs = measure(detectors, texts, n_tokens, args.rounds)
    result["load_average_end"] = round(os.getloadavg()[0], 1)
    for name, run in runs.items():
        summary = {k: v for k, v in run.items() if k in ("lm_tokens_per_s", "detector_tokens_per_s", "lm_s", "detector_s")}
        summary["build_s"] = build_s.get(name, 0.0)
        if name != "float32":
            summary.update(compare(runs["float32"], run, det))
        result["variants"][name] = summary
    text = markdown(result)
    path = save(args.out, "quantization", result, text)
    print(text)
    print(f"\n{path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
