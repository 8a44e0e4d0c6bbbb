"""Recursive training of VAEs on their own samples (Shumailov et al. 2024, the VAE experiment).

Generation 0 trains a VAE on real digits; generation ``g`` trains a fresh VAE on a
set drawn from generation ``g - 1``'s VAE, of the size of the real training set,
composed by a ``Reuse`` mode. Every generation's samples are measured against
held-out real images in a feature space fixed once (``image_metrics``), and encoded
by the generation-0 encoder for the latent spread of the authors' notebook.

A run is resumable: each finished generation leaves its samples and metrics under
``OUT/state/run<r>/``, and a rerun with the same configuration skips them.
Randomness for generation ``g`` of run ``r`` comes from ``SeedSequence([seed, r, g])``,
so a resumed run gives the same numbers as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib
import numpy as np
from tqdm.auto import tqdm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from collapse_sim.image_data import DATASETS, ImageSet, load_images  # noqa: E402
from collapse_sim.image_metrics import (  # noqa: E402
    ImageFeatureConfig,
    FeatureSpace,
    class_coverage,
    frechet_distance,
    mean_pairwise_distance,
    pixel_variance,
    precision_recall,
)
from collapse_sim.metrics import SimulationResult, config_dict  # noqa: E402
from collapse_sim.plots import plot_metric_curves, save_figure  # noqa: E402
from collapse_sim.resume import check_resumable, read_record, reading, redo  # noqa: E402
from collapse_sim.reuse import Reuse  # noqa: E402
from collapse_sim.vae import (  # noqa: E402
    PIXELS,
    VAE,
    VAEConfig,
    encode_means,
    load_vae,
    sample_images,
    save_vae,
    train_vae,
)
from hygiene.atomic import atomic_open, write_json  # noqa: E402

EXPERIMENT = "vae"

#: The authors' notebook (convolutional VAE, 20-d latent, MNIST, 30 epochs a generation):
#: spread of the generation-0 encoder's latent means on generated samples, generations 0 and 5.
PAPER_LATENT_SPREAD = {"generation": [0, 5], "latent_spread": [0.674, 0.433]}

#: Epochs a generation: the notebook's 30 on MNIST (8,000 training images here, ~1,900
#: steps of 128); 100 on the 1,258 training digits, for a comparable ~1,000 steps.
DEFAULT_EPOCHS = {"digits": 100, "mnist": 30}

#: Samples per generation shown in the sample grid (run 0).
GRID_COLUMNS = 12

#: Metrics recorded per generation, in ``metrics.json`` order.
METRICS = (
    "frechet_distance",
    "precision",
    "recall",
    "class_entropy",
    "tail_class_share",
    "pairwise_distance",
    "pixel_variance",
    "latent_spread",
)

# Fields that may change between a run and its resumption (they only extend it).
_EXTENSIBLE = ("generations", "runs")


@dataclass(frozen=True)
class VAECollapseConfig:
    """One recursive-training experiment."""

    dataset: str = "digits"
    images: str | None = None  # idx files for ``mnist`` (default: the shared MNIST test set)
    labels: str | None = None
    generations: int = 20  # generations after generation 0
    runs: int = 1
    seed: int = 0
    reuse: Reuse = Reuse()
    pixels: str = "sample"  # "sample": Binomial pixel draws; "mean": decoder means
    held_out_fraction: float = 0.3
    k: int = 3  # Kynkaanniemi et al. 2019's neighbourhood size
    tail_classes: int = 3  # the "tail": the 3 rarest of 10 classes
    vae: VAEConfig | None = None  # None: VAEConfig() with the dataset's DEFAULT_EPOCHS
    features: ImageFeatureConfig = ImageFeatureConfig()

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.pixels not in PIXELS:
            raise ValueError(f"pixels must be one of {PIXELS}, got {self.pixels!r}")
        if self.generations < 0 or self.runs < 1:
            raise ValueError("need generations >= 0 and runs >= 1")
        if self.dataset != "mnist" and (self.images is not None or self.labels is not None):
            raise ValueError(f"images and labels files are for the mnist dataset; {self.dataset} is built in")
        if self.vae is None:
            object.__setattr__(self, "vae", VAEConfig(epochs=DEFAULT_EPOCHS[self.dataset]))


def config_for(dataset: str, **overrides: object) -> VAECollapseConfig:
    """A config for ``dataset``; ``overrides`` (``None`` ignored) set fields, VAE fields included."""
    vae_fields = {f.name for f in dataclasses.fields(VAEConfig)}
    given = {k: v for k, v in overrides.items() if v is not None}
    vae_given = {k: v for k, v in given.items() if k in vae_fields}
    rest = {k: v for k, v in given.items() if k not in vae_fields}
    vae = VAEConfig(**{"epochs": DEFAULT_EPOCHS.get(dataset, VAEConfig.epochs), **vae_given})
    return VAECollapseConfig(dataset=dataset, vae=vae, **rest)


def generation_metrics(
    samples: np.ndarray,
    held_out_features: np.ndarray,
    space: FeatureSpace,
    encoder0: VAE,
    n_classes: int,
    k: int,
    tail: int,
) -> dict[str, float]:
    """All per-generation metrics of one sample set against the held-out real features."""
    feats = space.embed(samples)
    precision, recall = precision_recall(held_out_features, feats, k)
    class_entropy, tail_share = class_coverage(space.predict(samples), n_classes, tail)
    return {
        "frechet_distance": frechet_distance(feats, held_out_features),
        "precision": precision,
        "recall": recall,
        "class_entropy": class_entropy,
        "tail_class_share": tail_share,
        "pairwise_distance": mean_pairwise_distance(samples),
        "pixel_variance": pixel_variance(samples),
        "latent_spread": float(encode_means(encoder0, samples).std(axis=0).mean()),
    }


def _check_config(state: Path, cfg: VAECollapseConfig) -> None:
    """Refuse to resume a state directory written by a different configuration."""
    now = config_dict(cfg)
    path = state / "config.json"
    check_resumable(read_record(path) if path.is_file() else None, now, path, _EXTENSIBLE)
    write_json(path, now)


#: Generation 0 is undertrained when its samples cover less than this share of what the real training set
#: covers (recall against held-out real images, the same measure): a VAE whose samples are blurred blobs.
UNDERTRAINED_RECALL = 0.5


def undertrained(result: SimulationResult) -> str | None:
    """A warning when generation 0's recall is below ``UNDERTRAINED_RECALL`` times the real training set's:
    collapse measured from such a start says more about training than about recursion. None when it is not."""
    gen0 = result.metrics["recall"]["mean"][0]
    real = result.summary["real_baseline"]["recall"]
    if gen0 >= UNDERTRAINED_RECALL * real:
        return None
    return (f"generation 0 is undertrained: its samples' recall {gen0:.3f} is below {UNDERTRAINED_RECALL:g} x the "
            f"real training set's {real:.3f}; train longer (--epochs) before reading collapse from later generations")


def _save_generation(run_dir: Path, g: int, samples: np.ndarray, metrics: dict[str, float]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, samples=samples)
    with atomic_open(run_dir / f"gen{g:03d}.npz", "wb") as fh:
        fh.write(buf.getvalue())
    write_json(run_dir / f"gen{g:03d}.json", metrics)  # written last: marks the generation done


def _load_generation(run_dir: Path, g: int) -> tuple[np.ndarray, dict[str, float]] | None:
    done = run_dir / f"gen{g:03d}.json"
    if not done.is_file():
        return None
    path = run_dir / f"gen{g:03d}.npz"
    with reading(path, redo(done)), np.load(path, allow_pickle=False) as z:
        samples = z["samples"]
    return samples, read_record(done, *METRICS)


def _load_vae0(run_dir: Path, data: ImageSet, cfg: VAECollapseConfig) -> VAE:
    """The generation-0 VAE a run saved (a damaged file: an error naming it)."""
    path = run_dir / "vae0.safetensors"
    with reading(path):
        return load_vae(path, data.n_pixels, cfg.vae)


def _seeds(seed: int, run: int, g: int) -> tuple[np.random.Generator, int, int]:
    """Data rng, VAE training seed and sampling seed of generation ``g`` of run ``run``."""
    ss = np.random.SeedSequence([seed, run, g])
    train_seed, sample_seed = (int(s) for s in ss.generate_state(2))
    return np.random.default_rng(ss), train_seed, sample_seed


@dataclass
class RunOutput:
    """What one run leaves besides its state files."""

    metrics: np.ndarray  # (generations + 1, len(METRICS))
    vae0: VAE  # the generation-0 VAE, whose encoder measures the latent spread
    first_samples: np.ndarray  # (generations + 1, GRID_COLUMNS, pixels), for the sample grid


def simulate_run(
    cfg: VAECollapseConfig,
    data: ImageSet,
    space: FeatureSpace,
    held_out_features: np.ndarray,
    run: int,
    state: Path,
    on_generation: Callable[[], None] = lambda: None,
) -> RunOutput:
    """Generations ``0..G`` of one run, resuming from the generations already in ``state``."""
    run_dir = state / f"run{run:02d}"
    run_dir.mkdir(parents=True, exist_ok=True)
    n = len(data.train)
    rows, heads, contributions = [], [], [data.train]
    samples = data.train
    vae0: VAE | None = None
    for g in range(cfg.generations + 1):
        rng, train_seed, sample_seed = _seeds(cfg.seed, run, g)
        previous = samples
        loaded = _load_generation(run_dir, g)
        if loaded is not None:
            samples, metrics = loaded
        else:
            train_set = data.train
            if g > 0:
                train_set = cfg.reuse.compose(rng, data.train, previous, history=contributions)
            vae = train_vae(train_set, data.levels, cfg.vae, seed=train_seed)
            if g == 0:
                save_vae(vae, run_dir / "vae0.safetensors")
                vae0 = vae
            samples = sample_images(vae, n, data.levels, cfg.pixels, seed=sample_seed)
            if vae0 is None:
                vae0 = _load_vae0(run_dir, data, cfg)
            metrics = generation_metrics(
                samples, held_out_features, space, vae0, data.n_classes, cfg.k, cfg.tail_classes
            )
            _save_generation(run_dir, g, samples, metrics)
        if g > 0 and cfg.reuse.mode == "accumulate":  # only accumulate keeps every generation's samples
            contributions.append(previous)
        rows.append([metrics[m] for m in METRICS])
        heads.append(samples[:GRID_COLUMNS])
        on_generation()
    if vae0 is None:
        vae0 = _load_vae0(run_dir, data, cfg)
    return RunOutput(np.asarray(rows), vae0, np.stack(heads))


def simulate(
    cfg: VAECollapseConfig, out_dir: str | Path, progress: bool = True, figures: bool = True
) -> SimulationResult:
    """Run (or resume) the experiment into ``out_dir``; write ``metrics.json`` (and, with
    ``figures``, ``metrics.png`` and ``samples.png``) and return the result."""
    start = time.perf_counter()
    out = Path(out_dir)
    state = out / "state"
    # the images first: a bad input fails before the run's configuration is written, so the corrected
    # command is not refused as another configuration
    data = load_images(cfg.dataset, cfg.held_out_fraction, cfg.seed, cfg.images, cfg.labels)
    state.mkdir(parents=True, exist_ok=True)
    _check_config(state, cfg)
    space = FeatureSpace.fit(data.train, data.train_labels, data.n_classes, seed=cfg.seed, cfg=cfg.features)
    held_out_features = space.embed(data.held_out)
    with tqdm(total=cfg.runs * (cfg.generations + 1), desc="vae generations", disable=not progress) as bar:
        runs = [
            simulate_run(cfg, data, space, held_out_features, run, state, lambda: bar.update())
            for run in range(cfg.runs)
        ]
    values = np.stack([r.metrics for r in runs])  # (runs, generations, metrics)
    result = SimulationResult(EXPERIMENT, config_dict(cfg), list(range(cfg.generations + 1)))
    for i, name in enumerate(METRICS):
        result.add(name, values[:, :, i])
    baseline = generation_metrics(
        data.train, held_out_features, space, runs[0].vae0, data.n_classes, cfg.k, cfg.tail_classes
    )
    result.summary = {
        "real_baseline": baseline,  # the real training set measured like a generation
        "feature_classifier_accuracy": float((space.predict(data.held_out) == data.held_out_labels).mean()),
        "n_train": len(data.train),
        "n_held_out": len(data.held_out),
        "latent_spread_anchor": _anchor(result),
        "generation0_recall_bound": UNDERTRAINED_RECALL * baseline["recall"],
        "seconds": time.perf_counter() - start,  # this invocation (a resumed run counts only its own work)
    }
    result.summary["undertrained"] = undertrained(result)
    result.save(out)
    if not figures:
        return result
    reference = {name: {"real vs real": [baseline[name]] * len(result.generations)} for name in METRICS}
    title = _title(cfg) + ("\ngeneration 0 undertrained: see summary.undertrained" if result.summary["undertrained"]
                           else "")
    plot_metric_curves(result, METRICS, out / "metrics.png", theory=reference, title=title)
    plot_sample_grid(data.held_out[:GRID_COLUMNS], runs[0].first_samples, data.shape, out / "samples.png", _title(cfg))
    return result


def _title(cfg: VAECollapseConfig) -> str:
    mode = cfg.reuse.mode + (f" {cfg.reuse.real_fraction:g} real" if cfg.reuse.mode == "mix" else "")
    pixels = "sampled pixels" if cfg.pixels == "sample" else "decoder means"
    return f"VAE on {cfg.dataset}, {mode}, {pixels}"


def plot_sample_grid(
    real: np.ndarray, generated: np.ndarray, shape: tuple[int, int], path: str | Path, title: str = ""
) -> Path:
    """Real images in the top row, then one row of samples per generation (``generated``: gens x columns x pixels)."""
    rows = np.concatenate([real[None, : generated.shape[1]], generated])  # (R, C, pixels)
    r, c = rows.shape[:2]
    h, w = shape
    tiles = np.zeros((r, c, h + 1, w + 1), dtype=np.float32)  # 1-pixel white gutter
    tiles[:, :, :h, :w] = rows.reshape(r, c, h, w)
    mosaic = tiles.transpose(0, 2, 1, 3).reshape(r * (h + 1), c * (w + 1))
    # Axes sized to the mosaic's aspect, with fixed margins for the labels and title.
    tile, left, right, top, bottom = 0.4, 0.75, 0.1, 0.35, 0.1  # inches
    aw, ah = c * tile, r * tile * (h + 1) / (w + 1)
    fig = plt.figure(figsize=(aw + left + right, ah + top + bottom))
    ax = fig.add_axes((left / fig.get_figwidth(), bottom / fig.get_figheight(),
                       aw / fig.get_figwidth(), ah / fig.get_figheight()))
    ax.imshow(mosaic, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_yticks((np.arange(r) + 0.5) * (h + 1), ["real", *(str(g) for g in range(r - 1))], fontsize=7)
    ax.set_xticks([])
    ax.set_ylabel("generation")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def _anchor(result: SimulationResult) -> dict[str, object]:
    """Our latent spread at the paper's generations beside the paper's 0.674 -> 0.433."""
    spread = result.metrics["latent_spread"]["mean"]
    ours = [spread[g] for g in PAPER_LATENT_SPREAD["generation"] if g < len(spread)]
    paper = PAPER_LATENT_SPREAD["latent_spread"]
    anchor: dict[str, object] = {"paper": dict(PAPER_LATENT_SPREAD), "paper_ratio": paper[1] / paper[0], "ours": ours}
    if len(ours) == 2:
        anchor["ours_ratio"] = ours[1] / ours[0]
    return anchor
