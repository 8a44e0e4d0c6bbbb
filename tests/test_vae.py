"""The VAE collapse simulation: idx reader, image metrics against theory, recursive training."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from collapse_sim.cli import main
from collapse_sim.idx import IdxError, read_idx
from collapse_sim.image_metrics import (
    ImageFeatureConfig,
    class_coverage,
    frechet_distance,
    mean_pairwise_distance,
    pixel_variance,
    precision_recall,
)
from collapse_sim.reuse import Reuse
from collapse_sim.vae import load_vae, sample_images, save_vae, train_vae
from collapse_sim.vae_collapse import METRICS, config_for, simulate

# Small enough for a few seconds a generation, good enough that generation 0 covers the digits.
TINY = dict(generations=3, hidden=128, epochs=60, features=ImageFeatureConfig(hidden=64, epochs=20))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The small MLPs run fastest on one thread (as the CLI's default)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _idx_bytes(a: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def test_idx_round_trip_plain_and_gzip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    counts = np.array([-5, 70000], dtype=np.int32)
    (tmp_path / "a.idx").write_bytes(_idx_bytes(images, 0x08))
    (tmp_path / "b.idx.gz").write_bytes(gzip.compress(_idx_bytes(counts, 0x0C)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "b.idx.gz"), counts)


def test_idx_refuses_bad_files_naming_them(tmp_path):
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(IdxError, match="bad.idx.*magic"):
        read_idx(bad)
    short = tmp_path / "short.idx"
    short.write_bytes(_idx_bytes(np.zeros((4, 4), np.uint8), 0x08)[:-3])
    with pytest.raises(IdxError, match="short.idx"):
        read_idx(short)


def test_shared_mnist_reads_as_10000_digits(shared_data):
    labels = read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))


def test_frechet_distance_matches_gaussian_theory():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # Two samples of one distribution: near 0.
    assert frechet_distance(a, rng.normal(size=(20000, 4))) < 0.01
    # N(0, I) vs N(mu, 4I) in d = 4: |mu|^2 + d (1 + 4 - 2 * 2) = 1 + 4.
    b = 2.0 * rng.normal(size=(20000, 4)) + np.array([1.0, 0.0, 0.0, 0.0])
    assert frechet_distance(a, b) == pytest.approx(5.0, abs=0.15)


def test_precision_recall_on_a_known_grid():
    grid = np.stack(np.meshgrid(np.arange(10), np.arange(10)), -1).reshape(-1, 2).astype(float)
    # The left half of the grid: every generated point is real (precision 1); k = 3 balls
    # of radius 1 around it reach one column further, so 6 of 10 columns are covered.
    assert precision_recall(grid, grid[grid[:, 0] < 5], k=3) == (1.0, 0.6)
    assert precision_recall(grid, grid + 100.0, k=3) == (0.0, 0.0)


def test_precision_recall_near_one_for_real_vs_real():
    rng = np.random.default_rng(1)
    precision, recall = precision_recall(rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2)), k=3)
    assert precision > 0.95 and recall > 0.95


def test_class_coverage_and_spread():
    assert class_coverage(np.repeat(np.arange(10), 7), 10) == pytest.approx((np.log2(10), 0.3))
    assert class_coverage(np.full(50, 4), 10) == (0.0, 0.0)
    x = np.array([[0.0, 0.0], [3.0, 4.0]])
    assert mean_pairwise_distance(x) == 5.0
    assert pixel_variance(x) == pytest.approx((2.25 + 4.0) / 2)


def test_vae_is_deterministic_and_samples_live_on_the_pixel_grid(tmp_path):
    x = (np.random.default_rng(0).integers(0, 17, size=(200, 16)) / 16).astype(np.float32)
    cfg = config_for("digits", epochs=2, hidden=32, latent_dim=4).vae
    a, b = train_vae(x, 16, cfg, seed=3), train_vae(x, 16, cfg, seed=3)
    s = sample_images(a, 50, 16, "sample", seed=5)
    np.testing.assert_array_equal(s, sample_images(b, 50, 16, "sample", seed=5))
    np.testing.assert_allclose(s * 16, np.round(s * 16), atol=1e-5)
    means = sample_images(a, 50, 16, "mean", seed=5)
    assert ((means > 0) & (means < 1)).all() and len(np.unique(means)) > 16
    save_vae(a, tmp_path / "vae.safetensors")
    again = load_vae(tmp_path / "vae.safetensors", 16, cfg)
    np.testing.assert_array_equal(sample_images(again, 50, 16, "mean", seed=5), means)
    with pytest.raises(ValueError, match="weights of another architecture, not a VAE of 25 pixels"):
        load_vae(tmp_path / "vae.safetensors", 25, cfg)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """The tiny experiment under ``replace`` and ``mix 0.1``, one run each, same seed."""
    out = {}
    for mode in ("replace", "mix"):
        d = tmp_path_factory.mktemp(mode)
        result = simulate(config_for("digits", reuse=Reuse(mode, 0.1), **TINY), d, progress=False,
                          figures=mode == "replace")
        out[mode] = (result.to_dict(), d)
    return out


@pytest.mark.slow
def test_replace_loses_recall_and_classes_and_mix_loses_less(runs):
    rep, mix = runs["replace"][0]["metrics"], runs["mix"][0]["metrics"]
    recall, entropy = rep["recall"]["mean"], rep["class_entropy"]["mean"]
    assert recall[0] > 0.5  # generation 0 covers the real digits
    assert recall[-1] < 0.5 * recall[0]
    assert entropy[-1] < entropy[0] - 0.3
    assert mix["recall"]["mean"][-1] > recall[-1] + 0.05
    assert mix["class_entropy"]["mean"][-1] > entropy[-1] + 0.2
    # Generation 0 is the same model in both modes.
    assert mix["recall"]["mean"][0] == recall[0]


@pytest.mark.slow
def test_outputs_follow_the_shared_schema(runs):
    result, d = runs["replace"]
    on_disk = json.loads((d / "metrics.json").read_text())
    assert on_disk["experiment"] == "vae" and on_disk["generations"] == [0, 1, 2, 3]
    assert set(on_disk["metrics"]) == set(METRICS)
    assert all(len(v["mean"]) == 4 for v in on_disk["metrics"].values())
    baseline = on_disk["summary"]["real_baseline"]
    assert baseline["frechet_distance"] < on_disk["metrics"]["frechet_distance"]["mean"][0]
    assert (d / "metrics.png").stat().st_size > 0 and (d / "samples.png").stat().st_size > 0


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_numbers(runs, tmp_path):
    result, d = runs["replace"]
    shutil.copytree(d / "state", tmp_path / "state")
    for ext in ("json", "npz"):  # as if stopped after generation 2
        (tmp_path / "state" / "run00" / f"gen003.{ext}").unlink()
    resumed = simulate(config_for("digits", **TINY), tmp_path, progress=False, figures=False)
    assert resumed.metrics == result["metrics"]


@pytest.mark.slow
def test_resuming_with_another_config_is_refused(runs):
    _, d = runs["replace"]
    with pytest.raises(ValueError, match=r"config\.json.*seed"):
        simulate(config_for("digits", seed=1, **TINY), d, progress=False)


@pytest.mark.slow
def test_cli_runs_and_reports_bad_idx_in_one_line(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["vae", "--generations", "0", "--epochs", "1", "--out", str(tmp_path / "ok"), "--quiet"])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "ok" / "metrics.json").read_text())["generations"] == [0]
    bad = tmp_path / "images.gz"
    bad.write_bytes(b"not gzip at all")
    res = runner.invoke(main, ["vae", "--dataset", "mnist", "--images", str(bad), "--labels", str(bad),
                               "--out", str(tmp_path / "bad")])
    assert res.exit_code == 1
    assert "images.gz" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "bad" / "state" / "config.json").exists()  # the corrected command is not refused
