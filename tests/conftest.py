"""Shared test setup: offline hubs, a cache of exported models of the test run's own, the shared data
directory."""
from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# models exported for the onnxruntime backend (the default on the CPU where it is installed) go here, never
# into the user's cache; the subprocesses the tests start inherit it
os.environ["HYGIENE_CACHE"] = tempfile.mkdtemp(prefix="hygiene-test-cache-")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from hygiene.paths import data_dir  # noqa: E402


@pytest.fixture(autouse=True)
def _progress_bar_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command run with --quiet sets these for the libraries it imports later; each test starts without."""
    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def _ray_session():
    """One local Ray (2 CPUs) for the whole test session, unless one is running."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture
def ray_cluster(_ray_session, request: pytest.FixtureRequest) -> None:
    """The session's Ray, with the calling test module pickled by value, so its fakes reach the workers."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(request.module)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only shared data directory; tests that need it skip when absent."""
    d = data_dir()
    if not d.is_dir():
        pytest.skip(f"shared data not found at {d}")
    return d
