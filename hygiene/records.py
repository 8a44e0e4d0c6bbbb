"""Reading and writing corpus shards, one record at a time, without ever losing one.

Inputs: JSONL (plain or ``.gz``), Parquet, a Hugging Face dataset saved with
``save_to_disk``, and plain ``.txt`` files (one record per file, per line or per
blank-line-separated paragraph: :attr:`ReadOptions.txt_unit`); a directory
(searched recursively) or a glob of any of these. Each shard yields
:class:`Item` objects: a readable record with a stable id (``<shard>:<line>``
unless an id field is named) or an error saying what went wrong at which line,
so a bad line never stops the run and never vanishes. The reader of a file is
chosen by its suffix (:data:`SUFFIXES`) from :data:`READERS`; a new format is one
reader function and one entry in each.
"""
from __future__ import annotations

import base64
import datetime
import decimal
import bisect
import glob
import gzip
import itertools
import json
import random
import re
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence

from hygiene.errors import UserInputError
from hygiene.normalize import without_lone_surrogates

_BOM = b"\xef\xbb\xbf"
_TABLE_BATCH = 1024
_RAW_CHARS = 2000
#: deepest nesting of arrays and objects a JSON line may have: Python's parser and writer recurse once per
#: level (a RecursionError near 1,000 levels, fewer in a deep call stack such as a Ray worker's), so a fixed
#: limit well under that makes a line an error the same way on either engine (128: serde_json's default)
MAX_JSON_DEPTH = 128
#: the folder a filter run's outputs grow in until they move into place (``hygiene.run_output``)
PARTIAL = ".partial"


@dataclass(frozen=True)
class Shard:
    """One input unit of resumption: a file, or a saved Hugging Face dataset (split)."""

    path: Path
    kind: str  # the reader: a key of READERS ("jsonl", "parquet", "txt", or "hf" for a saved dataset)
    name: str  # stable name used in record ids and the checkpoint
    split: str | None = None  # DatasetDict split of an "hf" shard
    #: the inputs as the user named them (a file, a directory or a glob's match) that this shard was found
    #: through: what :func:`shards_outside` checks against the output directory
    named: tuple[Path, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class ReadOptions:
    """How shards become records: the text field to fill (``.txt``) and a ``.txt`` file's unit of record."""

    text_field: str = "text"
    txt_unit: str = "file"  # "file": the whole file; "line": each non-blank line; "paragraph": blank-line-separated


@dataclass
class Item:
    """One record read from a shard, or the error that kept it from being read."""

    shard: str
    line: int | None  # 1-based line (JSONL) or row (tables); None for a whole-shard failure
    record: dict[str, Any] | None = None
    error: str | None = None
    raw: str | None = None  # the start of an unparsable line, kept for inspection
    shard_failed: bool = False  # the rest of the shard could not be read

    def error_record(self) -> dict[str, Any]:
        """The ``errors`` output row: shard, line, error, and the record (or the raw start of the line)."""
        err: dict[str, Any] = {"shard": self.shard, "line": self.line, "error": self.error}
        if self.record is not None:
            err["record"] = self.record
        if self.raw is not None:
            err["raw"] = self.raw
        return err


def _kind(path: Path) -> str | None:
    """The reader for ``path`` by its suffix (:data:`SUFFIXES`), or ``None`` if unsupported."""
    name = path.name.lower()
    return next((kind for suffix, kind in SUFFIXES.items() if name.endswith(suffix)), None)


def _is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def _hf_shards(path: Path, name: str, named: Path) -> list[Shard]:
    """Shards of a saved dataset: the dataset itself, or one per split of a DatasetDict."""
    if (path / "dataset_dict.json").is_file():
        try:
            splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
        except (OSError, ValueError, KeyError) as exc:
            raise UserInputError(f"unreadable saved dataset {path}: {exc}") from None
        return [Shard(path, "hf", f"{name}/{s}", s, named=(named,)) for s in splits]
    return [Shard(path, "hf", name, named=(named,))]


def is_run_output(path: Path) -> bool:
    """Whether ``path`` is a filter run's output folder: finished (``stats.json`` beside ``config.yaml``) or
    under way (a ``.partial`` folder). Its kept, rejected and errors files and its ``stats.json`` are not a
    corpus, so a directory input skips the folder; name one of its files to read that file."""
    return path.is_dir() and ((path / "stats.json").is_file() and (path / "config.yaml").is_file()
                              or (path / PARTIAL).is_dir())


def _outside_runs(path: Path) -> list[Path]:
    """Everything under directory ``path`` but filter runs' output folders (:func:`is_run_output`) and what
    lies in them, in one walk."""
    found: list[Path] = []
    todo = [path]
    while todo:
        for p in sorted(todo.pop().iterdir()):
            if p.is_dir() and not p.is_symlink():
                if is_run_output(p):
                    continue
                todo.append(p)
            found.append(p)
    return found


def _directory_shards(path: Path) -> list[Shard]:
    """The shards under directory ``path``, sorted by name: saved datasets and readable files, leaving out
    filter runs' output folders (:func:`is_run_output`) and what lies in them."""
    if is_run_output(path):
        raise UserInputError(f"{path} is a filter run's output folder, not a corpus: name the file to read, "
                             f"e.g. {path / 'kept.jsonl'}")
    seen = _outside_runs(path)
    datasets_dirs = [p for p in seen if _is_saved_dataset(p)]
    # a DatasetDict's splits are saved datasets too: read them once, through the DatasetDict
    datasets_dirs = [d for d in datasets_dirs if not any(o in d.parents for o in datasets_dirs)]
    found = [s for d in datasets_dirs for s in _hf_shards(d, d.as_posix(), path)]
    found += [Shard(p, _kind(p), p.as_posix(), named=(path,)) for p in seen
              if p.is_file() and _kind(p) and not any(d in p.parents for d in datasets_dirs)]
    return sorted(found, key=lambda s: s.name)


def discover_shards(inputs: Sequence[str | Path]) -> list[Shard]:
    """Expand files, directories and globs into a sorted, duplicate-free list of shards.

    Each shard keeps the inputs it was found through (:attr:`Shard.named`), all of them when
    two inputs name the same file. A directory's filter-run output folders are skipped
    (:func:`is_run_output`). Raises :class:`UserInputError` for a missing path, an
    unsupported file, a run's output folder named as the input, or no shards.
    """
    shards: list[Shard] = []
    for arg in map(str, inputs):
        if glob.has_magic(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                raise UserInputError(f"no files match {arg}")
            for m in matches:
                p = Path(m)
                if _is_saved_dataset(p):
                    shards += _hf_shards(p, p.as_posix(), p)
                elif p.is_dir() and not is_run_output(p):  # searched as a directory named alone is
                    shards += _directory_shards(p)
                elif p.is_file() and _kind(p):
                    shards.append(Shard(p, _kind(p), p.as_posix(), named=(p,)))
            continue
        path = Path(arg)
        if not path.exists():
            raise UserInputError(f"input not found: {arg}")
        if _is_saved_dataset(path):
            shards += _hf_shards(path, path.as_posix(), path)
        elif path.is_dir():
            shards += _directory_shards(path)
        elif _kind(path):
            shards.append(Shard(path, _kind(path), path.as_posix(), named=(path,)))
        else:
            raise UserInputError(f"unsupported input {arg}: expected {', '.join(SUFFIXES)} or a saved dataset")
    unique: dict[tuple[str, str | None], Shard] = {}
    for s in shards:
        key = (str(s.path.resolve()), s.split)
        first = unique.get(key)
        unique[key] = s if first is None else replace(first, named=first.named + s.named)
    if not unique:
        raise UserInputError(f"no input shards found in {' '.join(map(str, inputs))}")
    return list(unique.values())


def _within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` (resolved) or lies inside it, symbolic links followed."""
    path = path.resolve()
    return path == folder or folder in path.parents


def shards_outside(shards: Sequence[Shard], out_dir: Path | None) -> list[Shard]:
    """``shards``, each checked to lie outside ``out_dir``, so a run never reads its own outputs back nor
    replaces an input (``--out`` inside an input directory).

    An input named inside or equal to ``out_dir`` is an error, not skipped: it would be left unread,
    and ``--overwrite`` could replace it. So is a file found in ``out_dir`` by walking an input folder that
    holds it (a run's output folder is skipped by the walk, :func:`is_run_output`: what is left there is the
    user's).
    """
    if out_dir is None:
        return list(shards)
    out = out_dir.resolve()
    for named in (n for s in shards for n in s.named):
        if _within(named, out):
            raise UserInputError(f"input {named} lies inside the output folder {out_dir}: it would not be read, "
                                 f"and --overwrite could replace it; choose another --out")
    inside = [s for s in shards if _within(s.path, out)]
    if inside:  # found by walking an input folder that holds --out, which is not a run's output folder
        raise UserInputError(f"the output folder {out_dir} lies in an input folder and holds {inside[0].path}: it "
                             f"would not be read, and the run could replace it; choose another --out")
    return list(shards)


def file_states(path: Path) -> list[tuple[str, int, int]]:
    """The name, size and modification time of ``path``, or of every file under it (a saved dataset, a model
    folder) but a filter run's outputs (:func:`is_run_output`: ``--out`` may lie inside): what says an input
    was rewritten since a run began."""
    if not path.is_dir():
        return [(path.name, (st := path.stat()).st_size, st.st_mtime_ns)]
    files = sorted(p for p in _outside_runs(path) if p.is_file())
    return [(p.name, (st := p.stat()).st_size, st.st_mtime_ns) for p in files]


def shard_states(shards: Sequence[Shard]) -> list[tuple[str, str | None, list[tuple[str, int, int]]]]:
    """Each shard's name and split with its :func:`file_states`."""
    return [(s.name, s.split, file_states(s.path)) for s in shards]


def _open_binary(path: Path) -> IO[bytes]:
    """Open a shard for reading bytes, decompressing ``.gz``."""
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


def _short(exc: BaseException) -> str:
    """A one-line description of an exception."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and dicts more than ``limit`` levels deep (found level by level, not by
    recursion)."""
    level, depth = [value], 0
    while containers := [v for v in level if isinstance(v, (list, dict))]:
        depth += 1
        if depth > limit:
            return True
        level = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]
    return False


def _parse_json(text: str) -> Any:
    """The value of one JSON line; :class:`ValueError` if it is not JSON or nests deeper than
    :data:`MAX_JSON_DEPTH`."""
    too_deep = ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:  # "Invalid control character at" ends with its own "at"
        raise ValueError(f"{exc.msg.removesuffix(' at')} at column {exc.colno}") from None
    except RecursionError:
        raise too_deep from None
    # a value has at most as many levels as the text has brackets: walk it only when that could be too many
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _nested_deeper(value, MAX_JSON_DEPTH):
        raise too_deep
    return value


def _read_jsonl(shard: Shard, options: ReadOptions) -> Iterator[Item]:
    """Records of a JSONL shard, one per non-blank line; bad lines and truncation become errors."""
    line_no = 0
    try:
        with _open_binary(shard.path) as fh:
            for line_no, raw in enumerate(fh, start=1):
                raw = raw.removeprefix(_BOM)  # a BOM opens the file, or a concatenated one
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield Item(shard.name, line_no, error=f"invalid UTF-8 at byte {exc.start}",
                               raw=raw[:_RAW_CHARS].decode("utf-8", "replace"))
                    continue
                try:
                    record = _parse_json(text)
                except ValueError as exc:
                    yield Item(shard.name, line_no, error=f"invalid JSON: {exc}", raw=text[:_RAW_CHARS])
                    continue
                if not isinstance(record, dict):
                    yield Item(shard.name, line_no, error=f"not a JSON object but {type(record).__name__}")
                    continue
                yield Item(shard.name, line_no, record)
    except (EOFError, OSError, zlib.error) as exc:
        after = f" after line {line_no}" if line_no else ""
        yield Item(shard.name, line_no + 1 if line_no else None, error=f"unreadable shard{after}: {_short(exc)}",
                   shard_failed=True)


def _read_parquet(shard: Shard, options: ReadOptions) -> Iterator[Item]:
    """Rows of a Parquet shard; an unreadable file or row group becomes one error."""
    import pyarrow.parquet as pq

    row = 0
    try:
        for batch in pq.ParquetFile(shard.path).iter_batches(batch_size=_TABLE_BATCH):
            for record in batch.to_pylist():
                row += 1
                yield Item(shard.name, row, record)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for corrupt files
        yield Item(shard.name, row + 1 if row else None, error=f"unreadable shard after row {row}: {_short(exc)}",
                   shard_failed=True)


def _read_saved_dataset(shard: Shard, options: ReadOptions) -> Iterator[Item]:
    """Rows of a dataset written by ``save_to_disk``."""
    import datasets

    row = 0
    try:
        ds = datasets.load_from_disk(str(shard.path))
        if shard.split is not None:
            ds = ds[shard.split]
        for batch in ds.iter(batch_size=_TABLE_BATCH):
            columns = list(batch)
            for values in zip(*(batch[c] for c in columns)):
                row += 1
                yield Item(shard.name, row, dict(zip(columns, values)))
    except Exception as exc:  # arrow/datasets errors for damaged files
        yield Item(shard.name, row + 1 if row else None, error=f"unreadable dataset after row {row}: {_short(exc)}",
                   shard_failed=True)


def _txt_units(text: str, unit: str) -> Iterator[tuple[int, str]]:
    """(1-based first line, text) of each record of a ``.txt`` file's content, by ``unit``."""
    if unit == "file":
        yield 1, text
        return
    pattern = re.compile(r"[^\n]+") if unit == "line" else re.compile(r"(?:[^\n]*\S[^\n]*(?:\n|$))+")
    for match in pattern.finditer(text):
        if match.group().strip():
            yield text.count("\n", 0, match.start()) + 1, match.group().strip("\n")


def _read_txt(shard: Shard, options: ReadOptions) -> Iterator[Item]:
    """A ``.txt`` file as records ``{text_field: text, "path": shard name}``: the whole file, each non-blank
    line, or each blank-line-separated paragraph (``options.txt_unit``); a leading BOM dropped.

    A record with invalid UTF-8 is an error at its own line (with its raw start, as in JSONL), so one bad
    byte costs its line or paragraph, not the file.
    """
    try:
        data = shard.path.read_bytes()
    except OSError as exc:
        yield Item(shard.name, None, error=f"unreadable file: {_short(exc)}", shard_failed=True)
        return
    # an invalid byte becomes a lone surrogate (which valid UTF-8 never decodes to), found record by record
    text = data.removeprefix(_BOM).decode("utf-8", "surrogateescape")
    for line, unit in _txt_units(text, options.txt_unit):
        try:
            unit.encode("utf-8")
        except UnicodeEncodeError as exc:
            raw = unit.encode("utf-8", "surrogateescape")
            at = len(unit[:exc.start].encode("utf-8"))
            bad_line = line + unit.count("\n", 0, exc.start)
            where = f" (line {bad_line})" if bad_line != line else ""
            yield Item(shard.name, line, error=f"invalid UTF-8 at byte {at}{where}",
                       raw=raw[:_RAW_CHARS].decode("utf-8", "replace"))
            continue
        yield Item(shard.name, line, {options.text_field: unit, "path": shard.name})


Reader = Callable[[Shard, ReadOptions], Iterator[Item]]
#: reader name -> function of (shard, options) yielding every record or error of the shard, in order
READERS: dict[str, Reader] = {"jsonl": _read_jsonl, "parquet": _read_parquet, "txt": _read_txt,
                              "hf": _read_saved_dataset}
#: file suffix -> reader name (a saved Hugging Face dataset is a directory: reader "hf")
SUFFIXES: dict[str, str] = {
    **dict.fromkeys((".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz"), "jsonl"),
    ".parquet": "parquet", ".txt": "txt",
}


def read_shard(shard: Shard, options: ReadOptions = ReadOptions()) -> Iterator[Item]:
    """Every record of ``shard`` in order, with errors in place of the records that could not be read."""
    return READERS[shard.kind](shard, options)


def shard_sizes(shards: Sequence[Shard], options: ReadOptions = ReadOptions(),
                max_bytes: int | None = 256 << 20) -> list[int] | None:
    """How many records (and errors) each shard holds, if that is cheap to know: from the metadata of
    Parquet files and saved datasets, by counting lines in text files up to ``max_bytes`` in all (``None``:
    any size); else ``None``."""
    text = [s for s in shards if s.kind in ("jsonl", "txt")]
    if max_bytes is not None and sum(s.path.stat().st_size for s in text) > max_bytes:
        return None
    try:
        return [_shard_size(shard, options) for shard in shards]
    except Exception:  # an unreadable shard: its errors are reported by the run itself
        return None


def _shard_size(shard: Shard, options: ReadOptions) -> int:
    """The records (and errors) of a shard, from metadata or a count of lines; raises if it is unreadable."""
    import pyarrow.parquet as pq

    if shard.kind == "parquet":
        return pq.ParquetFile(shard.path).metadata.num_rows
    if shard.kind == "jsonl":
        with _open_binary(shard.path) as fh:
            return sum(1 for line in fh if line.strip())
    if shard.kind == "txt":
        return sum(1 for _ in read_shard(shard, options)) if options.txt_unit != "file" else 1
    import datasets

    ds = datasets.load_from_disk(str(shard.path))
    return (ds[shard.split] if shard.split is not None else ds).num_rows


def sample_positions(shards: Sequence[Shard], options: ReadOptions, n: int, seed: int) -> dict[str, set[int]]:
    """The positions, within their shard, of a seeded random sample of ``n`` of the shards' records (an
    unreadable line counts as one): what ``--sample`` filters, the same on either engine. A shard that cannot
    be counted cheaply (a truncated ``.gz``) is counted as the run reads it: its records, then one error."""
    sizes = []
    for shard in shards:
        try:
            sizes.append(_shard_size(shard, options))
        except Exception:  # noqa: BLE001 - unreadable past some point: count what the reader yields
            sizes.append(sum(1 for _ in read_shard(shard, options)))
    total = sum(sizes)
    chosen = sorted(random.Random(seed).sample(range(total), min(n, total)))
    starts = list(itertools.accumulate(sizes, initial=0))
    sample: dict[str, set[int]] = {shard.name: set() for shard in shards}
    for k in chosen:
        i = bisect.bisect_right(starts, k) - 1
        sample[shards[i].name].add(k - starts[i])
    return sample


def limit_quotas(shards: Sequence[Shard], options: ReadOptions, limit: int) -> list[int]:
    """How many records (unreadable lines included) of each shard the first ``limit`` records of the shards,
    in order, take: what ``--limit`` reads. Counted by reading, up to ``limit`` records in all, so that a
    reader that does not go in order (the Ray engine) reads the same ones."""
    quotas = []
    for shard in shards:
        left = limit - sum(quotas)
        quotas.append(sum(1 for _ in itertools.islice(read_shard(shard, options), left)) if left else 0)
    return quotas


def _json_default(value: Any) -> Any:
    """JSON form of values Parquet and Arrow hand back (dates, decimals, bytes, numpy scalars)."""
    if isinstance(value, (datetime.date, datetime.time, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps_record(record: dict[str, Any]) -> str:
    """One JSONL line (no newline) for ``record``, non-ASCII characters kept as they are."""
    return json.dumps(record, ensure_ascii=False, default=_json_default)


def json_line(record: dict[str, Any]) -> bytes:
    """``record`` as one UTF-8 JSON line without its newline (a lone surrogate written as its \\u escape)."""
    return dumps_record(record).encode("utf-8", "backslashreplace")


_INT64 = range(-(2**63), 2**63)


def _arrow_safe(value: Any) -> Any:
    """Replace lone surrogates (valid in JSON, not in UTF-8 / Arrow strings) by U+FFFD, and an integer beyond
    64 bits (valid in JSON, no Parquet integer) by its decimal string, recursively."""
    if isinstance(value, str):
        return without_lone_surrogates(value)
    if type(value) is int and value not in _INT64:
        return str(value)
    if isinstance(value, dict):
        return {k: _arrow_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_arrow_safe(v) for v in value]
    return value


def jsonl_to_parquet(src: str | Path, dst: str | Path, chunk: int = 10_000) -> None:
    """Convert a JSONL file to Parquet (atomically), unifying the schema over all records.

    Two passes: the first infers and merges the schema of every chunk, the second writes
    each chunk under it, so records with different fields fit one table.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hygiene.atomic import atomic_open

    def chunks() -> Iterator[list[dict[str, Any]]]:
        with open(src, encoding="utf-8") as fh:
            while rows := [_arrow_safe(json.loads(line)) for _, line in zip(range(chunk), fh)]:
                yield rows

    def schema_of(rows: list[dict[str, Any]]) -> pa.Schema:
        """Every field of every row, each typed from all of its values (``from_pylist`` types the first row's)."""
        names = dict.fromkeys(name for row in rows for name in row)
        return pa.Table.from_pydict({name: [row.get(name) for row in rows] for name in names}).schema

    try:
        schemas = [schema_of(rows) for rows in chunks()]
        schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
        with atomic_open(dst, "wb") as fh, pq.ParquetWriter(fh, schema) as writer:
            for rows in chunks():
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise UserInputError(f"cannot write {dst} as Parquet ({_short(exc)}); run again with --format jsonl "
                             "(and --overwrite)") from None
