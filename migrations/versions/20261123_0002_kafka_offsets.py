"""Kafka consumer offsets kept with the counters (filled in by the Kafka work).

One row per (consumer group, topic, partition): the next offset to apply, written in the same
transaction as the events, dossier states and counters it covers. ``epoch`` is bumped by every
worker that gets the partition assigned; a batch commits only if the epoch and the offset it
started from are still the stored ones (compare-and-set), so a worker that lost its partition
cannot write stale results.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kafka_offsets",
        sa.Column("group_id", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("group_id", "topic", "partition", name="pk_kafka_offsets"),
    )


def downgrade() -> None:
    op.drop_table("kafka_offsets")
