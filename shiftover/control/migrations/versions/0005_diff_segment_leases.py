"""segment leases and per-segment totals on diff segments (distributed validation diff workers)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("so_diff_segments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_holder", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("done_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("source_rows", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("target_rows", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("narrowed", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("so_diff_segments", schema=None) as batch_op:
        batch_op.drop_column("narrowed")
        batch_op.drop_column("target_rows")
        batch_op.drop_column("source_rows")
        batch_op.drop_column("done_by")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_holder")
