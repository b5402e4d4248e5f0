"""Initial schema: units, events, pending queue, dossiers, counters, dead letters.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "units",
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("parent_code", sa.String(64), nullable=True),
        sa.Column("e_certified_copy", sa.Boolean(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_units"),
    )
    op.create_index("ix_units_parent_code", "units", ["parent_code"])

    op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("dossier_code", sa.String(64), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", JSONB(), nullable=False),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("transport", sa.String(16), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_events"),
        sa.UniqueConstraint("source", "event_id", name="uq_events_source_event_id"),
    )
    op.create_index("ix_events_dossier_code", "events", ["dossier_code"])

    op.create_table(
        "pending_events",
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_pending_events"),
    )

    op.create_table(
        "dossiers",
        sa.Column("dossier_code", sa.String(64), nullable=False),
        sa.Column("unit_code", sa.String(64), nullable=False),
        sa.Column("procedure_code", sa.String(64), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_month", sa.String(7), nullable=True),
        sa.Column("channel", sa.SmallInteger(), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("supplement_count", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("overdue_steps", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("overdue_fixed", sa.Boolean(), nullable=True),
        sa.Column("overdue_reason", sa.String(32), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline_passed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("no_deadline", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("contribution", JSONB(), nullable=True),
        sa.Column("attributes", JSONB(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("dossier_code", name="pk_dossiers"),
    )
    op.create_index("ix_dossiers_unit_month", "dossiers", ["unit_code", "received_month"])
    op.create_index(
        "ix_dossiers_deadline_pending",
        "dossiers",
        ["deadline"],
        postgresql_where=sa.text("deadline IS NOT NULL AND NOT deadline_passed"),
    )

    op.create_table(
        "counters",
        sa.Column("unit_code", sa.String(64), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("procedure_code", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("unit_code", "period", "procedure_code", "metric", name="pk_counters"),
    )

    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("source", sa.String(128), nullable=True),
        sa.Column("transport", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("event_index", sa.Integer(), nullable=True),
        sa.Column("event_id", sa.String(128), nullable=True),
        sa.Column("kafka_topic", sa.String(255), nullable=True),
        sa.Column("kafka_partition", sa.Integer(), nullable=True),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=True),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index("ix_dead_letters_reason", "dead_letters", ["reason"])


def downgrade() -> None:
    for table in ("dead_letters", "counters", "dossiers", "pending_events", "events", "units"):
        op.drop_table(table)
