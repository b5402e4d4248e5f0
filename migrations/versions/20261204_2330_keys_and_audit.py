"""API keys' last use, and the audit log of admin writes (services/keys.py).

Revision ID: 20261204_2330
Revises: 20261204_2320
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "20261204_2330"
down_revision = "20261204_2320"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_key_uses",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=True),
        sa.Column("action", sa.String(255), nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("client", sa.String(64), nullable=True),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("api_key_uses")
