"""Each dossier keeps the compact history the rules need, so applying an event no longer re-reads
every stored event of its dossier.

NULL (rows written before): the next event re-reads the dossier's events once and fills it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # JSON as bytes: only the indicators engine reads it, and PostgreSQL stores bytea without parsing
    # it (jsonb made the dossier upsert ~60% dearer). Inspect with convert_from(history, 'UTF8')::jsonb.
    op.add_column("dossiers", sa.Column("history", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("dossiers", "history")
