"""Where :mod:`collapse_sim.polluted` finds the detector protocol and loader; they live with the
synthetic-text stage, :mod:`hygiene.stages.synthetic`."""
from hygiene.stages.synthetic import Detector, load_default_detector

__all__ = ["Detector", "load_default_detector"]
