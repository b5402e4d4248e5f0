"""The schema, as SQLAlchemy Core tables. Migrations (``migrations/``) are the only way it changes."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

units = Table(
    "units",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("level", String(16), nullable=False),
    Column("parent_code", String(64), nullable=True, index=True),
    Column("e_certified_copy", Boolean, nullable=True),
    Column("identifier", String(64), nullable=True, unique=True),  # the portal's mã định danh
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Every accepted event, kept so each dossier's state can be re-derived. Partitioned by the month of its
# dossier (``home_month``, from dossier_owners): a partition holds whole histories, and a month older than
# the retention is archived to files and dropped as a whole (shared/db/partitions.py, services/indicators/archive.py).
# Partitions are created at run time, not by migrations.
events = Table(
    "events",
    metadata,
    Column("seq", BigInteger, Identity(always=False), primary_key=True),
    Column("home_month", Date, primary_key=True),
    Column("source", String(128), nullable=False),
    Column("event_id", String(128), nullable=False),
    Column("dossier_code", String(64), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("body", JSONB, nullable=False),
    Column("transport", String(16), nullable=False),
    Column("accepted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_events_dossier_code", "dossier_code"),
    postgresql_partition_by="RANGE (home_month)",
)

# The idempotency key of every event: (source, event_id) counts once whatever month its dossier is in
# (a partitioned table's unique constraint would have to include the month). ``body_hash`` tells a
# redelivery (same body: duplicate) from a different event under a used id (conflict).
event_keys = Table(
    "event_keys",
    metadata,
    Column("source", String(128), primary_key=True),
    Column("event_id", String(128), primary_key=True),
    Column("body_hash", LargeBinary, nullable=False),
)

# Months whose events were exported to files and dropped (``dvc766 archive``): an event for a dossier of
# such a month is refused (``dossier_archived``), and replay reads the month from its file.
archived_months = Table(
    "archived_months",
    metadata,
    Column("month", Date, primary_key=True),
    Column("archived_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("events", BigInteger, nullable=False),
    Column("dossiers", BigInteger, nullable=False),
    Column("file", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
)

# Events accepted over HTTP (no Kafka) and not yet applied to the counters.
pending_events = Table(
    "pending_events",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("home_month", Date, nullable=False),
)

# Each dossier's derived facts and the contribution it last made to the counters.
dossiers = Table(
    "dossiers",
    metadata,
    Column("dossier_code", String(64), primary_key=True),
    Column("unit_code", String(64), nullable=False),
    Column("procedure_code", String(64), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=True),
    Column("received_month", String(7), nullable=True),
    Column("channel", SmallInteger, nullable=True),
    Column("due_at", DateTime(timezone=True), nullable=True),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    Column("supplement_count", SmallInteger, nullable=False, server_default="0"),
    Column("overdue_steps", SmallInteger, nullable=False, server_default="0"),
    # True/False when on time is settled whatever the clock says; NULL while it depends on the clock.
    Column("overdue_fixed", Boolean, nullable=True),
    Column("overdue_reason", String(32), nullable=True),
    Column("deadline", DateTime(timezone=True), nullable=True),
    Column("deadline_passed", Boolean, nullable=False, server_default=text("false")),
    Column("no_deadline", Boolean, nullable=False, server_default=text("false")),
    # JSON text, not jsonb: rewritten with every applied event and never searched by PostgreSQL, where
    # the binary form would make each version of the row larger.
    Column("contribution", JSON, nullable=True),
    Column("attributes", JSON, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The next deadline of a step still open that the clock has not crossed (the sweeper's cue).
    Column("step_deadline", DateTime(timezone=True), nullable=True),
    Index("ix_dossiers_unit_month", "unit_code", "received_month"),
    Index("ix_dossiers_step_deadline", "step_deadline", postgresql_where=text("step_deadline IS NOT NULL")),
    Index(
        "ix_dossiers_deadline_pending",
        "deadline",
        postgresql_where=text("deadline IS NOT NULL AND NOT deadline_passed"),
    ),
)

# Maintained counters: one row per unit × procedure ('*' = all) × period (month, quarter, year) × metric.
counters = Table(
    "counters",
    metadata,
    Column("unit_code", String(64), primary_key=True),
    Column("period", String(7), primary_key=True),
    Column("procedure_code", String(64), primary_key=True),
    Column("metric", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# The unit that received each dossier: only keys bound to its subtree may add events (services/events/ownership.py).
dossier_owners = Table(
    "dossier_owners",
    metadata,
    Column("dossier_code", String(64), primary_key=True),
    Column("unit_code", String(64), nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The month (UTC) of the dossier's first event: the partition of events its whole history is stored in.
    Column("home_month", Date, nullable=False),
)

# Dossiers whose events the rules could not apply (the apply raised): out of the counters, with the error,
# until their next event or `dvc766 replay --dossier` applies them (services/indicators/engine.py).
parked_dossiers = Table(
    "parked_dossiers",
    metadata,
    Column("dossier_code", String(64), primary_key=True),
    Column("unit_code", String(64), nullable=True, index=True),
    Column("error", Text, nullable=False),
    Column("events", Integer, nullable=False),
    Column("last_seq", BigInteger, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("1")),
    Column("parked_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# When each API key (by key_id, a prefix of its hash) was last presented; for `dvc766 keys list`.
api_key_uses = Table(
    "api_key_uses",
    metadata,
    Column("key_id", String(16), primary_key=True),
    Column("last_used_at", DateTime(timezone=True), nullable=False),
)

# Every write made with an admin key, and every key created or revoked: who, what, when.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now(), index=True),
    Column("actor", String(128), nullable=False),
    Column("key_id", String(16), nullable=True),
    Column("action", String(255), nullable=False),
    Column("status", Integer, nullable=True),
    Column("client", String(64), nullable=True),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("source", String(128), nullable=True),
    Column("transport", String(16), nullable=False),
    Column("reason", String(32), nullable=False, index=True),
    Column("detail", Text, nullable=False),
    Column("event_index", Integer, nullable=True),
    Column("event_id", String(128), nullable=True),
    Column("kafka_topic", String(255), nullable=True),
    Column("kafka_partition", Integer, nullable=True),
    Column("kafka_offset", BigInteger, nullable=True),
    Column("raw", Text, nullable=False),
)

# Kafka consumer offsets, committed with the counters (migration 0002). ``epoch`` fences a worker
# that lost its partition: every assignment bumps it, and a batch commits only under its own epoch.
kafka_offsets = Table(
    "kafka_offsets",
    metadata,
    Column("group_id", String(255), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    Column("epoch", BigInteger, nullable=False, server_default="0"),
    Column("owner", String(255), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Produce time of the message just before next_offset: checked on assignment (migration 20261204_2050).
    Column("last_timestamp_ms", BigInteger, nullable=True),
)

# --- Feeds and snapshots ---

# The procedure catalogue, versioned by valid_from; a full replace writes tombstones (removed).
procedures = Table(
    "procedures",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("unit_code", String(64), nullable=False),
    Column("procedure_code", String(64), nullable=False, index=True),
    Column("valid_from", DateTime(timezone=True), nullable=False),
    Column("name", Text, nullable=True),
    Column("field_code", String(64), nullable=True),
    Column("field_name", Text, nullable=True),
    Column("online_level", String(16), nullable=False, server_default="none"),
    Column("online_services", Integer, nullable=False, server_default="0"),
    Column("fee_required", Boolean, nullable=False, server_default=text("false")),
    Column("for_individuals", Boolean, nullable=False, server_default=text("false")),
    Column("result_required", Boolean, nullable=True),
    Column("legal_days", Numeric(8, 2), nullable=True),
    Column("decision_date", Date, nullable=True),
    Column("legal_basis_effective_date", Date, nullable=True),
    Column("made_public_date", Date, nullable=True),
    Column("complete_parts", Boolean, nullable=True),
    Column("removed", Boolean, nullable=False, server_default=text("false")),
    Column("loaded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("unit_code", "procedure_code", "valid_from", name="uq_procedures_unit_code"),
)

feedback_events = Table(
    "feedback_events",
    metadata,
    Column("seq", BigInteger, Identity(always=False), primary_key=True),
    Column("feedback_id", String(128), nullable=False),
    Column("unit_code", String(64), nullable=False, index=True),
    Column("dossier_code", String(64), nullable=True, index=True),
    Column("kind", String(16), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=True),
    Column("rating", String(16), nullable=True),
    Column("accepted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("feedback_id", "kind", "occurred_at", name="uq_feedback_events_feedback_id"),
)

reported_totals = Table(
    "reported_totals",
    metadata,
    Column("unit_code", String(64), primary_key=True),
    Column("period", String(7), primary_key=True),
    Column("received", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("period", String(7), nullable=False),
    Column("label", Text, nullable=True),
    Column("kind", String(32), nullable=False),
    Column("taken_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("policies", JSONB, nullable=True),
)

snapshot_scores = Table(
    "snapshot_scores",
    metadata,
    Column("snapshot_id", BigInteger, primary_key=True),
    Column("unit_code", String(64), primary_key=True),
    Column("total", Numeric(6, 2), nullable=False),
    Column("body", JSONB, nullable=False),
)

# Targets, webhooks and their deliveries (targets.md). A target's definition is kept as given (validated).
targets = Table(
    "targets",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("definition", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("url", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("events", JSONB, nullable=False),
    Column("units", JSONB, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One row per notification and webhook: its stable id (X-DVC766-Delivery), the exact body signed, and
# its outcome. The notifier claims due rows, posts them, and writes the outcome back.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("webhook_id", String(128), nullable=False),
    Column("event", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),  # pending, delivered, failed (gave up)
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("outcomes", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Index("ix_webhook_deliveries_webhook", "webhook_id", "created_at"),
    Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=text("state = 'pending'")),
)

# The last announced state of everything the notifier watches (a target for a unit and period, a
# sender's rejects, a unit's daily digest): a change is announced once, in the transaction that records it.
notification_states = Table(
    "notification_states",
    metadata,
    Column("key", Text, primary_key=True),
    Column("state", String(32), nullable=False),
    Column("detail", JSONB, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# The score history (migration 20261204_2310): a unit's score of a period at the end of each day, written by the
# indicators side (services/indicators/cards.py); a day's row stops changing with the day.
daily_scores = Table(
    "daily_scores",
    metadata,
    Column("unit_code", String(64), primary_key=True),
    Column("period", String(7), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("total", Numeric(6, 2), nullable=False),
    Column("rating", Text, nullable=False),
    Column("groups", JSONB, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

# The score projection (services/indicators/cards.py): each unit's score for a period and layout as the
# API serves it, refreshed by the indicators side whenever its inputs move.
score_cards = Table(
    "score_cards",
    metadata,
    Column("unit_code", String(64), primary_key=True),
    Column("period", String(16), primary_key=True),
    Column("layout", String(16), primary_key=True),
    Column("inputs_key", Text, nullable=False),  # the policy and calendar the card was computed under
    Column("computed_at", DateTime(timezone=True), nullable=False),
    Column("total", Numeric(6, 2), nullable=False),
    Column("etag", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),  # the JSON answer of GET /v1/scores/{unit}
    Column("summary", LargeBinary, nullable=False),  # the JSON league-table row
    Column("counts", JSONB, nullable=False),  # the subtree's dossier counters
)

# When the inputs of a unit's cards of a period last moved (services/indicators/cards.py): a card
# computed before that is out of date.
score_marks = Table(
    "score_marks",
    metadata,
    Column("unit_code", String(64), primary_key=True),
    Column("period", String(16), primary_key=True),
    Column("marked_at", DateTime(timezone=True), nullable=False),
)
