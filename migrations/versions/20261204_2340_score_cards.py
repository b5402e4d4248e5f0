"""Score cards: each unit's score per period and layout, kept current by the indicators side, and the
marks of the cards whose inputs moved.

Revision ID: 20261204_2340
Revises: 20261204_2330
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "20261204_2340"
down_revision = "20261204_2330"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "score_cards",
        sa.Column("unit_code", sa.String(64), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("layout", sa.String(16), nullable=False),
        sa.Column("inputs_key", sa.Text, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total", sa.Numeric(6, 2), nullable=False),
        sa.Column("etag", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("summary", sa.LargeBinary, nullable=False),
        sa.Column("counts", JSONB, nullable=False),
        sa.PrimaryKeyConstraint("unit_code", "period", "layout", name="pk_score_cards"),
    )
    op.create_table(
        "score_marks",
        sa.Column("unit_code", sa.String(64), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("unit_code", "period", name="pk_score_marks"),
    )


def downgrade() -> None:
    op.drop_table("score_marks")
    op.drop_table("score_cards")
