"""The onnxruntime backend: the same scores as PyTorch, exported once into the cache, clear errors."""
from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import hygiene.onnx_lm as onnx_lm_module  # noqa: E402
from hygiene.errors import UserInputError  # noqa: E402
from hygiene.onnx_lm import onnx_lm  # noqa: E402
from hygiene.scoring import ScoringConfig, score_texts  # noqa: E402
from tiny_lm import tiny_lms  # noqa: E402

TEXTS = ["The quick brown fox jumps over the lazy dog, again and again.", "Collapse: the tails go first.",
         "A model trained on its own samples forgets the tails of the distribution it came from.", "ok"]


@pytest.mark.slow
def test_onnxruntime_scores_as_torch_does_and_exports_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYGIENE_CACHE", str(tmp_path))
    lm, observer = tiny_lms(2, seed=5)
    config = ScoringConfig(token_stats=True, hidden_layers=(0.5, 1.0), batch_size=2)
    ref = score_texts(TEXTS, lm, observer=lm, performer=observer, config=config)
    fast = onnx_lm(lm)
    assert list((tmp_path / "onnx").glob("*.onnx")) and fast.device.type == "cpu"
    got = score_texts(TEXTS, fast, observer=fast, performer=onnx_lm(observer), config=config)
    assert set(got) == set(ref)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-4, err_msg=name)

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_lm_module, "_export", no_export)
    onnx_lm(lm)  # from the cache
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2


def test_onnxruntime_refuses_what_it_cannot_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    monkeypatch.setenv("HYGIENE_CACHE", str(tmp_path))
    (lm,) = tiny_lms(1, seed=6)
    with pytest.raises(UserInputError, match="float32 models on the CPU"):
        onnx_lm(dataclasses.replace(lm, autocast=torch.bfloat16))

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator\nsecond line")

    monkeypatch.setattr(onnx_lm_module, "_export", broken)
    with pytest.raises(UserInputError, match=r"cannot export .* \(RuntimeError: unsupported operator\); use the torch"):
        onnx_lm(lm)
    monkeypatch.setattr(onnx_lm_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserInputError, match="needs onnxruntime and onnxscript"):
        onnx_lm(lm)


def test_the_filter_with_the_onnxruntime_backend_decides_as_with_torch(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from gopher_docs import make_doc
    from hygiene.config import load_config
    from hygiene.filter_run import run_filter
    from hygiene.onnx_lm import OnnxCausalLM
    from hygiene.stages.synthetic import SyntheticFilter
    from tiny_detector import save_tiny_detector

    monkeypatch.setenv("HYGIENE_CACHE", str(tmp_path / "cache"))
    settings = {**save_tiny_detector(tmp_path), "synthetic.threshold": 0.5, "output.annotate": True,
                "synthetic.cascade": False}
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": make_doc(100 + i) + " machine words" * (i % 2)}) + "\n"
                           for i in range(12)))
    torch_run = run_filter([src], tmp_path / "torch", load_config(overrides=settings), progress=False)
    onnx_config = load_config(overrides={**settings, "synthetic.backend": "onnxruntime"})
    onnx_run = run_filter([src], tmp_path / "onnx", onnx_config, progress=False)
    stage = SyntheticFilter(onnx_config.synthetic)
    f = stage.detector.config.features
    assert isinstance(stage.detector.featurizer.model(f.lm).model, OnnxCausalLM)
    assert onnx_run["by_stage"] == torch_run["by_stage"] and onnx_run["kept"] == torch_run["kept"]
    assert 0 < torch_run["by_stage"]["synthetic"]["machine_generated"] < 12
    for name in ("kept", "rejected"):
        torch_rows = [json.loads(x) for x in (tmp_path / "torch" / f"{name}.jsonl").read_text().splitlines()]
        onnx_rows = [json.loads(x) for x in (tmp_path / "onnx" / f"{name}.jsonl").read_text().splitlines()]
        assert [r["text"] for r in onnx_rows] == [r["text"] for r in torch_rows]
        p_torch = [r["hygiene"]["scores"].get("synthetic_p") for r in torch_rows]
        p_onnx = [r["hygiene"]["scores"].get("synthetic_p") for r in onnx_rows]
        np.testing.assert_allclose(np.array(p_onnx, dtype=float), np.array(p_torch, dtype=float), atol=1e-5)


def test_auto_runs_float32_cpu_models_with_onnxruntime_and_falls_back_to_torch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import dataclasses

    from hygiene.lm import load_lm, resolve_backend
    from hygiene.onnx_lm import OnnxCausalLM

    monkeypatch.setenv("HYGIENE_CACHE", str(tmp_path / "cache"))
    (lm,) = tiny_lms(1, seed=7)
    assert resolve_backend("auto", lm) == "onnxruntime" and resolve_backend("torch", lm) == "torch"
    assert resolve_backend("auto", dataclasses.replace(lm, autocast=torch.bfloat16)) == "torch"
    lm.model.save_pretrained(tmp_path / "lm")
    lm.tokenizer.save_pretrained(tmp_path / "lm")
    # auto keeps ONNX Runtime only where it times faster than torch: measured once, kept beside the export
    first = load_lm(tmp_path / "lm", device="cpu", backend="auto")
    (record,) = (tmp_path / "cache" / "onnx").glob("*.speed.json")
    timed = json.loads(record.read_text())
    assert isinstance(first.model, OnnxCausalLM) == (timed["onnxruntime_s"] < timed["torch_s"])
    for onnx_s, torch_s in ((1.0, 2.0), (2.0, 1.0)):  # the record decides, until the versions change
        record.write_text(json.dumps({**timed, "onnxruntime_s": onnx_s, "torch_s": torch_s}))
        assert isinstance(load_lm(tmp_path / "lm", device="cpu", backend="auto").model, OnnxCausalLM) == (onnx_s < torch_s)
    record.write_text(json.dumps({**timed, "versions": {**timed["versions"], "onnxruntime": "0.0"},
                                  "onnxruntime_s": 1.0, "torch_s": 2.0}))
    load_lm(tmp_path / "lm", device="cpu", backend="auto")  # another version: timed again
    assert json.loads(record.read_text())["versions"] == timed["versions"]
    record.write_text(json.dumps({**timed, "onnxruntime_s": 1.0, "torch_s": 2.0}))  # onnx from here on
    assert not isinstance(load_lm(tmp_path / "lm", device="cpu").model, OnnxCausalLM)  # the library's default: torch

    def no_session(*args, **kwargs):
        raise RuntimeError("the session cannot start\nsecond line")

    with monkeypatch.context() as m, caplog.at_level("WARNING", logger="hygiene.lm"):
        m.setattr(onnx_lm_module, "OnnxCausalLM", no_session)
        assert not isinstance(load_lm(tmp_path / "lm", device="cpu", backend="auto").model, OnnxCausalLM)
    assert "the session cannot start: scoring" in caplog.text and "second line" not in caplog.text
    caplog.clear()

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnx_lm_module, "_export", broken)
    monkeypatch.setenv("HYGIENE_CACHE", str(tmp_path / "empty-cache"))
    with caplog.at_level("WARNING", logger="hygiene.lm"):
        fallback = load_lm(tmp_path / "lm", device="cpu", backend="auto")
    assert not isinstance(fallback.model, OnnxCausalLM)
    assert "cannot export" in caplog.text and "with torch" in caplog.text
    with pytest.raises(UserInputError, match="cannot export"):  # asked for by name: an error, not a fallback
        load_lm(tmp_path / "lm", device="cpu", backend="onnxruntime")
    monkeypatch.setattr(onnx_lm_module.importlib.util, "find_spec", lambda name: None)
    assert resolve_backend("auto", lm) == "torch"


def test_a_detector_runs_its_models_with_onnxruntime_by_default_on_the_cpu(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from hygiene.config import load_config
    from hygiene.onnx_lm import OnnxCausalLM
    from hygiene.stages.synthetic import SyntheticFilter
    from tiny_detector import save_tiny_detector

    monkeypatch.setenv("HYGIENE_CACHE", str(tmp_path / "cache"))
    config = load_config(overrides={**save_tiny_detector(tmp_path), "synthetic.device": "cpu"})
    assert config.synthetic.backend == "auto"
    detector = SyntheticFilter(config.synthetic).detector
    assert isinstance(detector.featurizer.model(detector.config.features.lm).model, OnnxCausalLM)
