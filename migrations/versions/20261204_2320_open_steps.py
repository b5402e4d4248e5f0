"""Steps still open (events.md: ``step.open``): each dossier keeps the next deadline of its open steps
the clock has not crossed, for the sweeper that counts them overdue with no event.

Revision ID: 20261204_2320
Revises: 20261204_2110
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "20261204_2320"
down_revision = "20261204_2110"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("dossiers", sa.Column("step_deadline", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_dossiers_step_deadline", "dossiers", ["step_deadline"],
                    postgresql_where=sa.text("step_deadline IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_dossiers_step_deadline", table_name="dossiers")
    op.drop_column("dossiers", "step_deadline")
