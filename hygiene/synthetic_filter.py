"""The detector protocol and loader used by the synthetic-text stage (:mod:`hygiene.stages.synthetic`)."""
from hygiene.stages.synthetic import Detector, SyntheticFilter, load_default_detector

__all__ = ["Detector", "SyntheticFilter", "load_default_detector"]
