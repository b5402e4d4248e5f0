"""The produce time of the last applied message of each partition, kept with its stored offset.

On assignment a worker reads the message just before its stored position again and compares: another
message there means the log was lost and refilled (a broker restarted empty, a topic recreated), and the
partition stops instead of skipping what the new log holds below the stored position.

Revision ID: 20261204_2050
Revises: 20261204_1901
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "20261204_2050"
down_revision = "20261204_1901"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("kafka_offsets", sa.Column("last_timestamp_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("kafka_offsets", "last_timestamp_ms")
