"""Load a Hugging Face causal language model and its tokenizer for scoring (never training).

A model is named by a local directory, a name inside ``models_dir()`` (the shipped
``reference-lm`` is the default) or a Hub id. Remote code stays off unless the
caller asks for it; the model is put in eval mode on the chosen device and dtype
(bfloat16 by default on CUDA, float32 on CPU where bf16 matmuls are slow).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.activations import NewGELUActivation

from hygiene.errors import UserInputError, one_line
from hygiene.paths import local_or_shipped, models_dir

#: Name of the shipped reference LM inside ``models_dir()``.
DEFAULT_LM = "reference-lm"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: the torch dtype of each autocast name of hygiene.config.AUTOCASTS (measured: benchmarks/quantization.py)
_AUTOCAST = {"bfloat16": torch.bfloat16}


@dataclass
class LanguageModel:
    """A causal LM ready for scoring: model in eval mode, tokenizer with a pad token, where it came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    #: run forward passes under ``torch.autocast`` in this dtype (None: in the weights' dtype)
    autocast: torch.dtype | None = None

    @property
    def device(self) -> torch.device:
        """The device the model's weights live on."""
        return next(self.model.parameters()).device

    @property
    def max_length(self) -> int | None:
        """The longest input the model accepts (its position table), or None if unbounded."""
        cfg = self.model.config
        for attr in ("n_positions", "max_position_embeddings"):
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return None


def resolve_model(name_or_path: str | os.PathLike | None = None) -> str:
    """Where to load a model from: an existing path, a folder of ``models_dir()``, else a Hub id."""
    if name_or_path is None:
        name_or_path = models_dir() / DEFAULT_LM
        if not Path(name_or_path).is_dir():
            raise FileNotFoundError(
                f"no default reference LM at {name_or_path}; pass a model id or path"
            )
        return str(name_or_path)
    return str(local_or_shipped(name_or_path))


def model_reference(name: str | None) -> str | None:
    """The name a detector records for a model: a folder named by a relative path made absolute (the
    detector then loads from any working directory); a shipped name (``reference-lm``) or Hub id as it is."""
    if name is None:
        return None
    path = Path(name)
    return str(path.resolve()) if not path.is_absolute() and path.exists() else str(name)


#: files that define what a model folder computes: weights, architecture and vocabulary
_FINGERPRINT_FILES = ("*.safetensors", "*.bin", "config.json", "tokenizer.json", "vocab.json", "merges.txt")


def model_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 over a model folder's weights, config and tokenizer files (names and contents, sorted by name)."""
    root = Path(path)
    files = sorted({f for pattern in _FINGERPRINT_FILES for f in root.glob(pattern) if f.is_file()})
    if not files:
        raise FileNotFoundError(f"{root} holds no model files")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def select_device(device: str | torch.device | None = None) -> torch.device:
    """The requested device, or CUDA when available, else CPU; a device this machine lacks is a one-line error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserInputError(f"unknown torch device {device!r} (e.g. cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r}: this torch sees no CUDA GPU (use cpu)")
    return dev


def select_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The requested dtype, or bfloat16 on CUDA (what Binoculars and Fast-DetectGPT run in) and float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {sorted(_DTYPES)} or 'auto'")
    return _DTYPES[dtype]


def autocast_dtype(name: str | None) -> torch.dtype | None:
    """The dtype of ``torch.autocast`` named ``name`` (None: no autocast)."""
    if name is None:
        return None
    if name not in _AUTOCAST:
        raise ValueError(f"unknown autocast dtype {name!r}; choose from {sorted(_AUTOCAST)}")
    return _AUTOCAST[name]


def load_lm(
    name_or_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    autocast: str | None = None,
    backend: str = "torch",
) -> LanguageModel:
    """Load a causal LM and its tokenizer by Hub id or path (default: the shipped reference LM); ``autocast``
    (``"bfloat16"``) runs its forward passes under autocast, float32 weights kept; ``backend="onnxruntime"``
    runs them with ONNX Runtime on the CPU (:mod:`hygiene.onnx_lm`), and ``"auto"`` does so wherever it can
    (:func:`resolve_backend`; where the export fails, it warns in one line and keeps torch)."""
    source = resolve_model(name_or_path)
    dev = select_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=select_dtype(dtype, dev), trust_remote_code=trust_remote_code
        )
    except OSError as exc:  # not a model folder here, and not on a Hub this machine reaches
        raise UserInputError(f"cannot load the language model {str(name_or_path)!r}: {one_line(exc)}") from None
    lm = wrap_lm(model, tokenizer, name=source, device=dev, autocast=autocast_dtype(autocast))
    if resolve_backend(backend, lm) == "onnxruntime":
        from hygiene.onnx_lm import faster_than_torch, onnx_lm  # imports this module

        try:
            session = onnx_lm(lm)
            if backend != "auto" or faster_than_torch(lm, session):
                return session
        except Exception as exc:  # noqa: BLE001 - "auto" never fails for want of the faster path: torch it is
            if backend != "auto":
                raise
            logging.getLogger(__name__).warning("%s: scoring %s with torch", one_line(exc), source)
    return lm


def resolve_backend(backend: str, lm: LanguageModel) -> str:
    """What may run ``lm``: ``"auto"`` is onnxruntime for a float32 model on the CPU without autocast where
    onnxruntime and onnxscript are installed (the same scores; :func:`load_lm` then keeps it only where it times
    faster than torch, :func:`hygiene.onnx_lm.faster_than_torch`), else torch; any other name is itself."""
    if backend != "auto":
        return backend
    from hygiene.onnx_lm import available  # imports this module

    plain = lm.device.type == "cpu" and lm.autocast is None and lm.model.dtype == torch.float32
    return "onnxruntime" if plain and available() else "torch"


def wrap_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    name: str = "in-memory",
    device: str | torch.device | None = None,
    autocast: torch.dtype | None = None,
) -> LanguageModel:
    """Prepare an already-built model and tokenizer for scoring (eval mode, fused GELU, device, pad token)."""
    if tokenizer.pad_token_id is None:
        # padding positions are masked out of every computation, so any id will do
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    model.eval()
    _fuse_gelu(model)
    if device is not None:
        model.to(select_device(device))
    return LanguageModel(model=model, tokenizer=tokenizer, name=name, autocast=autocast)


def _fuse_gelu(model: torch.nn.Module) -> None:
    """Run GPT-2's tanh-approximated GELU (``gelu_new``) as torch's one fused kernel of the same function.

    transformers computes ``gelu_new`` as five elementwise tensor operations, about a tenth of the
    detector's CPU forward pass; ``nn.GELU(approximate="tanh")`` is the same formula in one pass
    (outputs equal to float rounding).
    """
    for module in list(model.modules()):
        for child_name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, child_name, torch.nn.GELU(approximate="tanh"))


def check_shared_tokenizer(a: LanguageModel, b: LanguageModel) -> None:
    """Raise ValueError unless two models tokenize with the same vocabulary (needed to compare their distributions)."""
    if a.tokenizer is b.tokenizer:
        return
    if a.tokenizer.get_vocab() != b.tokenizer.get_vocab():
        raise ValueError(f"{a.name} and {b.name} do not share a tokenizer; their token distributions cannot be compared")
