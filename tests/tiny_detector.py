"""A tiny detector saved to a folder, for tests of the filter's synthetic stage as users run it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gopher_docs import make_doc
from tiny_lm import tiny_lms


def save_tiny_detector(tmp_path: Path) -> dict:
    """A detector (a tiny LM's scores, text statistics, a lexical model) saved in ``tmp_path / "det"``: the
    filter settings that load it from there, on the CPU."""
    from hygiene.classifier import ClassifierConfig
    from hygiene.detector import Detector, DetectorConfig
    from hygiene.features import FeatureConfig
    from hygiene.lexical import LexicalConfig
    from hygiene.scoring import ScoringConfig

    (lm,) = tiny_lms(1, seed=3)
    lm.model.save_pretrained(tmp_path / "lm")
    lm.tokenizer.save_pretrained(tmp_path / "lm")
    texts = [make_doc(i) + (" machine words" * (i % 2)) for i in range(40)]
    cfg = DetectorConfig(features=FeatureConfig(lm=str(tmp_path / "lm"), scoring=ScoringConfig()),
                         classifier=ClassifierConfig(kind="logistic"), lexical=LexicalConfig(n_features=2**10, folds=3))
    Detector(cfg).fit(texts, [i % 2 for i in range(40)], groups=np.arange(40) // 2).save(tmp_path / "det")
    return {"synthetic.enabled": True, "synthetic.model": str(tmp_path / "det"), "synthetic.device": "cpu",
            "batch_size": 3}
