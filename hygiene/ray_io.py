"""Ray Data reading for ``hygiene filter --engine ray``.

:class:`ShardDatasource` is a Ray Data datasource with one read task per shard. Each
task reads its shard with the local engine's own reader (:func:`hygiene.records.read_shard`),
so both engines see the same records and the same errors, line for line: Ray's
``read_json``/``read_text`` fail a whole file on one bad line or one invalid UTF-8 byte
and do not report line numbers, which would break the accounting and the record ids.

Rows carry text as UTF-8 bytes with ``surrogatepass``, so a lone surrogate that JSON
allows (``"\\ud800"``) survives Arrow, which only stores valid UTF-8 strings.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import Any, Iterator, Sequence

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from hygiene.config import FilterConfig
from hygiene.batch import check_record
from hygiene.records import Item, ReadOptions, Shard, dumps_record, json_line, read_shard

log = logging.getLogger(__name__)

#: Columns of a row as read: ``k`` numbers a shard's usable records (-1 for an error row),
#: ``record`` is the record as JSON, ``error`` the line ``errors.jsonl`` gets (null when readable).
READ_SCHEMA = pa.schema([("shard", pa.int32()), ("line", pa.int64()), ("k", pa.int64()), ("id", pa.string()),
                         ("text", pa.binary()), ("record", pa.binary()), ("error", pa.binary())])


def encode(text: str) -> bytes:
    """UTF-8 bytes of ``text``, lone surrogates included."""
    return text.encode("utf-8", "surrogatepass")


def decode(data: bytes) -> str:
    """Inverse of :func:`encode`."""
    return data.decode("utf-8", "surrogatepass")


def shard_rows(shard: Shard, index: int, config: FilterConfig, rows_per_block: int,
               positions: set[int] | None = None, quota: int | None = None) -> Iterator[pa.Table]:
    """Blocks of rows (:data:`READ_SCHEMA`) of one shard, every record or error in order; with
    ``positions``, only the records there (``--sample``), and at most ``quota`` records (``--limit``)."""
    cols: dict[str, list] = {name: [] for name in READ_SCHEMA.names}
    k = 0
    items: Iterator[Item] = read_shard(shard, ReadOptions(config.text_field, config.txt_unit))
    if positions is not None:  # read no further than the last position chosen
        items = (item for pos, item in enumerate(itertools.islice(items, max(positions, default=-1) + 1))
                 if pos in positions)
    for item in itertools.islice(items, quota):
        text = rid = None
        if item.error is None:
            text, rid, error = check_record(item.record, config.text_field, config.id_field,
                                            f"{item.shard}:{item.line}")
            item = dataclasses.replace(item, error=error)
        elif item.shard_failed:
            log.warning("%s: %s", item.shard, item.error)
        ok = item.error is None
        err = None if ok else item.error_record()
        cols["shard"].append(index)
        cols["line"].append(item.line)
        cols["k"].append(k if ok else -1)
        cols["id"].append(rid if ok else None)
        cols["text"].append(encode(text) if ok else None)
        cols["record"].append(encode(dumps_record(item.record)) if ok else None)
        cols["error"].append(None if ok else json_line(err))
        k += ok
        if len(cols["shard"]) >= rows_per_block:
            yield pa.table(cols, schema=READ_SCHEMA)
            cols = {name: [] for name in READ_SCHEMA.names}
    if cols["shard"]:
        yield pa.table(cols, schema=READ_SCHEMA)


class ShardDatasource(Datasource):
    """The shards of a filter run as a Ray Data datasource: one read task per shard.

    ``positions`` (shard name -> positions chosen by ``--sample``) and ``quotas`` (records of each
    shard that ``--limit`` takes) select the records the local engine would read.
    """

    def __init__(self, shards: Sequence[Shard], config: FilterConfig, positions: dict[str, set[int]] | None = None,
                 quotas: Sequence[int] | None = None) -> None:
        self.shards, self.config = list(shards), config
        self.positions, self.quotas = positions, quotas

    def estimate_inmemory_data_size(self) -> int | None:
        sizes = [s.path.stat().st_size for s in self.shards if s.path.is_file()]
        return sum(sizes) if len(sizes) == len(self.shards) else None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        """One task per shard (a shard is the unit that keeps its line numbers)."""
        tasks = []
        config = self.config  # each task carries its own shard, selection and the config, not the lists of them
        for index, shard in enumerate(self.shards):
            size = shard.path.stat().st_size if shard.path.is_file() else None
            meta = BlockMetadata(num_rows=None, size_bytes=size, exec_stats=None, input_files=(str(shard.path),))
            positions = self.positions[shard.name] if self.positions is not None else None
            quota = self.quotas[index] if self.quotas is not None else None

            def read(shard: Shard = shard, index: int = index, positions: set[int] | None = positions,
                     quota: int | None = quota) -> Iterator[pa.Table]:
                return shard_rows(shard, index, config, config.batch_size, positions, quota)

            tasks.append(ReadTask(read, meta, schema=READ_SCHEMA))
        return tasks
