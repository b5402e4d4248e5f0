"""Units carry the portal's electronic identifier (mã định danh, e.g. 000.00.07.H44) next to our code.

Revision ID: 20261204_2200
Revises: 20261204_2050
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "20261204_2200"
down_revision = "20261204_2050"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("units", sa.Column("identifier", sa.String(64), nullable=True))
    op.create_unique_constraint("uq_units_identifier", "units", ["identifier"])


def downgrade() -> None:
    op.drop_constraint("uq_units_identifier", "units", type_="unique")
    op.drop_column("units", "identifier")
