"""Narrowing a differing range down to candidate keys.

Every segment is screened first: integer keys by the range digest (one md5 per range; a pair
of PostgreSQL servers of one major version by the hashtextextended sum, cheaper still there),
other keys by the order-insensitive sum. Only a segment that differs is narrowed.

Integer keys: one grouped scan per side returns the checksums of ``FANOUT`` buckets at once;
only the differing buckets are looked into again, until a bucket holds at most
``row_threshold`` rows, whose (key, hash) pairs are then compared. Other keys (text, UUID,
composite) are cut by sampling the source's keys, one checksum per sub-range, as reladiff does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from shiftover.diff.checksum import (
    Side,
    bucket_checksums,
    int_key_hashes,
    keyed_hashes,
    range_checksum,
    range_digest,
    row_hashes,
)
from shiftover.diff.normalize import ColumnRule
from shiftover.diff.report import Key
from shiftover.diff.rows import key_token
from shiftover.diff.segments import KeyRange, integer_span, sampled_ranges
from shiftover.rowsync import TableStats

FANOUT = 32
DENSE_ROWS = 250_000  # above this, a range with many differing buckets is narrowed further
# Text, UUID and composite keys: segments of this many rows (their screens are sums, not digests),
# and a differing one up to half again as large (the row estimate's slack) settled by one (key, row
# hash) fetch per side: cheaper than sampling it and screening 32 sub-ranges on each side.
SAMPLED_SEGMENT_ROWS = 8_192
SAMPLED_DIRECT_ROWS = SAMPLED_SEGMENT_ROWS * 3 // 2
_count_lock = threading.Lock()
T = TypeVar("T")


@dataclass
class Narrowing:
    """What every step of one diff shares: both sides, the key rules, limits and the side pool."""

    source: Side
    target: Side
    key_rules: list[ColumnRule]
    row_threshold: int
    pool: Executor
    integer_span: tuple[int, int] | None = None  # [min, max] of an integer key over both sides
    limit: int = 10_000  # max_differences: past this many candidate keys the diff stops
    found: int = 0
    differing: int = 0  # segments whose screen differed (narrowed further)
    dense: bool = False  # the last bucket scan found differences in most buckets
    source_rows: int = 0  # counted, or the engine's estimate until ``counted``
    target_rows: int = 0
    counted: bool = True  # False: the totals are the screened segments' counts (``screened``)
    screened: list[int] = field(default_factory=lambda: [0, 0])  # rows screened: source, target
    stats: tuple[TableStats, TableStats] = (TableStats(None, None), TableStats(None, None))
    stop: threading.Event = field(default_factory=threading.Event)
    progress: Callable[[], None] | None = None  # a distributed worker's: each step that returned

    def both(self, fn: Callable[..., T], *args: Any) -> tuple[T, T]:
        """Run ``fn(side, *args)`` on the source and the target at the same time."""
        s = self.pool.submit(fn, self.source, *args)
        t = self.pool.submit(fn, self.target, *args)
        results = s.result(), t.result()
        if self.progress is not None:
            self.progress()
        return results


def candidate_keys(n: Narrowing, rng: KeyRange) -> list[Key]:
    """Keys in ``rng`` whose rows may differ (their row hashes differ or one side lacks them)."""
    if n.stop.is_set():
        return []
    if n.integer_span is not None:
        # A plain screen first: most segments are equal, and a grouped scan costs more.
        screen = range_checksum if n.source.fast_hash else range_digest
        src, tgt = n.both(screen, rng)
        with _count_lock:
            n.screened[0] += src[0]
            n.screened[1] += tgt[0]
        if src == tgt and (src[0] == 0 or None not in (src[1], tgt[1])):
            return []  # equal, or empty on both sides (an empty range has no digest)
        _count_differing(n)
        if n.dense and max(src[0], tgt[0]) <= DENSE_ROWS:
            # the last narrowed segment differed everywhere: skip this one's bucket scan
            keys = _row_candidates(n, rng)
            n.dense = len(keys) > FANOUT // 4
            return keys
        return _integer_candidates(n, rng)
    return _sampled_candidates(n, rng, top=True)


def _count_differing(n: Narrowing) -> None:
    with _count_lock:
        n.differing += 1


def _integer_candidates(n: Narrowing, rng: KeyRange) -> list[Key]:
    assert n.integer_span is not None
    start, end = integer_span(rng, *n.integer_span)
    if end < start:
        return []
    width = max(1, -(-(end - start + 1) // FANOUT))
    src, tgt = n.both(bucket_checksums, rng, start, width)
    differing = [b for b in sorted(src.keys() | tgt.keys()) if src.get(b, (0, 0)) != tgt.get(b, (0, 0))]
    rows = max(sum(c for c, _ in src.values()), sum(c for c, _ in tgt.values()))
    n.dense = len(differing) > FANOUT // 4
    if n.dense and rows <= DENSE_ROWS:
        return _row_candidates(n, rng)  # differences everywhere: one fetch beats many small ones
    out: list[Key] = []
    small: list[int] = []
    for bucket in differing:
        a, b = src.get(bucket, (0, 0)), tgt.get(bucket, (0, 0))
        if width == 1 or max(a[0], b[0]) <= n.row_threshold:
            small.append(bucket)
        else:
            out.extend(_integer_candidates(n, _bucket_range(start, width, bucket, bucket)))
        if n.stop.is_set():
            return out
    for first, last in _runs(small):
        out.extend(_row_candidates(n, _bucket_range(start, width, first, last)))
    return out


def _bucket_range(start: int, width: int, first: int, last: int) -> KeyRange:
    return KeyRange((start + first * width - 1,), (start + (last + 1) * width - 1,))


def _runs(buckets: list[int]) -> list[tuple[int, int]]:
    """Consecutive bucket numbers merged into (first, last) runs: one query per run."""
    runs: list[tuple[int, int]] = []
    for b in buckets:
        if runs and runs[-1][1] == b - 1:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((b, b))
    return runs


def _sampled_candidates(n: Narrowing, rng: KeyRange, *, top: bool = False) -> list[Key]:
    src, tgt = n.both(range_checksum, rng)
    if src == tgt:
        return []
    if top:
        _count_differing(n)
    if max(src[0], tgt[0]) <= (SAMPLED_DIRECT_ROWS if top else n.row_threshold):
        return _row_candidates(n, rng)
    subs = sampled_ranges(n.source.engine, n.source.table, n.source.key, rng, FANOUT, src[0])
    if len(subs) == 1:
        return _row_candidates(n, rng)
    out: list[Key] = []
    for sub in subs:
        out.extend(_sampled_candidates(n, sub))
        if n.stop.is_set():
            break
    return out


def _texts_are_keys(n: Narrowing) -> bool:
    """Every key column is text (no trimming) or an integer: its SQL text is the key itself."""
    return all(r.kind == "integer" or (r.kind == "text" and not r.pad) for r in n.key_rules)


def _text_key_differences(n: Narrowing, a: dict[tuple[str, ...], str], b: dict[tuple[str, ...], str]) -> list[Key]:
    texts = [k for k, h in a.items() if b.get(k) != h] + [k for k in b.keys() - a.keys()]
    kinds = [r.kind for r in n.key_rules]
    return [tuple(int(v) if kind == "integer" else v for v, kind in zip(t, kinds, strict=True)) for t in texts]


def _int_key_differences(a: dict[int, Any], b: dict[int, Any]) -> list[Key]:
    return [(k,) for k, h in a.items() if b.get(k) != h] + [(k,) for k in b.keys() - a.keys()]


def _keyed_differences(n: Narrowing, src: list[Any], tgt: list[Any]) -> list[Key]:
    width = len(n.key_rules)
    src_map = {key_token(n.key_rules, r[:width]): (tuple(r[:width]), r[width]) for r in src}
    tgt_map = {key_token(n.key_rules, r[:width]): (tuple(r[:width]), r[width]) for r in tgt}
    out = []
    for token in src_map.keys() | tgt_map.keys():
        a, b = src_map.get(token), tgt_map.get(token)
        if a is None or b is None or a[1] != b[1]:
            out.append((a or b)[0])  # type: ignore[index]
    return out


def _row_candidates(n: Narrowing, rng: KeyRange) -> list[Key]:
    """Compare (key, row hash) pairs of a range; return keys that differ or are one-sided."""
    integer = len(n.key_rules) == 1 and n.key_rules[0].kind == "integer"
    maps = n.both(int_key_hashes, rng) if integer else None  # the hot path: one string per side
    keyed = n.both(keyed_hashes, rng) if not integer and _texts_are_keys(n) else None
    if maps is not None and maps[0] is not None and maps[1] is not None:
        out = _int_key_differences(maps[0], maps[1])
    elif keyed is not None and keyed[0] is not None and keyed[1] is not None:
        out = _text_key_differences(n, keyed[0], keyed[1])
    else:
        src, tgt = n.both(row_hashes, rng)
        out = _int_key_differences(dict(src), dict(tgt)) if integer else _keyed_differences(n, src, tgt)
    with _count_lock:
        n.found += len(out)
        if n.found > n.limit:
            n.stop.set()
    return out
