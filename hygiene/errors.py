"""The error a user can fix: a missing file, an unreadable shard, a bad config, no detector.

Library code raises :class:`UserInputError` with a one-line message naming the file
or record; the command line turns it into a clean error instead of a traceback.
"""
from __future__ import annotations

from typing import Any, Mapping


class UserInputError(ValueError):
    """Bad input or configuration, described in one line that names what is wrong."""


def one_line(exc: BaseException) -> str:
    """A parser's error in one line: its problem and where (YAML's errors span several lines with a caret
    under the spot), else the first line of its message."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def error_hint(first: str) -> str:
    """What to say of a run whose every record is an error, from the first error: the option it points at,
    else the error itself."""
    return next((f" (a wrong {opt}?)" for key, opt in (("text field", "--text-field"), ("id field", "--id-field"))
                 if key in first), f" (the first: {first})")


def many(items: Any, what: str = "texts") -> Any:
    """``items`` unchanged unless it is one string, bytes or mapping, which a function over many texts would
    read character by character (or key by key): that is a ``TypeError`` (as in scikit-learn), not a score
    per character."""
    if isinstance(items, (str, bytes, Mapping)):
        one = "record" if isinstance(items, Mapping) else "text"
        raise TypeError(f"{what} must be a list or other iterable of texts, not a single {type(items).__name__} "
                        f"(wrap it: [{one}])")
    return items


def many_texts(items: Any, what: str = "texts") -> list[str]:
    """``items`` (see :func:`many`) as a list, each a string: a ``TypeError`` naming the first that is not (a
    ``None`` or bytes among texts), not an error from deep inside the tokenizer."""
    texts = list(many(items, what))
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"{what}[{bad}] is {type(texts[bad]).__name__}, not a string")
    return texts
