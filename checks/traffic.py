"""Gates on live traffic: shadow-read mismatches, the reconciliation queue, secondary write
errors, and a declared lag query. Counters come from ``so_metrics``, which dual-writers fill
in batches; the window starts at the migration's latest phase change (a canary step re-enters
its phase, so each step is judged on its own traffic)."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from shiftover.checks.context import GateContext, GateResult
from shiftover.checks.report import markdown_table
from shiftover.control.store import utcnow
from shiftover.metrics import error_rate, mismatch_rate, recent_mismatches, shadow_errors
from shiftover.migration import Migration
from shiftover.reconcile import dead_entries, queue_depth
from shiftover.spec import GateSpec

DEFAULT_ERROR_RATE = 0.01


def traffic_window(migration: Migration) -> datetime:
    """When the current phase began (or an hour ago when the audit log has no phase entry)."""
    changes = migration.store.history(migration.name)
    if not changes:
        return utcnow() - timedelta(hours=1)
    return changes[-1].at


def shadow_mismatch(ctx: GateContext, spec: GateSpec) -> GateResult:
    migration = ctx.migration
    threshold = 0.0 if spec.threshold is None else spec.threshold
    since = traffic_window(migration)
    reads, mismatches = mismatch_rate(migration.store.engine, migration.name, since)
    errors = shadow_errors(migration.store.engine, migration.name, since)
    metrics = {
        "reads": reads,
        "mismatches": mismatches,
        "errors": errors,
        "threshold": threshold,
        "since": since.isoformat(),
    }
    if reads + errors == 0:
        return GateResult(
            "shadow_mismatch", True, f"no shadow reads since {since:%H:%M:%S}: nothing to compare", metrics=metrics
        )
    # A comparison that could not run (the new side failed to read, say) counts against the rate:
    # a new store that errors on every read must not pass as one with nothing to disagree about.
    rate = (mismatches + errors) / (reads + errors)
    metrics["rate"] = rate
    samples = recent_mismatches(migration.store.engine, migration.name, since)
    rows = [
        {
            "key": s["key_json"],
            "columns": ", ".join(s["columns"] or []),
            "old": str(s["old_value"]),
            "new": str(s["new_value"]),
        }
        for s in samples
    ]
    passed = rate <= threshold
    summary = f"{mismatches} of {reads} shadow reads differ ({rate:.4%}; allowed {threshold:.4%})"
    if errors:
        summary = (
            f"{mismatches} of {reads} shadow reads differ and {errors} could not be compared (shadow errors: "
            f"the dual-reader's log says why); {rate:.4%} of {reads + errors} failed, allowed {threshold:.4%}"
        )
    return GateResult(
        "shadow_mismatch",
        passed,
        summary,
        rows=rows,
        metrics=metrics,
        markdown=_table("Shadow-read mismatches", rows),
    )


def reconcile_drained(ctx: GateContext, spec: GateSpec) -> GateResult:
    migration = ctx.migration
    depth = queue_depth(migration.store.engine, migration.name)
    passed = depth["pending"] == 0 and depth["dead"] == 0
    rows = [
        {"key": d["key_json"], "op": d["op"], "attempts": d["attempts"], "error": d["last_error"] or ""}
        for d in dead_entries(migration.store.engine, migration.name)
    ]
    summary = (
        "reconciliation queue drained"
        if passed
        else f"{depth['pending']} key(s) pending and {depth['dead']} dead in the reconciliation queue: "
        "run the reconcile flow; dead keys need their cause fixed, then `retry_dead`"
    )
    return GateResult(
        "reconcile_drained",
        passed,
        summary,
        rows=rows,
        metrics=dict(depth),
        markdown=_table("Dead-lettered keys", rows, total=depth["dead"]),
    )


def secondary_error_rate(ctx: GateContext, spec: GateSpec) -> GateResult:
    migration = ctx.migration
    threshold = DEFAULT_ERROR_RATE if spec.threshold is None else spec.threshold
    since = traffic_window(migration)
    writes, errors = error_rate(migration.store.engine, migration.name, since)
    rate = errors / writes if writes else 0.0
    metrics = {"secondary_writes": writes, "secondary_errors": errors, "rate": rate, "threshold": threshold}
    summary = f"{errors} of {writes} secondary writes failed ({rate:.4%}; allowed {threshold:.4%})"
    return GateResult("error_rate", rate <= threshold, summary, metrics=metrics)


def lag(ctx: GateContext, spec: GateSpec) -> GateResult:
    migration = ctx.migration
    backfill = migration.spec.backfill
    threshold = spec.threshold if spec.threshold is not None else backfill.lag_threshold
    if backfill.lag_query is None or threshold is None:
        return GateResult("lag", True, "no lag query declared (backfill.lag_query): nothing to check")
    with migration.source.connect() as conn:
        value = conn.execute(sa.text(backfill.lag_query)).scalar()
    measured = float(value) if value is not None else 0.0
    passed = measured <= threshold
    summary = f"lag {measured:g} {'≤' if passed else '>'} {threshold:g} ({backfill.lag_query})"
    return GateResult("lag", passed, summary, metrics={"lag": measured, "threshold": threshold})


def _table(title: str, rows: list[dict[str, object]], total: int | None = None) -> str:
    return f"### {title}\n\n{markdown_table(rows, total)}" if rows else ""
