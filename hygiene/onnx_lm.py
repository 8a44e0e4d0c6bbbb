"""A causal LM run by ONNX Runtime on the CPU, behind the call the scorer makes of a Hugging Face model.

On a CPU ONNX Runtime ran the detector's 10M-parameter GPT-2 models about 1.7x as fast as PyTorch with one
release pair (``benchmarks/quantization.py``) and 0.8x with a later one, with the same scores to 1e-6; the
``auto`` backend therefore times both once per model and versions (:func:`faster_than_torch`). The model is exported once with
``torch.onnx.export`` (logits and every hidden state) into a cache keyed by a hash of its weights and
config, so later loads skip the export. Needs ``pip install onnxruntime onnxscript`` (the ``onnx`` extra).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import io
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from hygiene.errors import UserInputError
from hygiene.lm import LanguageModel

#: what the export and the session need
REQUIRED = ("onnxruntime", "onnxscript")


def cache_dir() -> Path:
    """Where exported models are kept: ``$HYGIENE_CACHE/onnx``, else ``~/.cache/hygiene/onnx``."""
    root = os.environ.get("HYGIENE_CACHE") or Path.home() / ".cache" / "hygiene"
    return Path(root) / "onnx"


def _key(model: nn.Module) -> str:
    """A hash of the model's weights and config, and of the torch version that exports it."""
    h = hashlib.sha256(f"{torch.__version__}\0{model.config.to_json_string()}".encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode() + b"\0")
        h.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:24]


class _Export(nn.Module):
    """The model's logits and every hidden state, as a plain tuple for the export."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         output_hidden_states=True, use_cache=False)
        return (out.logits, *out.hidden_states)


def _export(model: nn.Module, path: Path, max_length: int | None) -> None:
    """Export ``model`` to ``path`` (dynamic batch and length), written to a temporary file and renamed."""
    ids = torch.ones((2, 8), dtype=torch.long)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=max_length or 4096)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    # the exporter reports its steps, shape notes and skipped operator sets on stdout, as warnings and in its
    # log: none is the user's concern
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            exporter_log.setLevel(logging.ERROR)
            torch.onnx.export(_Export(model).eval(), (ids, torch.ones_like(ids), torch.arange(8).expand(2, 8)), tmp,
                              input_names=["input_ids", "attention_mask", "position_ids"],
                              dynamic_shapes=({0: batch, 1: seq},) * 3, dynamo=True, external_data=False,
                              verbose=False)
        os.replace(tmp, path)
    finally:
        exporter_log.setLevel(level)
        Path(tmp).unlink(missing_ok=True)


class OnnxCausalLM(nn.Module):
    """An ONNX Runtime session that answers ``model(input_ids=, attention_mask=, position_ids=,
    output_hidden_states=)`` with ``.logits`` and ``.hidden_states`` as float32 CPU tensors."""

    def __init__(self, path: Path, config: object, threads: int) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_mem_pattern = False  # the shapes change from batch to batch
        # its threads sleep when a run ends instead of spinning: torch computes the statistics next, on the
        # same cores (spinning made two threads no faster than one)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.logits_output = self.session.get_outputs()[0].name
        self.config = config
        #: no weights live in torch; this gives ``LanguageModel.device`` a device to report
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                output_hidden_states: bool = False) -> SimpleNamespace:
        # the hidden states are copied out only when asked for (the logits alone: about a fifth less to copy)
        wanted = None if output_hidden_states else [self.logits_output]
        outputs = self.session.run(wanted, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy(),
                                            "position_ids": position_ids.numpy()})
        hidden = tuple(map(torch.from_numpy, outputs[1:])) if output_hidden_states else None
        return SimpleNamespace(logits=torch.from_numpy(outputs[0]), hidden_states=hidden)


def faster_than_torch(lm: LanguageModel, session: LanguageModel, tokens: int = 128, rows: int = 8) -> bool:
    """Whether ``session`` (``lm`` under ONNX Runtime) runs a forward pass faster than ``lm`` under torch here:
    timed once on a seeded batch (best of three each, hidden states included, as the scorer asks) and kept
    beside the exported model, per versions of torch, transformers and onnxruntime and thread count. Which one
    is faster turns with those versions (one release pair made ONNX Runtime 1.7x torch, a later one 0.8x)."""
    import json

    import onnxruntime
    import transformers

    from hygiene.atomic import write_json

    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "onnxruntime": onnxruntime.__version__, "threads": torch.get_num_threads()}
    record = cache_dir() / f"{_key(lm.model)}.speed.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved["versions"] == versions:
            return saved["onnxruntime_s"] < saved["torch_s"]
    length = min(tokens, lm.max_length or tokens)
    ids = torch.randint(0, lm.model.config.vocab_size, (rows, length), generator=torch.Generator().manual_seed(0))
    feed = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "position_ids": torch.arange(length).expand(rows, length).contiguous(), "output_hidden_states": True}
    best = {}
    with torch.inference_mode():
        for name, model in (("torch", lm.model), ("onnxruntime", session.model)):
            model(**feed)  # warm-up
            times = []
            for _ in range(3):
                start = time.perf_counter()
                model(**feed)
                times.append(time.perf_counter() - start)
            best[name] = min(times)
    write_json(record, {"versions": versions, "onnxruntime_s": best["onnxruntime"], "torch_s": best["torch"]})
    return best["onnxruntime"] < best["torch"]


def _missing() -> list[str]:
    """The packages of :data:`REQUIRED` that are not installed."""
    return [m for m in REQUIRED if importlib.util.find_spec(m) is None]


def available() -> bool:
    """Whether what the backend needs is installed."""
    return not _missing()


def check_available() -> None:
    """A one-line error when what the backend needs is not installed."""
    missing = _missing()
    if missing:
        raise UserInputError(f"the onnxruntime backend needs {' and '.join(missing)}: pip install {' '.join(missing)}")


def onnx_lm(lm: LanguageModel) -> LanguageModel:
    """``lm`` run by ONNX Runtime on the CPU (exported on first use, then from the cache); a one-line error
    when onnxruntime or onnxscript is missing, the model is not a float32 one on the CPU, or the export fails."""
    check_available()
    if lm.device.type != "cpu" or lm.autocast is not None:
        raise UserInputError("the onnxruntime backend runs float32 models on the CPU: pass --device cpu (where a GPU "
                             "is seen) and no --autocast")
    path = cache_dir() / f"{_key(lm.model)}.onnx"
    if not path.is_file():
        try:
            _export(lm.model, path, lm.max_length)
        except Exception as exc:  # noqa: BLE001 - any exporter failure: say so in one line, suggest torch
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise UserInputError(f"cannot export {lm.name} to ONNX ({type(exc).__name__}: {first}); "
                                 "use the torch backend") from None
    session = OnnxCausalLM(path, lm.model.config, torch.get_num_threads())
    return dataclasses.replace(lm, model=session, name=f"{lm.name} (onnxruntime)")
