"""initial control store

Revision ID: 0001
Revises:
Create Date: 2026-11-25 12:32:48.982302
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "so_audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("migration", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("so_audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_so_audit_log_migration"), ["migration"], unique=False)

    op.create_table(
        "so_checkpoints",
        sa.Column("migration", sa.String(length=200), nullable=False),
        sa.Column("segment", sa.Integer(), nullable=False),
        sa.Column("lo", sa.Text(), nullable=True),
        sa.Column("hi", sa.Text(), nullable=True),
        sa.Column("last_key", sa.Text(), nullable=True),
        sa.Column("rows_copied", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("migration", "segment"),
    )
    op.create_table(
        "so_diff_segments",
        sa.Column("migration", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("segment", sa.Integer(), nullable=False),
        sa.Column("lo", sa.Text(), nullable=True),
        sa.Column("hi", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("differences", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("migration", "run_id", "segment"),
    )
    op.create_table(
        "so_flags",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "so_gate_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("migration", sa.String(length=200), nullable=False),
        sa.Column("stage", sa.String(length=40), nullable=False),
        sa.Column("gate", sa.String(length=60), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("blocking", sa.Boolean(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("so_gate_results", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_so_gate_results_migration"), ["migration"], unique=False)

    op.create_table(
        "so_metrics",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("migration", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("so_metrics", schema=None) as batch_op:
        batch_op.create_index("ix_so_metrics_window", ["migration", "name", "at"], unique=False)

    op.create_table(
        "so_migrations",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("phase", sa.String(length=40), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "so_reconcile_queue",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("migration", sa.String(length=200), nullable=False),
        sa.Column("key_json", sa.String(length=512), nullable=False),
        sa.Column("op", sa.String(length=10), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("so_reconcile_queue", schema=None) as batch_op:
        batch_op.create_index("ix_so_reconcile_pending", ["migration", "state", "id"], unique=False)

    op.create_table(
        "so_shadow_mismatches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("migration", sa.String(length=200), nullable=False),
        sa.Column("key_json", sa.String(length=512), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=True),
        sa.Column("old_value", sa.JSON(), nullable=True),
        sa.Column("new_value", sa.JSON(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("so_shadow_mismatches", schema=None) as batch_op:
        batch_op.create_index("ix_so_shadow_mismatches_at", ["migration", "at"], unique=False)

    op.create_table(
        "so_validation_failures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("migration", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("key_json", sa.String(length=512), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("repaired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("so_validation_failures", schema=None) as batch_op:
        batch_op.create_index("ix_so_validation_failures_run", ["migration", "run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("so_validation_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_so_validation_failures_run")

    op.drop_table("so_validation_failures")
    with op.batch_alter_table("so_shadow_mismatches", schema=None) as batch_op:
        batch_op.drop_index("ix_so_shadow_mismatches_at")

    op.drop_table("so_shadow_mismatches")
    with op.batch_alter_table("so_reconcile_queue", schema=None) as batch_op:
        batch_op.drop_index("ix_so_reconcile_pending")

    op.drop_table("so_reconcile_queue")
    op.drop_table("so_migrations")
    with op.batch_alter_table("so_metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_so_metrics_window")

    op.drop_table("so_metrics")
    with op.batch_alter_table("so_gate_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_so_gate_results_migration"))

    op.drop_table("so_gate_results")
    op.drop_table("so_flags")
    op.drop_table("so_diff_segments")
    op.drop_table("so_checkpoints")
    with op.batch_alter_table("so_audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_so_audit_log_migration"))

    op.drop_table("so_audit_log")
