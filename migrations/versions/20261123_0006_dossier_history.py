"""Each dossier keeps the compact history the rules need, so applying an event no longer re-reads
every stored event of its dossier.

NULL (rows written before): the next event re-reads the dossier's events once and fills it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("dossiers", sa.Column("history", JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("dossiers", "history")
