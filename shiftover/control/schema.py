"""The control store's tables. Alembic revisions in ``migrations/versions`` create them.

Every domain module (flags, backfill checkpoints, reconciliation, diff) reads and writes
its own tables here through SQLAlchemy Core; ``store.ControlStore`` owns the connection.
Keys of user rows are stored as canonical JSON text (``key_json``) so any key shape fits.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from shiftover.engines import bigint_id

metadata = sa.MetaData()


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timestamps stored in UTC and read back time-zone aware on every engine (SQLite and
    MySQL keep no zone, so their values come back naive: they are UTC by construction)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


KEY = sa.String(512)  # canonical JSON of a row key; bounded so MySQL can index it

migrations = sa.Table(
    "so_migrations",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("phase", sa.String(40), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # The version of the migration's state: bumped by every phase change, rollback and change of
    # lease holder, so an approval or a flip decided at an older state is refused.
    sa.Column("epoch", sa.Integer, nullable=False, server_default="0"),
    # The one run that may act on the migration (``control.lease``): who, and until when.
    sa.Column("lease_holder", sa.String(200)),
    sa.Column("lease_expires_at", UTCDateTime()),
)

# Approval requests: each names the step and the epoch it was asked at; an answer counts only
# while the request is pending and the migration is still at that epoch (``approvals``).
approval_requests = sa.Table(
    "so_approval_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("migration", sa.String(200), nullable=False),
    sa.Column("step", sa.String(60), nullable=False),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("holder", sa.String(200), nullable=False),  # the run that asked (its lease holder id)
    sa.Column("state", sa.String(12), nullable=False),  # pending | approved | refused | cancelled | timed_out
    sa.Column("requested_at", UTCDateTime(), nullable=False),
    sa.Column("answered_at", UTCDateTime()),
    sa.Column("answered_by", sa.String(200)),
    sa.Column("detail", sa.JSON),
    sa.Index("ix_so_approval_requests_pending", "migration", "state"),
)

audit_log = sa.Table(
    "so_audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("migration", sa.String(200), nullable=False, index=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),  # phase | approval | flag | repair | gate | ...
    sa.Column("detail", sa.JSON, nullable=False),
)

checkpoints = sa.Table(
    "so_checkpoints",
    metadata,
    sa.Column("migration", sa.String(200), primary_key=True),
    sa.Column("segment", sa.Integer, primary_key=True),
    sa.Column("lo", sa.Text),  # JSON key, exclusive lower bound (NULL: open)
    sa.Column("hi", sa.Text),  # JSON key, inclusive upper bound (NULL: open)
    sa.Column("last_key", sa.Text),  # JSON key of the last committed row
    sa.Column("rows_copied", sa.BigInteger, nullable=False, default=0),
    sa.Column("state", sa.String(20), nullable=False),  # pending | running | done | failed
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # A distributed backfill's worker holding the segment (``backfill.leases``), until when, and
    # its last heartbeat; NULL holder: free. An expired lease may be taken by another worker.
    sa.Column("lease_holder", sa.String(200)),
    sa.Column("lease_expires_at", UTCDateTime()),
    sa.Column("heartbeat_at", UTCDateTime()),
)

flags = sa.Table(
    "so_flags",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

reconcile_queue = sa.Table(
    "so_reconcile_queue",
    metadata,
    sa.Column("id", bigint_id(), primary_key=True, autoincrement=True),
    sa.Column("migration", sa.String(200), nullable=False),
    sa.Column("key_json", KEY, nullable=False),
    sa.Column("op", sa.String(10), nullable=False),  # upsert | delete
    # old->new | new->old: the direction of the write that failed, fixed when it was queued (NULL:
    # queued before directions were recorded; follows the write mode)
    sa.Column("direction", sa.String(10)),
    sa.Column("state", sa.String(10), nullable=False),  # pending | done | dead
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("enqueued_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_so_reconcile_pending", "migration", "state", "id"),
)

validation_failures = sa.Table(
    "so_validation_failures",
    metadata,
    sa.Column("id", bigint_id(), primary_key=True, autoincrement=True),
    sa.Column("migration", sa.String(200), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("key_json", KEY, nullable=False),
    sa.Column("kind", sa.String(10), nullable=False),  # missing | extra | changed
    sa.Column("columns", sa.JSON),
    sa.Column("detail", sa.JSON),
    sa.Column("found_at", UTCDateTime(), nullable=False),
    sa.Column("repaired_at", UTCDateTime()),
    sa.Index("ix_so_validation_failures_run", "migration", "run_id"),
)

diff_segments = sa.Table(
    "so_diff_segments",
    metadata,
    sa.Column("migration", sa.String(200), primary_key=True),
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("segment", sa.Integer, primary_key=True),
    sa.Column("lo", sa.Text),
    sa.Column("hi", sa.Text),
    sa.Column("state", sa.String(10), nullable=False),  # pending | equal | differ
    sa.Column("differences", sa.Integer, nullable=False, default=0),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # A distributed diff (``diff.distributed``): the worker holding the segment, until when, its
    # last heartbeat (``control.segment_leases``); the worker that finished it, the rows it screened
    # on each side and how many of its screens differed (the report's totals add these up).
    sa.Column("lease_holder", sa.String(200)),
    sa.Column("lease_expires_at", UTCDateTime()),
    sa.Column("heartbeat_at", UTCDateTime()),
    sa.Column("done_by", sa.String(200)),
    sa.Column("source_rows", sa.BigInteger),
    sa.Column("target_rows", sa.BigInteger),
    sa.Column("narrowed", sa.Integer),
)

gate_results = sa.Table(
    "so_gate_results",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("migration", sa.String(200), nullable=False, index=True),
    sa.Column("stage", sa.String(40), nullable=False),
    sa.Column("gate", sa.String(60), nullable=False),
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("blocking", sa.Boolean, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("report", sa.JSON),
    sa.Column("at", UTCDateTime(), nullable=False),
)

shadow_mismatches = sa.Table(
    "so_shadow_mismatches",
    metadata,
    sa.Column("id", bigint_id(), primary_key=True, autoincrement=True),
    sa.Column("migration", sa.String(200), nullable=False),
    sa.Column("key_json", KEY, nullable=False),
    sa.Column("columns", sa.JSON),
    sa.Column("old_value", sa.JSON),
    sa.Column("new_value", sa.JSON),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Index("ix_so_shadow_mismatches_at", "migration", "at"),
)

# Counters the application side reports in batches (shadow reads, mismatches, secondary
# write errors, latencies); gates sum them over a time window.
metrics = sa.Table(
    "so_metrics",
    metadata,
    sa.Column("id", bigint_id(), primary_key=True, autoincrement=True),
    sa.Column("migration", sa.String(200), nullable=False),
    sa.Column("name", sa.String(60), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Index("ix_so_metrics_window", "migration", "name", "at"),
)

# A distributed backfill's one rows/s budget (``backfill.budget``): every worker reserves its next
# chunk's rows here with one UPDATE, so N workers share the cap instead of taking N times it.
# Times are the control store's own clock (seconds since the epoch), never a worker's.
throttle_budgets = sa.Table(
    "so_throttle_budgets",
    metadata,
    sa.Column("migration", sa.String(200), primary_key=True),
    # when the next reservation may start: each grant of r rows at rate c moves it r/c past
    # max(itself, now), so the grants' slots never overlap (a cluster-wide virtual schedule)
    sa.Column("next_slot", sa.Double, nullable=False, server_default="0"),
    sa.Column("drawn_at", sa.Double),  # the store's clock at the last grant
    sa.Column("granted_rows", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("grants", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # the cluster's one lag probe (``backfill.budget.shared_lag``): the last reading of the spec's
    # lag query and when it was taken, and until when a worker holds the claim to take the next
    sa.Column("lag_value", sa.Double),
    sa.Column("lag_read_at", sa.Double),
    sa.Column("lag_probe_until", sa.Double),
)
