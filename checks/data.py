"""Data gates: row parity, the checksum diff (with repair), and the expectations (the default
suite in plain SQL, the spec's declared expectations through Great Expectations).

Each gate is a plain function of ``(GateContext, GateSpec)``; the checksum gate compares
``ctx.scope`` (everything, rows changed since a time, or given keys) and the expectations
gate runs the spec's expectations for ``ctx.stage``. ``GateSpec.threshold`` is the number of
differences (or rows of count difference) tolerated; default zero.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from shiftover.checks.context import GateContext, GateResult
from shiftover.checks.live import CountBand, around_source_counts
from shiftover.checks.report import markdown_table
from shiftover.control import schema
from shiftover.control.store import key_from_json
from shiftover.default_checks import is_default, run_default_checks
from shiftover.diff import (
    Difference,
    DiffProgress,
    DiffReport,
    RepairResult,
    diff_keys,
    diff_tables,
    new_run_id,
    repair,
    unfinished_run,
)
from shiftover.diff.distributed import diff_distributed
from shiftover.diff.failures import save_differences
from shiftover.diff.report import Key
from shiftover.errors import DiffError
from shiftover.expectations import ExpectationOutcome, default_suite
from shiftover.migration import Migration
from shiftover.rowsync import count_rows
from shiftover.spec import Expectation, GateSpec

EVIDENCE_CAP = 1_000  # rows kept in a GateResult; artifacts show fewer


# -- row_count ------------------------------------------------------------------------------


def row_count_gate(ctx: GateContext, spec: GateSpec) -> GateResult:
    """Source and target hold the same number of rows (within ``threshold`` rows), allowing
    for application writes in flight while the counts are taken (see ``shiftover.checks.live``)."""
    migration, m = ctx.migration, ctx.migration.mapping
    tgt, band = around_source_counts(
        migration, lambda _src: count_rows(migration.target, m.target_table_obj(migration.target)), lambda n: n
    )
    tolerated = int(spec.threshold or 0)
    passed = band.low - tolerated <= tgt <= band.high + tolerated
    src = band.source_after
    summary = f"target {tgt} rows; {band.describe()}" + ("" if passed else f" (off by {tgt - src})")
    row = {
        "source_table": m.source_table,
        "source_rows": src,
        "target_table": m.target_table,
        "target_rows": tgt,
        "writes_in_flight": band.writes_in_window,
    }
    return GateResult(
        gate="row_count",
        passed=passed,
        summary=summary,
        rows=[row],
        markdown=markdown_table([row]),
        metrics={
            "source_rows": src,
            "target_rows": tgt,
            "tolerated": tolerated,
            "writes_in_flight": band.writes_in_window,
        },
    )


# -- checksum -------------------------------------------------------------------------------


def checksum_gate(ctx: GateContext, spec: GateSpec) -> GateResult:
    """Diff ``ctx.scope`` → record failures → repair (if the spec says so) → re-check the repaired keys."""
    migration, options = ctx.migration, ctx.migration.spec.validation
    try:
        report, run_id = _diff(migration, ctx)
    except DiffError as exc:
        return GateResult(gate="checksum", passed=False, summary=f"diff cannot run: {exc}", markdown=str(exc))
    remaining, repaired = report.differences, None
    if report.differences and options.repair:
        repaired = repair(
            migration.source,
            migration.target,
            migration.mapping,
            options,
            report.differences,
            store=migration.store,
            migration=migration.name,
            run_id=run_id,
            actor=ctx.actor,
        )
        remaining = repaired.remaining
    tolerated = int(spec.threshold or 0)
    passed = len(remaining) <= tolerated and not report.truncated
    summary = _checksum_summary(report, remaining, repaired, tolerated)
    markdown = _checksum_markdown(report, remaining, repaired)
    if ctx.scope.since is not None:  # a canary step's check: say what "rows" means here
        scoped = f"rows written during this step (since {ctx.scope.since:%H:%M:%S} UTC): {report.source_rows}"
        summary, markdown = f"{scoped}; {summary}", f"- {scoped}, compared with the new store\n{markdown}"
    return GateResult(
        gate="checksum",
        passed=passed,
        summary=summary,
        rows=_evidence(report, remaining),
        markdown=markdown,
        metrics=_checksum_metrics(report, remaining, repaired, tolerated),
    )


def _diff(migration: Migration, ctx: GateContext) -> tuple[DiffReport, str]:
    m, options, scope = migration, migration.spec.validation, ctx.scope
    if scope.keys is not None:
        run_id = new_run_id()
        report = diff_keys(m.source, m.target, m.mapping, options, scope.keys)
        save_differences(m.store.engine, m.name, run_id, report.differences)
        report.run_id = run_id
        return report, run_id
    run_id = (unfinished_run(m.store.engine, m.name) if scope.since is None else None) or new_run_id()
    if options.distributed is not None:
        report = diff_distributed(
            m,
            options.distributed,
            run_id,
            since=scope.since,
            since_column=scope.since_column,
            runner=ctx.diff_workers,
            tick=ctx.diff_tick,
        )
        return report, run_id
    progress = DiffProgress(m.store.engine, m.name, run_id)
    report = diff_tables(
        m.source, m.target, m.mapping, options, since=scope.since, since_column=scope.since_column, progress=progress
    )
    return report, run_id


def _checksum_summary(
    report: DiffReport, remaining: Sequence[Difference], repaired: RepairResult | None, tolerated: int
) -> str:
    if report.truncated:
        return f"{report.summary()}; fix the copy and re-run (the diff stopped early)"
    if not report.differences:
        return f"{report.summary()} in {report.seconds:.1f} s"
    fixed = (
        ""
        if repaired is None
        else f"; repaired {len(report.differences) - len(remaining)} in {repaired.rounds} round(s)"
    )
    left = f"; {len(remaining)} still differ" + (f" (tolerated: {tolerated})" if tolerated else "")
    return f"{report.summary()}{fixed}{left}"


def _evidence(report: DiffReport, remaining: Sequence[Difference]) -> list[dict[str, Any]]:
    still = {str(d.key) for d in remaining}
    return [{**d.as_row(), "repaired": str(d.key) not in still} for d in report.differences[:EVIDENCE_CAP]]


def _checksum_markdown(report: DiffReport, remaining: Sequence[Difference], repaired: RepairResult | None) -> str:
    counts = report.counts()
    lines = [
        f"- rows: source {report.source_rows}, target {report.target_rows}",
        (
            f"- segments: {report.segments} ({report.segments_differing} differed and were narrowed to rows, "
            f"{report.segments_resumed} resumed from run `{report.run_id}`)"
        ),
        (
            f"- differences: {len(report.differences)} (missing {counts['missing']}, extra {counts['extra']}, "
            f"changed {counts['changed']}){' — stopped at max_differences' if report.truncated else ''}"
        ),
    ]
    if repaired is not None:
        lines.append(
            f"- repair: {repaired.upserted} upserted, {repaired.deleted} deleted, {len(remaining)} still differ"
        )
    table = markdown_table(_evidence(report, remaining), total=len(report.differences))
    return "\n".join(lines) + ("\n\n" + table if table else "")


def _checksum_metrics(
    report: DiffReport, remaining: Sequence[Difference], repaired: RepairResult | None, tolerated: int
) -> dict[str, Any]:
    return {
        "run_id": report.run_id,
        "differences": len(report.differences),
        "evidence_total": len(report.differences),
        "remaining": len(remaining),
        "repaired": 0 if repaired is None else len(report.differences) - len(remaining),
        "truncated": report.truncated,
        "seconds": round(report.seconds, 3),
        "segments": report.segments,
        "segments_differing": report.segments_differing,
        "source_rows": report.source_rows,
        "target_rows": report.target_rows,
        "tolerated": tolerated,
    }


def queued_keys(migration: Migration) -> tuple[Key, ...]:
    """Keys the reconciliation queue has touched for this migration (any state)."""
    q = schema.reconcile_queue
    query = sa.select(q.c.key_json).where(q.c.migration == migration.name).distinct()
    with migration.store.engine.connect() as conn:
        return tuple(key_from_json(r) for (r,) in conn.execute(query))


# -- expectations ---------------------------------------------------------------------------


def expectations_gate(ctx: GateContext, spec: GateSpec) -> GateResult:
    """The spec's expectations for this stage plus the default suite, on the target; warnings never block.

    The default suite (key unique, key not null, row count) runs as plain SQL; Great Expectations
    runs only the expectations the spec declares, and is not imported when it declares none."""
    migration, m = ctx.migration, ctx.migration.mapping
    suite = merge_suites(default_suite(m.target_key), stage_expectations(migration, ctx.stage))
    started = time.perf_counter()
    try:
        outcomes, band = around_source_counts(
            migration, lambda source_rows: _run_suite(migration, suite, source_rows), counted_rows
        )
    except DiffError as exc:
        return GateResult(gate="expectations", passed=False, summary=str(exc), markdown=str(exc))
    outcomes = [settle_row_count(o, band) for o in outcomes]
    blocking = [o for o in outcomes if not o.success and o.severity == "blocking"]
    warnings = [o for o in outcomes if not o.success and o.severity == "warning"]
    summary = f"{len(outcomes) - len(blocking) - len(warnings)}/{len(outcomes)} expectations met"
    if blocking:
        summary += f"; failed: {', '.join(_named(o) for o in blocking)}"
    if warnings:
        summary += f"; warnings: {', '.join(_named(o) for o in warnings)}"
    rows = [o.as_row() for o in outcomes]
    return GateResult(
        gate="expectations",
        passed=not blocking,
        summary=summary,
        rows=rows,
        markdown=markdown_table(rows),
        metrics={
            "failed": len(blocking),
            "warnings": len(warnings),
            "source_rows": band.source_after,
            "checked_by_sql": sum(o.checked_by == "sql" for o in outcomes),
            "checked_by_great_expectations": sum(o.checked_by != "sql" for o in outcomes),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )


def _run_suite(migration: Migration, suite: Sequence[Expectation], source_rows: int) -> list[ExpectationOutcome]:
    """The default checks in SQL and the declared ones through GX, back in the suite's order."""
    m = migration.mapping
    in_sql = [is_default(e, m.target_key) for e in suite]
    declared = [e for e, sql in zip(suite, in_sql, strict=True) if not sql]
    gx: list[ExpectationOutcome] = []
    if declared:  # first: GX builds every expectation before any query, so a misspelt one fails at once
        from shiftover.expectations import run_expectations

        params = {"source_rows": source_rows}
        gx = run_expectations(migration.target, m.target_table, declared, schema=m.target_schema, parameters=params)
    checks = [e for e, sql in zip(suite, in_sql, strict=True) if sql]
    table = m.target_table_obj(migration.target)
    by_sql = iter(run_default_checks(migration.target, table, m.target_key, checks, source_rows))
    by_gx = iter(gx)
    return [next(by_sql) if sql else next(by_gx) for sql in in_sql]


def _named(outcome: ExpectationOutcome) -> str:
    """The expectation and what failed: its column, the failing rows or the observed count, a few examples."""
    column = outcome.kwargs.get("column") or outcome.kwargs.get("column_list")
    named = outcome.type + (f" on {column}" if column else "")
    if outcome.error or not outcome.observed:
        return named
    if outcome.type == "expect_table_row_count_to_equal":
        return f"{named} (target {outcome.observed} rows, expected {outcome.kwargs.get('value')})"
    examples = [v for v in outcome.sample if v != "None"][:3]  # GX lists NULLs as None: no example
    return f"{named} ({outcome.observed} rows" + (f", e.g. {', '.join(examples)})" if examples else ")")


def stage_expectations(migration: Migration, stage: str | None) -> list[Expectation]:
    """The spec's expectations for ``stage`` (those naming no stage run in every stage)."""
    return [e for e in migration.spec.expectations if not e.stages or stage is None or stage in e.stages]


def merge_suites(defaults: Sequence[Expectation], declared: Sequence[Expectation]) -> list[Expectation]:
    """The spec's expectations, then the default suite (key unique, key not null, row count) without repeats."""
    seen = {(e.type, repr(sorted(e.kwargs.items()))) for e in declared}
    return list(declared) + [e for e in defaults if (e.type, repr(sorted(e.kwargs.items()))) not in seen]


def counted_rows(outcomes: Sequence[ExpectationOutcome]) -> int | None:
    """The target's row count as the row-count expectation observed it (None without one)."""
    for o in outcomes:
        if o.type == "expect_table_row_count_to_equal" and o.observed.isdigit():
            return int(o.observed)
    return None


def settle_row_count(outcome: ExpectationOutcome, band: CountBand) -> ExpectationOutcome:
    """A row-count-equal expectation that failed only by writes in flight passes, saying so."""
    if outcome.success or outcome.type != "expect_table_row_count_to_equal" or not outcome.observed.isdigit():
        return outcome
    if not band.holds(int(outcome.observed)):
        return outcome
    note = f"target {outcome.observed} rows; {band.describe()}"
    return replace(outcome, success=True, error=note)
