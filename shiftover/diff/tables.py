"""The diff of a table pair: plan segments, narrow each to candidate keys, compare rows.

``diff_tables`` is the plain entry point the checksum gate, the cutover re-check and the
demo call; ``diff_keys`` re-checks a known set of keys (after a repair, or the keys the
reconciliation queue touched). Both check the column mapping before any work (``diff_tables``
also the key values: no NULLs, no duplicates) and raise DiffError.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.engine import Engine

from shiftover.diff.bisect import SAMPLED_SEGMENT_ROWS, Narrowing, candidate_keys
from shiftover.diff.checksum import Side, build_side, key_bounds, table_stats
from shiftover.diff.failures import DiffProgress
from shiftover.diff.normalize import ColumnRule
from shiftover.diff.report import Difference, DiffReport, Key
from shiftover.diff.rows import compare_keys, key_token, python_column_keys
from shiftover.diff.rules import build_rules, check_keys
from shiftover.diff.segments import KeyRange, integer_ranges, sampled_ranges
from shiftover.engines import dialect_for
from shiftover.errors import DiffError
from shiftover.mapping import TableMapping
from shiftover.spec import ValidationSpec

SEGMENT_ROWS = 32_768  # large tables get more segments: a differing row costs a narrowing scan of its segment
SEGMENT_BYTES = 64 * 2**20  # and wide rows more again: a segment's joined text stays far below 1 GB


@dataclass(frozen=True)
class DiffPlan:
    """Everything checked and built before the first checksum query."""

    source: Side
    target: Side
    rules: list[ColumnRule]
    mapping: TableMapping
    options: ValidationSpec

    @property
    def key_rules(self) -> list[ColumnRule]:
        """The key columns' rules (``build_rules`` puts them first, in key order)."""
        return self.rules[: len(self.mapping.key)]


def plan_diff(
    source: Engine,
    target: Engine,
    mapping: TableMapping,
    options: ValidationSpec,
    *,
    since: datetime | None = None,
    since_column: str = "updated_at",
    check_key_values: bool = True,
) -> DiffPlan:
    """Rules and both sides' hash SQL; DiffError for any input the diff cannot handle."""
    rules = build_rules(source, target, mapping, options)
    src_table, tgt_table = mapping.source_table_obj(source), mapping.target_table_obj(target)
    if check_key_values:
        check_keys(source, src_table, mapping.key, "source")
        check_keys(target, tgt_table, mapping.target_key, "target")
    versions = {
        side: dialect_for(engine).postgres_major(engine) for side, engine in (("source", source), ("target", target))
    }
    _check_postgres(versions, rules)
    fast = None not in versions.values() and versions["source"] == versions["target"]
    src = build_side(source, src_table, mapping.key, rules, source=True, fast_hash=fast)
    tgt = build_side(target, tgt_table, mapping.target_key, rules, source=False, fast_hash=fast)
    if since is not None:
        src, tgt = _since(src, tgt, mapping, since, since_column)
    return DiffPlan(src, tgt, rules, mapping, options)


def _check_postgres(versions: dict[str, int | None], rules: list[ColumnRule]) -> None:
    """Timestamps across engines are compared as extract(epoch) text, which has six decimals from
    PostgreSQL 14 (a same-engine pair of one type compares the engine's own text, any version)."""
    if not any(r.kind == "timestamp" and "extract(epoch" in r.source_sql + r.target_sql for r in rules):
        return
    for side, major in versions.items():
        if major is not None and major < 14:
            raise DiffError(
                f"the {side} is PostgreSQL {major}; comparing timestamps needs PostgreSQL 14 or newer "
                "(upgrade, or list the timestamp columns in validation.exclude)"
            )


def _since(src: Side, tgt: Side, mapping: TableMapping, since: datetime, column: str) -> tuple[Side, Side]:
    by_source = {c.source: c.target for c in mapping.columns if c.sql is None}
    if column not in by_source or column not in src.table.c:
        raise DiffError(f"cannot limit the diff to rows changed since {since}: no column {column!r} in the source")

    def limited(side: Side, name: str) -> Side:
        quoted = side.engine.dialect.identifier_preparer.quote(name)
        return replace(side, filter_sql=f"{quoted} >= :so_since", filter_params=(("so_since", since),))

    return limited(src, column), limited(tgt, by_source[column])


def diff_tables(
    source: Engine,
    target: Engine,
    mapping: TableMapping,
    options: ValidationSpec,
    *,
    since: datetime | None = None,
    since_column: str = "updated_at",
    progress: DiffProgress | None = None,
    workers: int = 2,
) -> DiffReport:
    """Compare the whole table pair (or rows changed ``since``) segment by segment in parallel.

    ``progress`` records each finished segment in the control store, so a crashed run called
    again with the same run id skips what it already compared.
    """
    started = time.perf_counter()
    plan = plan_diff(source, target, mapping, options, since=since, since_column=since_column)
    report = DiffReport(table=mapping.target_table, run_id=progress.run_id if progress else None)
    with ThreadPoolExecutor(max_workers=2 * workers, thread_name_prefix="so-diff-side") as side_pool:
        saved = progress.load_segments() if progress is not None else []
        narrowing = _narrowing(plan, side_pool, count=bool(saved))
        segments = saved or _segments(plan, narrowing, progress)
        report.segments = len(segments)
        todo = [(i, rng) for i, (rng, done) in enumerate(segments) if not done]
        if progress is not None:
            report.differences.extend(progress.recorded_differences())
            report.segments_resumed = report.segments - len(todo)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="so-diff-seg") as seg_pool:
            for i, found in zip(
                [i for i, _ in todo],
                seg_pool.map(lambda job: _segment(plan, narrowing, job[1]), todo),
                strict=True,
            ):
                if progress is not None:
                    progress.finish_segment(i, found)
                report.differences.extend(found)
                if len(report.differences) > options.max_differences:
                    narrowing.stop.set()
    report.differences = _unique(plan, report.differences)
    _totals(report, narrowing, options.max_differences)
    report.seconds = time.perf_counter() - started
    return report


def _narrowing(plan: DiffPlan, pool: ThreadPoolExecutor, *, count: bool) -> Narrowing:
    """Key bounds of both sides, and the row counts unless the segments can report them.

    An integer key's segments are screened with their row counts, so a full count (0.6 s of a
    2M-row MariaDB table) is skipped when both engines' statistics can size the segments; a
    resumed run (whose finished segments are not screened again) counts.
    """
    n = Narrowing(
        plan.source, plan.target, plan.key_rules, plan.options.row_threshold, pool, limit=plan.options.max_differences
    )
    integer = len(plan.mapping.key) == 1 and plan.rules[0].kind == "integer"
    n.stats = n.both(table_stats)
    estimates: tuple[int | None, int | None] = (None, None)
    if integer and not count and plan.source.filter_sql is None:
        estimates = (n.stats[0].rows, n.stats[1].rows)
    n.counted = None in estimates
    (slo, shi, src_rows), (tlo, thi, tgt_rows) = n.both(key_bounds, n.counted)
    n.source_rows = src_rows if src_rows is not None else estimates[0] or 0
    n.target_rows = tgt_rows if tgt_rows is not None else estimates[1] or 0
    if integer:
        lows = [int(v) for v in (slo, tlo) if v is not None]
        highs = [int(v) for v in (shi, thi) if v is not None]
        n.integer_span = (min(lows), max(highs)) if lows else (0, -1)
    return n


def _segments(plan: DiffPlan, n: Narrowing, progress: DiffProgress | None) -> list[tuple[KeyRange, bool]]:
    stored = max(stats.bytes or 0 for stats in n.stats)
    # A MariaDB/MySQL GROUP_CONCAT stops at max_allowed_packet (16 MiB by default) whatever
    # group_concat_max_len says. Half of it in stored bytes: a text-heavy row renders to about its
    # stored size; where it renders larger (binary as hex), a segment falls back to the sums.
    per_segment = min([SEGMENT_BYTES] + [s.max_packet // 2 for s in n.stats if s.max_packet])
    per_rows = min(dialect_for(side.engine).segment_rows or SEGMENT_ROWS for side in (plan.source, plan.target))
    if n.integer_span is None:
        per_rows = min(per_rows, SAMPLED_SEGMENT_ROWS)
    parts = max(
        plan.options.segments,
        -(-max(n.source_rows, n.target_rows) // per_rows),
        -(-stored // per_segment),
    )
    if n.integer_span is not None:
        lo, hi = n.integer_span
        ranges = integer_ranges(lo, hi, parts) if hi >= lo else [KeyRange(None, None)]
    else:
        whole = KeyRange(None, None)
        ranges = sampled_ranges(plan.source.engine, plan.source.table, plan.source.key, whole, parts, n.source_rows)
    if progress is not None:
        progress.save_segments(ranges)
    return [(r, False) for r in ranges]


def _segment(plan: DiffPlan, n: Narrowing, rng: KeyRange) -> list[Difference]:
    if n.stop.is_set():
        return []
    keys = candidate_keys(n, rng)
    keys += python_column_keys(plan.source, plan.target, plan.mapping, plan.rules, plan.options, rng)
    diffs = compare_keys(plan.source, plan.target, plan.mapping, plan.rules, plan.options, keys)
    return _sorted(plan, diffs)


def _sorted(plan: DiffPlan, diffs: list[Difference]) -> list[Difference]:
    try:
        return sorted(diffs, key=lambda d: d.key)
    except TypeError:
        return sorted(diffs, key=lambda d: key_token(plan.key_rules, d.key))  # type: ignore[arg-type]


def _unique(plan: DiffPlan, diffs: list[Difference]) -> list[Difference]:
    """One entry per key: with collations that order text keys differently on the two engines,
    a key can fall in one segment on the source and another on the target."""
    seen: dict[tuple[str | None, ...], Difference] = {}
    for d in diffs:
        seen.setdefault(key_token(plan.key_rules, d.key), d)
    return list(seen.values())


def _totals(report: DiffReport, n: Narrowing, limit: int) -> None:
    if not n.counted and n.stop.is_set():  # stopped early: not every segment was screened
        n.source_rows, n.target_rows = (key_bounds(side)[2] or 0 for side in (n.source, n.target))
    elif not n.counted:
        n.source_rows, n.target_rows = n.screened
    report.source_rows, report.target_rows = n.source_rows, n.target_rows
    report.segments_differing = n.differing
    report.truncated = n.stop.is_set()
    del report.differences[limit:]


def diff_keys(
    source: Engine, target: Engine, mapping: TableMapping, options: ValidationSpec, keys: Iterable[Key]
) -> DiffReport:
    """Compare just ``keys`` (row images fetched by key): the re-check after a repair."""
    started = time.perf_counter()
    plan = plan_diff(source, target, mapping, options, check_key_values=False)
    keys = [tuple(k) for k in keys]
    diffs = compare_keys(plan.source, plan.target, plan.mapping, plan.rules, options, keys)
    report = DiffReport(table=mapping.target_table, differences=_sorted(plan, diffs), source_rows=len(keys))
    report.seconds = time.perf_counter() - started
    return report
