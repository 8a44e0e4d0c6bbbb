"""collapse_sim: reproduce model collapse and write labelled generational corpora."""
from hygiene import __version__

__all__ = ["__version__"]
