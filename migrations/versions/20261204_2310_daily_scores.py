"""The score history: each unit's score of a period as it stood at the end of each day.

Revision ID: 20261204_2310
Revises: 20261204_2300
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "20261204_2310"
down_revision = "20261204_2300"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daily_scores",
        sa.Column("unit_code", sa.String(64), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("total", sa.Numeric(6, 2), nullable=False),
        sa.Column("rating", sa.Text(), nullable=False),
        sa.Column("groups", JSONB(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("unit_code", "period", "day", name="pk_daily_scores"),
    )


def downgrade() -> None:
    op.drop_table("daily_scores")
