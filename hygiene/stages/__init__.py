"""The filter's stages, one per file, and :func:`load_stage` for a user's own.

Built in, in pipeline order: :class:`Normalize`, :class:`RejectEmpty`,
:class:`ExactDedup`, :class:`QualityFilter`, :class:`NearDedup`, then the user's
stages (``stages`` in the config, ``--stage``), then :class:`SyntheticFilter`.
A stage of your own subclasses :class:`Filter` (one question per document) or
:class:`Stage` (any batch step)::

    class NoShouting(Filter):
        name = "shouting"
        columns = {"upper_share": float}

        def __init__(self, max_share: float = 0.5):
            self.max_share = max_share

        def score(self, texts):
            share = [sum(c.isupper() for c in t) / max(len(t), 1) for t in texts]
            return ["too_loud" if s > self.max_share else None for s in share], {"upper_share": share}

and runs with ``hygiene filter IN --out OUT --stage my_stages:NoShouting`` (a module
on the path, or ``path/to/my_stages.py:NoShouting``) on either engine.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from hygiene.config import StageSpec
from hygiene.errors import UserInputError
from hygiene.stages.base import Filter, KeyedDedup, Stage
from hygiene.stages.empty import RejectEmpty
from hygiene.stages.exact_dedup import ExactDedup
from hygiene.stages.near_dedup import NearDedup
from hygiene.stages.normalize import Normalize
from hygiene.stages.quality import QualityFilter
from hygiene.stages.synthetic import Detector, SyntheticFilter, load_default_detector

__all__ = ["Stage", "Filter", "KeyedDedup", "Normalize", "RejectEmpty", "ExactDedup", "QualityFilter", "NearDedup",
           "SyntheticFilter", "Detector", "load_default_detector", "load_stage"]


def _module(where: str) -> object:
    """Import a module by name, or from a ``.py`` file (registered under its file stem)."""
    if not where.endswith(".py"):
        return importlib.import_module(where)
    path = Path(where).resolve()
    name = f"hygiene_user_stages.{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None or not path.is_file():
            raise FileNotFoundError(path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_stage(spec: StageSpec) -> Stage:
    """The stage ``spec.path`` (``module:Class`` or ``file.py:Class``) built with ``spec.params``."""
    where, _, cls_name = spec.path.rpartition(":")
    if not where or not cls_name:
        raise UserInputError(f"bad stage {spec.path!r}: expected module:Class or path/to/file.py:Class")
    try:
        cls = getattr(_module(where), cls_name)
    except ModuleNotFoundError as exc:
        hint = (" (a module must be importable: installed, or its folder on PYTHONPATH; or name the file, "
                "path/to/file.py:Class)" if exc.name and where.startswith(exc.name) else "")
        raise UserInputError(f"cannot load stage {spec.path}: {exc}{hint}") from None
    except (ImportError, FileNotFoundError, AttributeError) as exc:
        raise UserInputError(f"cannot load stage {spec.path}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Stage)) or not cls.name:
        raise UserInputError(f"stage {spec.path} is not a hygiene.stages.Stage subclass with a name")
    try:
        return cls(**spec.params)
    except TypeError as exc:
        raise UserInputError(f"bad parameters for stage {spec.path}: {exc}") from None
