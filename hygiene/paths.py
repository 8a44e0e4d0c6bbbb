"""Where the shipped models and the default data live."""
from __future__ import annotations

import os
from pathlib import Path

#: The shipped models inside an installed package (absent in a checkout, where they are ``models/``).
_INSTALLED_MODELS = Path(__file__).resolve().parent / "_models"
#: Repository root when running from a checkout (editable install or source tree).
_REPO_ROOT = Path(__file__).resolve().parent.parent


def models_dir() -> Path:
    """Directory of the shipped default artefacts (``models/`` in the repo, ``hygiene._models`` installed)."""
    env = os.environ.get("COLLAPSE_HYGIENE_MODELS")
    if env:
        return Path(env)
    return _INSTALLED_MODELS if _INSTALLED_MODELS.is_dir() else _REPO_ROOT / "models"


def is_shipped(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies inside the shipped models' folder (:func:`models_dir`): what commands read, never
    rewrite."""
    return Path(path).resolve().is_relative_to(models_dir().resolve())


def local_or_shipped(name: str | os.PathLike) -> Path:
    """``name`` as a path where one exists here; else the shipped file or folder it names, given as a shipped
    name (``detector-fast``, ``detector/recipe.yaml``) or as the checkout's path to it (``models/detector``,
    which the docs show), so that both work from an installed package too; else ``name`` as given (a Hub id,
    or a path that will be reported missing)."""
    path = Path(name)
    if path.exists() or path.is_absolute() or not path.parts:
        return path
    inside = Path(*path.parts[1:]) if path.parts[0] == "models" and len(path.parts) > 1 else path
    shipped = models_dir() / inside
    return shipped if shipped.exists() else path


def detector_path(name: str | os.PathLike | None = None) -> Path:
    """A detector folder: ``name`` as :func:`local_or_shipped` finds it (``detector-fast``); without a name, the
    default detector (``models_dir()/detector``)."""
    return models_dir() / "detector" if name is None else local_or_shipped(name)


def data_dir() -> Path:
    """Default human-text data directory: ``$COLLAPSE_HYGIENE_DATA``, else ``../shared/data`` beside the checkout
    or beside the current folder, whichever exists (beside the current folder for an installed package)."""
    env = os.environ.get("COLLAPSE_HYGIENE_DATA")
    if env:
        return Path(env)
    beside = [Path.cwd().parent / "shared" / "data"]
    if not _INSTALLED_MODELS.is_dir():  # a checkout: its neighbour first
        beside.insert(0, _REPO_ROOT.parent / "shared" / "data")
    return next((d for d in beside if d.is_dir()), beside[0])


def data_hint(path: str | os.PathLike | None = None) -> str:
    """What a missing-data error adds when the default data directory is not there (and ``path``, if given, lies
    in it): where it was looked for and how to name another; else ""."""
    root = data_dir()
    if root.is_dir() or (path is not None and not Path(path).resolve().is_relative_to(root.resolve())):
        return ""
    return f" (no data directory at {root}: set COLLAPSE_HYGIENE_DATA to the folder of human text)"
