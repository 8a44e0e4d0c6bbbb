"""hygiene: detect synthetic text and filter crawled corpora so training data stays human."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("collapse-hygiene")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

__all__ = ["__version__", "filter_records", "filter_dataset"]

#: public names imported on first use, so ``import hygiene`` stays light
_LAZY = {"filter_records": "hygiene.filtering", "filter_dataset": "hygiene.filtering"}


def __getattr__(name: str):
    """Import the lazily exported functions (``hygiene.filter_records``, ``hygiene.filter_dataset``)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hygiene' has no attribute {name!r}")
