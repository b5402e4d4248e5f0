"""A dossier row's contribution and attributes as json (their text) instead of jsonb: the row is rewritten by
every applied event and PostgreSQL never searches inside either (one drill-down reads a key), so the
binary form's larger size was paid on every version of every row.

Revision ID: 20261205_0020
Revises: 20261205_0010
Create Date: 2026-12-05
"""

from alembic import op

revision = "20261205_0020"
down_revision = "20261205_0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE dossiers ALTER COLUMN contribution TYPE json USING contribution::json, "
               "ALTER COLUMN attributes TYPE json USING attributes::json")


def downgrade() -> None:
    op.execute("ALTER TABLE dossiers ALTER COLUMN contribution TYPE jsonb USING contribution::jsonb, "
               "ALTER COLUMN attributes TYPE jsonb USING attributes::jsonb")
