"""Per-procedure counter rows only for the metrics the per-procedure components read.

The indicators engine no longer writes the other per-procedure rows (services/indicators/rules/counters.py,
PROCEDURE_METRICS); rows written before would stay frozen and unread, so they go.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# As PROCEDURE_METRICS was when this migration was written (a migration must not follow later code).
PROCEDURE_METRICS = ("received", "received_online", "paid_online_dossiers", "fee_data", "population_data")


def upgrade() -> None:
    op.get_bind().execute(
        sa.text("DELETE FROM counters WHERE procedure_code <> '*' AND NOT (metric = ANY(:metrics))"),
        {"metrics": list(PROCEDURE_METRICS)},
    )


def downgrade() -> None:
    pass  # `dvc766 replay` rebuilds the counters from the events under any version
