"""Parked dossiers: those whose events the rules could not apply, with the error, out of the counters
until ``dvc766 replay --dossier`` (or their next event) applies them.

Revision ID: 20261204_2110
Revises: 20261204_2310
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "20261204_2110"
down_revision = "20261204_2310"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "parked_dossiers",
        sa.Column("dossier_code", sa.String(64), primary_key=True),
        sa.Column("unit_code", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_parked_dossiers_unit_code", "parked_dossiers", ["unit_code"])


def downgrade() -> None:
    op.drop_table("parked_dossiers")
