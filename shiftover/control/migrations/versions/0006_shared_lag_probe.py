"""one lag probe for all workers: the last reading on the throttle budget row

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("so_throttle_budgets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lag_value", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("lag_read_at", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("lag_probe_until", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("so_throttle_budgets", schema=None) as batch_op:
        batch_op.drop_column("lag_probe_until")
        batch_op.drop_column("lag_read_at")
        batch_op.drop_column("lag_value")
