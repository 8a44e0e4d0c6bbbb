"""Silencing the progress bars of the libraries we call (model loading, dataset saving), for ``--no-progress``
and ``--quiet``: our own bars take ``progress=False``."""
from __future__ import annotations

import os
import sys


def hide_library_bars() -> None:
    """No more bars from huggingface_hub, transformers or datasets in this process: the environment variables
    for those imported later, their switches for those imported already (the variables come too late there)."""
    os.environ.update(HF_HUB_DISABLE_PROGRESS_BARS="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    for module, hide in (("huggingface_hub.utils", "disable_progress_bars"),
                         ("transformers.utils.logging", "disable_progress_bar"),
                         ("datasets", "disable_progress_bars")):
        if module in sys.modules:
            getattr(sys.modules[module], hide)()
