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

import functools
import hashlib
import importlib
import importlib.util
import sys
import types
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

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


#: the package that modules loaded from ``.py`` files are registered under (pickle needs the parent)
USER_PACKAGE = "hygiene_user_stages"


def _module(where: str) -> types.ModuleType:
    """Import a module by name, or from a ``.py`` file: registered once per file under ``USER_PACKAGE``,
    named by its stem and a hash of its resolved path (two ``st.py`` in two folders are two modules)."""
    if not where.endswith(".py"):
        return importlib.import_module(where)
    path = Path(where).resolve()
    name = f"{USER_PACKAGE}.{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None or not path.is_file():
            raise FileNotFoundError(path)
        if USER_PACKAGE not in sys.modules:
            package = types.ModuleType(USER_PACKAGE, "Stage modules loaded from .py files.")
            package.__path__ = []
            sys.modules[USER_PACKAGE] = package
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def _from_file(file: str, qualname: str) -> Stage:
    """An empty instance of the stage class ``qualname`` of the ``.py`` file ``file`` (loaded here if new)."""
    cls = functools.reduce(getattr, qualname.split("."), _module(file))
    return cls.__new__(cls)


def _reduce_by_file(stage: Stage) -> tuple[Any, ...]:
    """Pickle a stage from a ``.py`` file by that file, so a worker process loads it even if spawned."""
    cls = type(stage)
    state = stage.__getstate__() if hasattr(stage, "__getstate__") else stage.__dict__
    return _from_file, (sys.modules[cls.__module__].__file__, cls.__qualname__), state


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
    except (ImportError, FileNotFoundError, AttributeError, SyntaxError) as exc:
        raise UserInputError(f"cannot load stage {spec.path}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Stage)) or not cls.name:
        raise UserInputError(f"stage {spec.path} is not a hygiene.stages.Stage subclass with a name")
    if cls.__module__.startswith(f"{USER_PACKAGE}."):
        ForkingPickler.register(cls, _reduce_by_file)
    try:
        return cls(**spec.params)
    except TypeError as exc:
        raise UserInputError(f"bad parameters for stage {spec.path}: {exc}") from None
