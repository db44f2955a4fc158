"""epoch and lease on migrations, approval requests, queue direction

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("so_migrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("epoch", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("lease_holder", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("so_reconcile_queue", schema=None) as batch_op:
        batch_op.add_column(sa.Column("direction", sa.String(length=10), nullable=True))
    op.create_table(
        "so_approval_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("migration", sa.String(length=200), nullable=False),
        sa.Column("step", sa.String(length=60), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_by", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("so_approval_requests", schema=None) as batch_op:
        batch_op.create_index("ix_so_approval_requests_pending", ["migration", "state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("so_approval_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_so_approval_requests_pending")
    op.drop_table("so_approval_requests")
    with op.batch_alter_table("so_reconcile_queue", schema=None) as batch_op:
        batch_op.drop_column("direction")
    with op.batch_alter_table("so_migrations", schema=None) as batch_op:
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_holder")
        batch_op.drop_column("epoch")
