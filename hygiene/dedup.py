"""Exact and near-duplicate detection: text hashes, MinHash signatures, LSH band keys and the key index.

Signatures equal datasketch's ``MinHash(num_perm, seed)`` (scheme ``affine32``, the
datasketch 2.x default) fed the same shingles: SHA-1 of each shingle's UTF-8 bytes
truncated to 32 bits (``datasketch.hashfunc.sha1_hash32``), the MurmurHash3 finaliser,
then ``a*h + b mod 2^32`` with datasketch's permutation parameters. Only the hashing
loop differs: one SHA-1 call per shingle, then every permutation of every shingle
of a whole batch in a few numpy operations, where ``MinHash.update`` runs numpy once
per shingle.

The index state (:class:`HashIndex`) lives apart from the dedup stages
(:mod:`hygiene.stages.exact_dedup`, :mod:`hygiene.stages.near_dedup`), so a run can save
it at a checkpoint and load it on resume.
"""
from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np


_WORD = re.compile(r"\w+")
_SHA1_32 = struct.Struct("<I")
_FMIX32 = (np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35))
_MAX32 = np.uint32(0xFFFFFFFF)
#: rows of the (shingles x permutations) matrix computed at once; bounds memory for huge documents
_CHUNK_ROWS = 32_768


def shingles(text: str, ngram: int = 5) -> list[str]:
    """Word ``ngram``-shingles of ``text``: lower-cased ``\\w+`` words joined by one space.

    A text shorter than ``ngram`` words gives one shingle of all its words; no words, none.
    """
    words = _WORD.findall(text.lower())
    if len(words) <= ngram:
        return [" ".join(words)] if words else []
    return [" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]


def sha1_hash32(items: Sequence[str]) -> np.ndarray:
    """``datasketch.hashfunc.sha1_hash32`` of each item's UTF-8 bytes, as a uint32 array."""
    unpack, sha1 = _SHA1_32.unpack_from, hashlib.sha1
    return np.fromiter((unpack(sha1(s.encode("utf-8")).digest())[0] for s in items), np.uint32, len(items))


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3 32-bit finaliser (datasketch's pre-mix for the affine32 scheme)."""
    h = h ^ (h >> np.uint32(16))
    h = h * _FMIX32[0]
    h = h ^ (h >> np.uint32(13))
    h = h * _FMIX32[1]
    return h ^ (h >> np.uint32(16))


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters ``(a, b)`` for ``num_perm`` and ``seed``."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


class MinHasher:
    """Batched MinHash signatures over word n-gram shingles, equal to datasketch's."""

    def __init__(self, num_perm: int = 112, seed: int = 1, ngram: int = 5) -> None:
        self.num_perm, self.seed, self.ngram = num_perm, seed, ngram
        self.a, self.b = permutations(num_perm, seed)

    def signatures_of_shingles(self, shingle_sets: Sequence[Sequence[str]]) -> np.ndarray:
        """(n, num_perm) uint32 signatures; a document without shingles gets all 2^32-1 (datasketch's empty)."""
        counts = np.fromiter((len(s) for s in shingle_sets), np.int64, len(shingle_sets))
        sig = np.full((len(shingle_sets), self.num_perm), _MAX32, dtype=np.uint32)
        if counts.sum() == 0:
            return sig
        hv = _fmix32(sha1_hash32([s for doc in shingle_sets for s in doc]))
        owner = np.repeat(np.arange(len(shingle_sets)), counts)
        for start in range(0, len(hv), _CHUNK_ROWS):
            h, own = hv[start : start + _CHUNK_ROWS], owner[start : start + _CHUNK_ROWS]
            phv = h[:, None] * self.a + self.b  # uint32 arithmetic wraps: mod 2^32
            seg = np.flatnonzero(np.r_[True, own[1:] != own[:-1]])
            mins = np.minimum.reduceat(phv, seg, axis=0)
            docs = own[seg]
            sig[docs] = np.minimum(sig[docs], mins)
        return sig

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """(n, num_perm) uint32 MinHash signatures of the word-shingle sets of ``texts``."""
        return self.signatures_of_shingles([shingles(t, self.ngram) for t in texts])


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 keys: each band's ``rows`` values hashed together, with the band index mixed in.

    Two documents share a key in band j exactly when their signatures agree on all rows
    of band j (up to a 2^-64 hash collision).
    """
    n = signatures.shape[0]
    sig = signatures[:, : bands * rows].astype(np.uint64).reshape(n, bands, rows)
    key = np.broadcast_to(np.arange(1, bands + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15), (n, bands)).copy()
    for r in range(rows):
        key = (key ^ sig[:, :, r]) * np.uint64(0x100000001B3)  # FNV-style mix, wraps mod 2^64
        key ^= key >> np.uint64(29)
    return key


def text_key(texts: Sequence[str]) -> np.ndarray:
    """64-bit BLAKE2b digest of each text's UTF-8 bytes (collision odds ~n^2/2^65)."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
         for t in texts),
        np.uint64,
        len(texts),
    )


class HashIndex:
    """A growing map of uint64 keys to int64 values: the first value stored for a key wins.

    New entries sit in a dict (about 100 bytes an entry) until ``flush_every`` of them
    are sealed into a sorted run of numpy arrays (16 bytes an entry); lookups search
    the runs for a whole batch with ``np.searchsorted``. Runs are never copied while
    the index grows (only when more than ``max_runs`` are already saved are those
    merged), so memory stays about 16 bytes an entry. :meth:`flush` hands out the
    entries added since the last save, which is what a checkpoint writes; loading the
    saved deltas in order rebuilds the index.
    """

    def __init__(self, flush_every: int = 200_000, max_runs: int = 64) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []
        self.saved_runs = 0  # runs[:saved_runs] have been handed out by flush()
        self.pending: dict[int, int] = {}
        self.flush_every, self.max_runs = flush_every, max_runs

    def __len__(self) -> int:
        return sum(len(k) for k, _ in self.runs) + len(self.pending)

    def lookup_sorted(self, keys: np.ndarray) -> np.ndarray:
        """Values for ``keys`` found in the sealed runs, -1 where absent (pending entries not searched)."""
        out = np.full(keys.shape, -1, np.int64)
        for run_keys, run_values in self.runs:  # oldest first: the first value stored wins
            pos = np.minimum(np.searchsorted(run_keys, keys), len(run_keys) - 1)
            hit = (out < 0) & (run_keys[pos] == keys)
            out[hit] = run_values[pos[hit]]
        return out

    def _seal(self) -> None:
        """Turn the pending entries into a sorted run."""
        if self.pending:
            keys = np.fromiter(self.pending.keys(), np.uint64, len(self.pending))
            values = np.fromiter(self.pending.values(), np.int64, len(self.pending))
            self.pending = {}
            self._add_run(keys, values)

    def _add_run(self, keys: np.ndarray, values: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self.runs.append((keys[order], values[order]))

    def maybe_compact(self) -> None:
        """Seal the pending entries once there are ``flush_every``; merge saved runs past ``max_runs``."""
        if len(self.pending) >= self.flush_every:
            self._seal()
        if self.saved_runs > self.max_runs:
            saved = self.runs[: self.saved_runs]
            keys = np.concatenate([k for k, _ in saved])
            values = np.concatenate([v for _, v in saved])
            self.runs = self.runs[self.saved_runs :]
            order = np.argsort(keys, kind="stable")  # stable: earlier runs keep precedence
            self.runs.insert(0, (keys[order], values[order]))
            self.saved_runs = 1

    def flush(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Seal pending entries; the sorted runs (keys, values) added since the previous flush."""
        self._seal()
        new = self.runs[self.saved_runs :]
        self.saved_runs = len(self.runs)
        return new

    def save_delta(self, path: str | Path) -> int:
        """Write the entries added since the last save to ``path`` (.npz, atomically); return their count."""
        from hygiene.atomic import atomic_open

        runs = self.flush()
        arrays = {f"{name}_{i}": a for i, run in enumerate(runs) for name, a in zip(("keys", "values"), run)}
        with atomic_open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return sum(len(k) for k, _ in runs)

    def load_deltas(self, paths: Iterable[str | Path]) -> None:
        """Rebuild the index from deltas written by :meth:`save_delta`, in order."""
        for p in paths:
            with np.load(p, allow_pickle=False) as z:
                for i in range(len(z.files) // 2):
                    self.runs.append((z[f"keys_{i}"].astype(np.uint64), z[f"values_{i}"].astype(np.int64)))
        self.saved_runs = len(self.runs)


def detection_probability(similarity: np.ndarray | float, bands: int, rows: int) -> np.ndarray:
    """Probability that LSH with ``bands`` x ``rows`` pairs two sets of Jaccard ``similarity``: 1-(1-s^r)^b."""
    s = np.asarray(similarity, dtype=float)
    return 1.0 - (1.0 - s**rows) ** bands
