"""Where the shipped models and the default data live."""
from __future__ import annotations

import os
from pathlib import Path

#: Repository root when running from a checkout (editable install or source tree).
_REPO_ROOT = Path(__file__).resolve().parent.parent


def models_dir() -> Path:
    """Directory of the shipped default artefacts (``models/`` in the repo, ``hygiene._models`` installed)."""
    env = os.environ.get("COLLAPSE_HYGIENE_MODELS")
    if env:
        return Path(env)
    installed = Path(__file__).resolve().parent / "_models"
    return installed if installed.is_dir() else _REPO_ROOT / "models"


def local_or_shipped(name: str | os.PathLike) -> Path:
    """``name`` as a path where one exists here, else the shipped folder of that name (``models_dir()/name``)
    where there is one, else ``name`` as given (a Hub id, or a path that will be reported missing)."""
    path = Path(name)
    if path.exists():
        return path
    shipped = models_dir() / str(name)
    return shipped if shipped.is_dir() else path


def detector_path(name: str | os.PathLike | None = None) -> Path:
    """A detector folder: ``name`` as :func:`local_or_shipped` finds it (``detector-fast``); without a name, the
    default detector (``models_dir()/detector``)."""
    return models_dir() / "detector" if name is None else local_or_shipped(name)


def data_dir() -> Path:
    """Default human-text data directory: ``$COLLAPSE_HYGIENE_DATA`` or ``../shared/data`` beside the repo."""
    env = os.environ.get("COLLAPSE_HYGIENE_DATA")
    if env:
        return Path(env)
    for base in (_REPO_ROOT, Path.cwd()):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return _REPO_ROOT.parent / "shared" / "data"
