"""Exact and near-duplicate detection: text hashes, MinHash signatures, LSH band keys and the key index.

Two signature schemes over the same shingles (lower-cased ``\\w+`` words, word n-grams):

- ``fast`` (the default): every text of a batch is hashed in numpy, never one Python
  call per word or shingle. Words get a 64-bit polynomial hash of their UTF-8 bytes,
  ``ngram`` consecutive word hashes combine into a shingle hash, and the signature is a
  bucketed MinHash (Dahlgaard, Knudsen & Thorup 2017, *Fast Similarity Sketching*):
  each shingle drops its hash into one of ``num_perm`` slots per round, a few rounds
  run while a document has empty slots, and a slot still empty after them takes the
  minimum of its own hash over the document's shingles. A slot keeps the smallest
  (round, value) it received, so two sets agree on a slot exactly when the first
  shingle of their union to land there is in both: probability = Jaccard similarity,
  as for MinHash, at about 3 hashes per shingle instead of ``num_perm``.
- ``datasketch``: signatures equal datasketch's ``MinHash(num_perm, seed)`` (scheme
  ``affine32``, the datasketch 2.x default) fed the same shingles: SHA-1 of each
  shingle's UTF-8 bytes truncated to 32 bits (``datasketch.hashfunc.sha1_hash32``),
  the MurmurHash3 finaliser, then ``a*h + b mod 2^32`` with datasketch's permutation
  parameters; every permutation of every shingle of a batch in a few numpy
  operations, but one SHA-1 call per shingle.

The index state (:class:`HashIndex`) lives apart from the dedup stages
(:mod:`hygiene.stages.exact_dedup`, :mod:`hygiene.stages.near_dedup`), so a run can save
it at a checkpoint and load it on resume; each saved part names the scheme of its keys.
"""
from __future__ import annotations

import hashlib
import re
import struct
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from hygiene.config import HASH_SCHEMES
from hygiene.errors import UserInputError

_WORD = re.compile(r"\w+")
_SHA1_32 = struct.Struct("<I")
_FMIX32 = (np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35))
_MAX32 = np.uint32(0xFFFFFFFF)
#: rows of the (shingles x permutations) matrix computed at once; bounds memory for huge documents
_CHUNK_ROWS = 32_768

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
_LOW32 = _U64(0xFFFFFFFF)
_MAX64 = _U64(_MASK64)
_FMIX64 = (_U64(0xFF51AFD7ED558CCD), _U64(0xC4CEB9FE1A85EC53))
#: odd multiplier of the words' polynomial byte hash, and its inverse mod 2^64
_WORD_BASE = 0x9E3779B97F4A7C15
_WORD_BASE_INV = pow(_WORD_BASE, -1, 1 << 64)
#: bytes of text hashed per numpy pass: arrays stay in cache, memory stays bounded for huge pages
_CHUNK_BYTES = 1 << 18
#: shingles scattered into the slots per numpy pass
_CHUNK_SHINGLES = 1 << 20
#: bucket rounds before a slot falls back to its own hash over the document's shingles
_ROUNDS = 4


def _word_byte_table() -> bytes:
    """``bytes.translate`` table: a UTF-8 byte's value in a word hash, 0 outside words, ``A``-``Z`` as ``a``-``z``.

    ASCII word bytes are ``[0-9A-Za-z_]`` (Python's ``\\w``); bytes of non-ASCII characters keep
    their value, and those of the non-ASCII characters outside words are zeroed afterwards.
    """
    table = bytearray(256)
    for ch in "0123456789_abcdefghijklmnopqrstuvwxyz":
        table[ord(ch)] = table[ord(ch.upper())] = ord(ch)
    table[0x80:] = range(0x80, 0x100)
    return bytes(table)


_WORD_BYTES = _word_byte_table()


@lru_cache(maxsize=1)
def _bmp_word_chars() -> np.ndarray:
    """Whether each code point below 0x10000 is a word character (``\\w``)."""
    marked = re.sub(r"\W", "\0", "".join(map(chr, range(0x10000))))
    return np.frombuffer(marked.encode("utf-32-le", "surrogatepass"), np.uint32) != 0


def _blank_non_word(values: np.ndarray, raw: np.ndarray) -> None:
    """Zero in ``values`` the bytes of the non-ASCII characters of UTF-8 ``raw`` that are not word characters."""
    lead = np.flatnonzero(raw >= 0xC0)
    if not len(lead):
        return
    first = raw[lead].astype(np.int64)
    size = 2 + (first >= 0xE0) + (first >= 0xF0)
    code = first & (0x3F >> (size - 1))  # the lead byte's payload: 5, 4 or 3 bits
    for k in range(1, 4):
        more = size > k
        code[more] = (code[more] << 6) | (raw[lead[more] + k] & 0x3F)
    word = np.zeros(len(lead), bool)
    bmp = code < 0x10000
    word[bmp] = _bmp_word_chars()[code[bmp]]
    for c in np.unique(code[~bmp]).tolist():
        word[code == c] = _WORD.match(chr(c)) is not None
    lead, size = lead[~word], size[~word]
    ramp = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
    values[np.repeat(lead, size) + ramp] = 0


@lru_cache(maxsize=1)
def _powers() -> tuple[np.ndarray, np.ndarray]:
    """``(B^j, B^-j) mod 2^64`` for ``j < _CHUNK_BYTES``, B the word hash base (uint64 products wrap)."""
    up = np.full(_CHUNK_BYTES, _WORD_BASE, _U64)
    down = np.full(_CHUNK_BYTES, _WORD_BASE_INV, _U64)
    up[0] = down[0] = 1
    return np.cumprod(up, dtype=_U64), np.cumprod(down, dtype=_U64)


def shingles(text: str, ngram: int = 5) -> list[str]:
    """Word ``ngram``-shingles of ``text``: lower-cased ``\\w+`` words joined by one space.

    A text shorter than ``ngram`` words gives one shingle of all its words; no words, none.
    """
    words = _WORD.findall(text.lower())
    if len(words) <= ngram:
        return [" ".join(words)] if words else []
    return [" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3 64-bit finaliser of a uint64 array, in place (pass an array you own); returns it."""
    h ^= h >> _U64(33)
    h *= _FMIX64[0]
    h ^= h >> _U64(33)
    h *= _FMIX64[1]
    h ^= h >> _U64(33)
    return h


def _seeded_constants(seed: int, n: int) -> np.ndarray:
    """``n`` odd 64-bit constants drawn from ``seed``: the fast scheme's shingle multipliers and round salts."""
    return np.random.default_rng(seed).integers(0, 1 << 64, n, dtype=_U64, endpoint=False) | _U64(1)


def word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the lower-cased ``\\w+`` words of all ``texts`` in order, and each text's offsets into them.

    A word's hash is ``sum_j v(b_j) B^-j mod 2^64`` over its UTF-8 bytes ``b_j`` (``v``: the byte,
    case folded), so equal words hash equal wherever they stand. The texts are joined into one
    byte stream hashed ``_CHUNK_BYTES`` at a time with prefix sums; a word running past a chunk
    gets the rest of its sum from the next chunks.
    """
    encoded = [(t if t.isascii() else t.lower()).encode("utf-8", "surrogatepass") for t in texts]
    raw = b"\n".join(encoded)
    values = np.frombuffer(raw.translate(_WORD_BYTES), np.uint8)
    if not raw.isascii():
        values = values.copy()
        _blank_non_word(values, np.frombuffer(raw, np.uint8))
    text_start = np.zeros(len(texts) + 1, np.int64)
    np.cumsum([len(e) + 1 for e in encoded], out=text_start[1:])
    up, down = _powers()
    prefix = np.zeros(min(len(values), _CHUNK_BYTES) + 1, _U64)  # prefix[j]: the sum of a chunk's first j terms
    starts: list[np.ndarray] = []
    hashes: list[np.ndarray] = []
    carried: list[tuple[int, int]] = []  # (word, addition): the parts of words that ran past their chunk
    n_words, last_start, in_word = 0, 0, False
    for offset in range(0, len(values), _CHUNK_BYTES):
        chunk = values[offset : offset + _CHUNK_BYTES]
        inside = chunk != 0
        # cuts: where a word starts or ends (exclusive), alternately; a word open at the chunk's end ends there
        cuts = np.flatnonzero(inside[1:] != inside[:-1]) + 1
        if inside[0] != in_word:
            cuts = np.r_[0, cuts]
        if inside[-1]:
            cuts = np.r_[cuts, len(chunk)]
        terms = prefix[1 : len(chunk) + 1]
        np.multiply(chunk, down[: len(chunk)], out=terms)
        np.cumsum(terms, out=terms)
        sums = prefix[cuts]
        if in_word:  # the previous chunk's last word goes on to the first cut
            rest = pow(_WORD_BASE_INV, offset - last_start, 1 << 64) * int(sums[0])
            carried.append((n_words - 1, rest & _MASK64))
            cuts, sums = cuts[1:], sums[1:]
        in_word = bool(inside[-1])
        if len(cuts):
            first = cuts[0::2]
            starts.append(first + offset)
            hashes.append((sums[1::2] - sums[0::2]) * up[first])
            n_words += len(first)
            last_start = offset + int(first[-1])
    if not starts:
        return np.zeros(0, _U64), np.zeros(len(texts) + 1, np.int64)
    words = np.concatenate(hashes)
    for word, addition in carried:
        words[word] = (int(words[word]) + addition) & _MASK64
    return words, np.searchsorted(np.concatenate(starts), text_start).astype(np.int64)


def shingle_hashes(texts: Sequence[str], ngram: int = 5, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The fast scheme's 64-bit hashes of each text's word ``ngram``-shingles (those of :func:`shingles`),
    flat, and each text's offsets into them.

    A shingle's hash mixes ``sum_k word_k * m_k`` (``m_k``: odd constants drawn from ``seed``);
    a text of 1 to ``ngram`` words has one shingle of all its words, a text without words none.
    """
    words, offsets = word_hashes(texts)
    mult = _seeded_constants(seed, ngram + 1)
    counts = np.diff(offsets)
    n_words = len(words)
    padded = np.concatenate([_fmix64(words), np.zeros(ngram - 1, _U64)])
    combined = padded[:n_words] * mult[0]
    for k in range(1, ngram):
        combined += padded[k : k + n_words] * mult[k]
    keep = np.ones(n_words, bool)
    for k in range(1, ngram):  # no shingle starts in a text's last ngram-1 words...
        pos = offsets[1:] - k
        keep[pos[pos >= offsets[:-1]]] = False
    short = np.flatnonzero((counts > 0) & (counts < ngram))
    if len(short):  # ...except the one shingle of a text shorter than ngram words: its words alone
        first = offsets[short]
        alone = padded[first] * mult[0]
        for k in range(1, ngram - 1):
            alone += np.where(counts[short] > k, padded[first + k] * mult[k], _U64(0))
        combined[first] = alone
        keep[first] = True
    per_text = np.where(counts >= ngram, counts - ngram + 1, np.minimum(counts, 1))
    out = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(per_text, out=out[1:])
    return _fmix64(combined[keep] + mult[ngram]), out


def bucket_sketch(hashes: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int = 1) -> np.ndarray:
    """(n, num_perm) uint32 signatures of the sets ``hashes[offsets[i]:offsets[i+1]]`` of uniform 64-bit hashes.

    Round ``r`` sends each element of a set that still has empty slots to slot ``low32(h_r) * num_perm >> 32``
    with value ``high32(h_r)`` (``h_0``: the hash itself, later rounds remix it); a slot keeps the
    smallest (round, value). After ``_ROUNDS`` rounds an empty slot takes the smallest of a hash of its
    own over the set's elements. Each slot of two sets agrees with probability their Jaccard
    similarity. A set without elements gets all 2^32-1, as datasketch's empty MinHash.
    """
    n = len(offsets) - 1
    counts = np.diff(offsets)
    base = np.repeat(np.arange(0, n * num_perm, num_perm, dtype=_U64), counts)  # each element's set's slot 0
    keys = np.full(n * num_perm, _MAX64)
    salts = _seeded_constants(seed + 1, _ROUNDS + 1)
    live: np.ndarray | None = None  # the elements of sets with empty slots; None: all of them
    for r in range(_ROUNDS):
        total = len(hashes) if live is None else len(live)
        for s in range(0, total, _CHUNK_SHINGLES):
            if live is None:
                h, b = hashes[s : s + _CHUNK_SHINGLES], base[s : s + _CHUNK_SHINGLES]
            else:
                part = live[s : s + _CHUNK_SHINGLES]
                h, b = hashes[part], base[part]
            if r:
                h = _fmix64(h ^ salts[r])
            slot = h & _LOW32
            slot *= _U64(num_perm)
            slot >>= _U64(32)
            slot += b
            value = h >> _U64(32)
            value |= _U64(r << 32)
            np.minimum.at(keys, slot.view(np.int64), value)
        unfilled = (keys.reshape(n, num_perm) == _MAX64).any(axis=1) & (counts > 0)
        if not unfilled.any():
            break
        todo = np.repeat(unfilled, counts)
        live = None if todo.mean() > 0.5 else np.flatnonzero(todo)  # past half, skipping costs more than it saves
    rows, slots = np.nonzero((keys.reshape(n, num_perm) == _MAX64) & (counts > 0)[:, None])
    if len(rows):
        _fill_empty_slots(keys, hashes, offsets, rows, slots, num_perm, salts[_ROUNDS])
    return (keys & _LOW32).astype(np.uint32).reshape(n, num_perm)


def _fill_empty_slots(keys: np.ndarray, hashes: np.ndarray, offsets: np.ndarray, rows: np.ndarray,
                      slots: np.ndarray, num_perm: int, salt: np.uint64) -> None:
    """Slot ``slots[i]`` of set ``rows[i]`` := the smallest of a per-slot hash over the set's elements,
    ranked after every bucket round; at most ``_CHUNK_SHINGLES`` (element, slot) pairs hashed at once."""
    sizes = offsets[rows + 1] - offsets[rows]
    ends = np.cumsum(sizes)
    start = 0
    while start < len(rows):
        stop = max(int(np.searchsorted(ends, ends[start] - sizes[start] + _CHUNK_SHINGLES, "right")), start + 1)
        size = sizes[start:stop]
        seg = np.zeros(len(size), np.int64)
        np.cumsum(size[:-1], out=seg[1:])
        element = np.repeat(offsets[rows[start:stop]] - seg, size) + np.arange(int(size.sum()))
        slot_salt = np.repeat(slots[start:stop].astype(_U64) * _U64(_WORD_BASE) + salt, size)
        h = _fmix64(hashes[element] ^ slot_salt)
        mins = np.minimum.reduceat((h >> _U64(32)) | _U64(_ROUNDS << 32), seg)
        keys[rows[start:stop] * num_perm + slots[start:stop]] = mins
        start = stop


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


def datasketch_signatures(shingle_sets: Sequence[Sequence[str]], num_perm: int, seed: int = 1) -> np.ndarray:
    """(n, num_perm) uint32 signatures equal to datasketch's ``MinHash(num_perm, seed)`` updated with each
    set's shingles (UTF-8); a set without shingles gets all 2^32-1 (datasketch's empty MinHash)."""
    a, b = permutations(num_perm, seed)
    counts = np.fromiter((len(s) for s in shingle_sets), np.int64, len(shingle_sets))
    sig = np.full((len(shingle_sets), num_perm), _MAX32, dtype=np.uint32)
    if counts.sum() == 0:
        return sig
    hv = _fmix32(sha1_hash32([s for doc in shingle_sets for s in doc]))
    owner = np.repeat(np.arange(len(shingle_sets)), counts)
    for start in range(0, len(hv), _CHUNK_ROWS):
        h, own = hv[start : start + _CHUNK_ROWS], owner[start : start + _CHUNK_ROWS]
        phv = h[:, None] * a + b  # uint32 arithmetic wraps: mod 2^32
        seg = np.flatnonzero(np.r_[True, own[1:] != own[:-1]])
        mins = np.minimum.reduceat(phv, seg, axis=0)
        docs = own[seg]
        sig[docs] = np.minimum(sig[docs], mins)
    return sig


class MinHasher:
    """Batched MinHash signatures of texts' word n-gram shingles, by ``scheme`` (``fast`` or ``datasketch``)."""

    def __init__(self, num_perm: int = 112, seed: int = 1, ngram: int = 5, scheme: str = "fast") -> None:
        if scheme not in HASH_SCHEMES:
            raise ValueError(f"unknown hash scheme {scheme!r}: choose one of {', '.join(HASH_SCHEMES)}")
        self.num_perm, self.seed, self.ngram, self.scheme = num_perm, seed, ngram, scheme

    def sketch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(n, num_perm) uint32 signatures of ``texts`` and the number of shingles of each (0: no words)."""
        if self.scheme == "datasketch":
            sets = [shingles(t, self.ngram) for t in texts]
            sizes = np.fromiter((len(s) for s in sets), np.int64, len(sets))
            return datasketch_signatures(sets, self.num_perm, self.seed), sizes
        hashes, offsets = shingle_hashes(texts, self.ngram, self.seed)
        return bucket_sketch(hashes, offsets, self.num_perm, self.seed), np.diff(offsets)

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """(n, num_perm) uint32 MinHash signatures of the word-shingle sets of ``texts``."""
        return self.sketch(texts)[0]


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
    saved deltas in order rebuilds the index. ``scheme`` names how the keys were made
    (a stage's hashing and its parameters); every delta records it, and loading a delta
    of another scheme is refused, since its keys would never match.
    """

    def __init__(self, scheme: str = "", flush_every: int = 200_000, max_runs: int = 64) -> None:
        self.scheme = scheme
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

    def link(self, keys: np.ndarray, ordinals: np.ndarray) -> np.ndarray:
        """Per row of ``keys`` (m, k), in order, the value it links to; then store the rows' new keys.

        A row links to the value of its first key (by column) that is stored already (in the sealed runs
        or pending: where an entry sits never changes the answer, so neither does when a checkpoint seals
        them) or held by an earlier row of the batch; else to its own ordinal. Each key not stored yet is
        then stored with the value of the first row holding it (the first value stored wins).
        """
        m, width = keys.shape
        rows = np.arange(m)
        found = self.lookup_sorted(keys)
        flat = keys.ravel()
        pending = np.fromiter(map(self.pending.get, flat.tolist(), repeat(-1)), np.int64, flat.size).reshape(m, width)
        unique, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
        first_row = (first // width)[inverse.ravel()].reshape(m, width)
        stored = np.where(found >= 0, found, pending)  # a key is in the runs or pending, never both
        candidate = (stored >= 0) | (first_row < rows[:, None])  # stored, or held by an earlier row
        col = candidate.argmax(axis=1)
        has = candidate.any(axis=1)
        from_row = has & (stored[rows, col] < 0)
        value = np.where(has & ~from_row, stored[rows, col], ordinals)
        parent = np.where(from_row, first_row[rows, col], -1)  # always an earlier row
        linked = np.flatnonzero(from_row)
        while len(linked):  # pointer jumping: every row's parent becomes a row with a value of its own
            grand = parent[parent[linked]]
            deeper = grand >= 0
            parent[linked[deeper]] = grand[deeper]
            linked = linked[deeper]
        value[from_row] = value[parent[from_row]]
        new = (found.ravel()[first] < 0) & (pending.ravel()[first] < 0)
        self.pending.update(zip(unique[new].tolist(), value[first[new] // width].tolist()))
        return value

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
            np.savez(fh, scheme=np.array(self.scheme), **arrays)
        return sum(len(k) for k, _ in runs)

    def load_deltas(self, paths: Iterable[str | Path]) -> None:
        """Rebuild the index from deltas written by :meth:`save_delta`, in order; refuse a delta of another scheme."""
        for p in paths:
            with np.load(p, allow_pickle=False) as z:
                scheme = str(z["scheme"]) if "scheme" in z.files else "(none recorded)"
                if scheme != self.scheme:
                    raise UserInputError(f"cannot resume from {p}: its keys are {scheme!r}, this run's {self.scheme!r}")
                i = 0
                while f"keys_{i}" in z.files:
                    self.runs.append((z[f"keys_{i}"].astype(np.uint64), z[f"values_{i}"].astype(np.int64)))
                    i += 1
        self.saved_runs = len(self.runs)


def detection_probability(similarity: np.ndarray | float, bands: int, rows: int) -> np.ndarray:
    """Probability that LSH with ``bands`` x ``rows`` pairs two sets of Jaccard ``similarity``: 1-(1-s^r)^b."""
    s = np.asarray(similarity, dtype=float)
    return 1.0 - (1.0 - s**rows) ** bands
