"""Catalogue, feedback, reported totals and snapshots (issue 4: the whole QĐ 766 score).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The procedure catalogue, versioned by valid_from; a full replace writes tombstones (removed).
    op.create_table(
        "procedures",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("unit_code", sa.String(64), nullable=False),
        sa.Column("procedure_code", sa.String(64), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("field_code", sa.String(64), nullable=True),
        sa.Column("field_name", sa.Text(), nullable=True),
        sa.Column("online_level", sa.String(16), nullable=False, server_default="none"),
        sa.Column("online_services", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("fee_required", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("for_individuals", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("result_required", sa.Boolean(), nullable=True),
        sa.Column("legal_days", sa.Numeric(8, 2), nullable=True),
        sa.Column("decision_date", sa.Date(), nullable=True),
        sa.Column("legal_basis_effective_date", sa.Date(), nullable=True),
        sa.Column("made_public_date", sa.Date(), nullable=True),
        sa.Column("complete_parts", sa.Boolean(), nullable=True),
        sa.Column("removed", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("loaded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_procedures"),
        sa.UniqueConstraint("unit_code", "procedure_code", "valid_from", name="uq_procedures_unit_code"),
    )
    op.create_index("ix_procedures_procedure_code", "procedures", ["procedure_code"])

    # Feedback (PAKN) events; (feedback_id, kind, occurred_at) is the idempotency key.
    op.create_table(
        "feedback_events",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("feedback_id", sa.String(128), nullable=False),
        sa.Column("unit_code", sa.String(64), nullable=False),
        sa.Column("dossier_code", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rating", sa.String(16), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_feedback_events"),
        sa.UniqueConstraint("feedback_id", "kind", "occurred_at", name="uq_feedback_events_feedback_id"),
    )
    op.create_index("ix_feedback_events_unit_code", "feedback_events", ["unit_code"])
    op.create_index("ix_feedback_events_dossier_code", "feedback_events", ["dossier_code"])

    # Received counts per unit and period as the national reporting system has them (1.4).
    op.create_table(
        "reported_totals",
        sa.Column("unit_code", sa.String(64), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("unit_code", "period", name="pk_reported_totals"),
    )

    # Frozen scores of every unit (self-evaluation instants and on demand).
    op.create_table(
        "snapshots",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("policies", JSONB(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_snapshots"),
    )
    op.create_table(
        "snapshot_scores",
        sa.Column("snapshot_id", sa.BigInteger(), nullable=False),
        sa.Column("unit_code", sa.String(64), nullable=False),
        sa.Column("total", sa.Numeric(6, 2), nullable=False),
        sa.Column("body", JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("snapshot_id", "unit_code", name="pk_snapshot_scores"),
    )


def downgrade() -> None:
    for table in ("snapshot_scores", "snapshots", "reported_totals", "feedback_events", "procedures"):
        op.drop_table(table)
