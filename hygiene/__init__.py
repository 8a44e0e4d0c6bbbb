"""hygiene: detect synthetic text and filter crawled corpora so training data stays human."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("collapse-hygiene")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

#: public names imported on first use, so ``import hygiene`` stays light
_LAZY = {"FilterConfig": "hygiene.config", "load_config": "hygiene.config", "filter_records": "hygiene.filtering",
         "filter_dataset": "hygiene.filtering", "run_filter": "hygiene.filter_run",
         "load_detector": "hygiene.detector", "score_texts": "hygiene.scoring", "write_report": "hygiene.report"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    """Import the lazily exported names (``hygiene.FilterConfig``, ``hygiene.filter_records``, ...)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hygiene' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
