import numpy as np
import pytest

from collapse_sim.reuse import Reuse


def test_modes_compose_expected_sizes_and_sources():
    rng = np.random.default_rng(0)
    real = np.zeros(100)
    syn = np.ones(50)
    assert (Reuse("replace").compose(rng, real, syn) == 1).all()
    mixed = Reuse("mix", 0.1).compose(rng, real, syn)
    assert len(mixed) == 50 and (mixed == 0).sum() == 5
    acc = Reuse("accumulate").compose(rng, real, syn, history=[real, syn])
    assert len(acc) == 200


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        Reuse("forget")
