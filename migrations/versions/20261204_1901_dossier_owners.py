"""The owner of each dossier: the unit that received it (services/events/ownership.py).

Existing dossiers are owned by the unit of their receipt (their first status-2 event), else of their
first event.

Revision ID: 20261204_1901
Revises: 0007
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "20261204_1901"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dossier_owners",
        sa.Column("dossier_code", sa.String(64), primary_key=True),
        sa.Column("unit_code", sa.String(64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.execute("""
        INSERT INTO dossier_owners (dossier_code, unit_code)
        SELECT DISTINCT ON (dossier_code) dossier_code, body->>'unit_code'
        FROM events ORDER BY dossier_code, status <> 2, seq
    """)


def downgrade() -> None:
    op.drop_table("dossier_owners")
