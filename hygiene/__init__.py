"""hygiene: detect synthetic text and filter crawled corpora so training data stays human."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("collapse-hygiene")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

__all__ = ["__version__"]
