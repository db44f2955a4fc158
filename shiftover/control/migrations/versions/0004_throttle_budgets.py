"""one rows/s budget per migration, shared by distributed backfill workers

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "so_throttle_budgets",
        sa.Column("migration", sa.String(length=200), nullable=False),
        sa.Column("next_slot", sa.Double(), nullable=False, server_default="0"),
        sa.Column("drawn_at", sa.Double(), nullable=True),
        sa.Column("granted_rows", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("grants", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("migration"),
    )


def downgrade() -> None:
    op.drop_table("so_throttle_budgets")
