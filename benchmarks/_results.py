"""Where a benchmark leaves its figures: ``NAME.json`` (machine) and ``NAME.md`` (its table, for a person)."""
from __future__ import annotations

from pathlib import Path

from hygiene.atomic import atomic_open, write_json


def save(out: Path, name: str, result: dict, table: str) -> Path:
    """Write ``out/NAME.json`` and ``out/NAME.md`` atomically; return the JSON's path."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", result)
    with atomic_open(out / f"{name}.md") as fh:
        fh.write(table.rstrip("\n") + "\n")
    return out / f"{name}.json"
