"""All settings of dvc766, in one typed place (environment prefix ``DVC766_``, and a ``.env`` file)."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["source", "reader", "admin"]


class ApiKey(BaseModel):
    """One configured API key: ``{"role": "source", "source": "igate-h44", "units": ["H44"]}``."""

    role: Role
    source: str | None = None  # the event source recorded for events posted with this key
    units: list[str] = Field(default_factory=list)  # units (and their subtrees) a source key may post for
    name: str | None = None
    # The portal's "kept" error_code as this key's system compares it: 0 (the portal's; compared as a
    # number or the string "0") or "00" (older OpenCPS versions compare the string "00").
    portal_ok_code: Literal[0, "00"] = 0
    created_at: dt.datetime | None = None


class CalendarSettings(BaseModel):
    """Working-day calendar: Vietnam's public holidays plus what the government announces each year."""

    extra_days_off: list[dt.date] = Field(default_factory=list)
    make_up_days: list[dt.date] = Field(default_factory=list)  # ngày làm bù (Saturdays worked)
    # Working hours as "HH:MM-HH:MM" windows; 8 hours a day by default.
    work_hours: list[str] = Field(default_factory=lambda: ["07:00-11:30", "13:30-17:00"])
    # The years whose holidays are loaded (the holidays package knows Vietnam's from 1901 to 2100); days
    # outside them count Monday to Friday.
    first_year: int = 2000
    last_year: int = 2100


class PolicySettings(BaseModel):
    """Every rule the spec marks *(policy)*: named, never hard-coded."""

    # Due time used for the on-time test: the one carried at receipt, or the latest one received.
    due_time: Literal["received", "latest"] = "received"
    # Denominator of 3.3: all dossiers received, or only those of procedures with an online service.
    online_ratio_denominator: Literal["all_received", "online_procedures"] = "all_received"
    # Denominator of 4.1: all dossiers received (the portal), or only those whose procedure yields a result.
    e_result_denominator: Literal["all_received", "result_required"] = "all_received"
    # Scoring of 4.2: linear (the portal) or capped at 0.8 (a guidance document).
    digitisation_scoring: Literal["linear", "cap_0_8"] = "linear"
    # TTTT group score: the sum of the rounded component scores 6A, min(2, 2.5B), min(2, 2.5C) (§6; matches
    # 162 of the 164 published rows exactly, the other two by 0.01), or that formula unrounded, rounded once
    # (111 of 164 exactly, all within 0.015).
    payment_group_score: Literal["portal_formula", "sum_of_components"] = "sum_of_components"
    # 3.6 counts in the period of the processing start; a fee-bearing dossier never put in processing
    # (no status 4) counts in its received period, or not at all.
    payment_period_fallback: Literal["received", "exclude"] = "received"
    # 3.6's denominator: dossiers that say they bear fees, or also every dossier whose procedure bears fees
    # in the catalogue (the portal's formula description; for systems that list fee lines only once paid).
    # "dossier" reproduces the reference data as loaded in tests/support/reference.py.
    fee_bearing: Literal["dossier", "catalogue"] = "dossier"
    # 4.3 for a unit that manages no commune (a department): full marks (the portal shows 100%) or no_data.
    e_copy_without_communes: Literal["full", "no_data"] = "full"
    # 5.3: which feedback items referencing a dossier count as "a complaint or a not-satisfied rating".
    dossier_complaint_kinds: list[str] = Field(default_factory=lambda: ["received", "recomplained"])
    # 1.1 / 1.2 deadlines in working days (events.md §5): province vs ministry.
    publication_lead_days: int = 5
    publication_lead_days_ministry: int = 20
    made_public_lag_days: int = 5
    made_public_lag_days_ministry: int = 10
    # Early warning: how many working days ahead to look by default.
    early_warning_days: int = 3
    # Rating bands of the total: minimum score for each rating, highest first.
    rating_bands: list[tuple[float, str]] = Field(
        default_factory=lambda: [
            (90.0, "Xuất sắc"),
            (80.0, "Tốt"),
            (70.0, "Khá"),
            (50.0, "Trung bình"),
            (0.0, "Yếu"),
        ]
    )


class PortalSettings(BaseModel):
    """The national portal's sync calls (``/v1/dvcqg``) as real one-stop-shop systems make them."""

    # Lifetime of a session token issued by the login call (systems log in before every sync).
    session_seconds: int = Field(3600, ge=60)
    # DSKetNoiCSDL ``MaCSDL`` codes that name the national population database (4.5 / 4.7). The portal's
    # code list is not public: set it to the codes your systems send for that database.
    population_db_codes: list[str] = Field(default_factory=list)


class NotifySettings(BaseModel):
    """Targets and webhooks (targets.md): how often targets are evaluated, how deliveries are retried."""

    # Targets, rejects and digests are evaluated this often (a state change is announced within 60 s).
    evaluate_interval_seconds: float = Field(15.0, gt=0, le=45)
    # Due deliveries are looked for this often (and at once after an evaluation queued some).
    deliver_poll_seconds: float = Field(1.0, gt=0)
    timeout_seconds: float = 10.0
    # A failed delivery is retried after retry_base_seconds, doubling up to retry_max_seconds, for at
    # most retry_for_seconds after it was queued; then it is marked failed (still listed).
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 600.0
    retry_for_seconds: float = 24 * 3600.0
    # dossiers.due_soon: each unit's daily digest, sent from this local time on (open dossiers turning
    # overdue within the policy's early_warning_days working days).
    digest_local_time: dt.time = dt.time(7, 0)
    digest_max_dossiers: int = 100
    # source.rejects: a sender whose rejected events in the trailing window reach the threshold.
    rejects_threshold: int = 50
    rejects_window_seconds: float = 3600.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DVC766_",
        env_file=".env",
        env_nested_delimiter="__",
        extra="ignore",
    )

    environment: Literal["development", "production"] = "development"

    # Store. Absent: an embedded PostgreSQL is started in ``data_dir``.
    database_url: str | None = None
    data_dir: Path = Path(".dvc766")
    db_pool_size: int = 10
    # Every statement and every lock wait of the services ends in an error after this long (0: never), so a
    # locked table shows as failing batches, a stalled applier and a failing /readyz, not a silent wait.
    db_statement_timeout_ms: int = Field(120_000, ge=0)
    db_lock_timeout_ms: int = Field(15_000, ge=0)
    # A store that does not answer: connecting gives up after db_connect_timeout_seconds, a request waiting
    # for a pooled connection after db_pool_timeout_seconds; either, like a refused connection, is answered
    # 503 store_unavailable with Retry-After: store_retry_after_seconds.
    db_connect_timeout_seconds: float = Field(5.0, gt=0)
    db_pool_timeout_seconds: float = Field(10.0, gt=0)
    store_retry_after_seconds: int = Field(2, ge=1)
    # /readyz answers within about this long: each of its checks (the store, Kafka, the appliers) that has
    # not answered by then is "not ready".
    readiness_timeout_seconds: float = Field(2.0, gt=0)

    # Kafka. Absent: no Kafka; events go through the database.
    kafka_bootstrap_servers: str | None = None
    kafka_topic: str = "dossier-events"
    kafka_dead_letter_topic: str = "dossier-events-dead-letters"
    kafka_group_id: str = "dvc766-indicators"
    kafka_source: str = "kafka"  # the source recorded for events read from the topic
    kafka_idempotent_producer: bool = True
    # An optional raw upstream topic that `dvc766 ingest` bridges into the
    # canonical topic (absent: upstream systems write to `kafka_topic` directly).
    kafka_upstream_topic: str | None = None
    kafka_create_topics: bool = True  # create missing topics at start (partitions and replication below)
    kafka_partitions: int = 6
    # Topics created by dvc766: each partition on this many brokers, and an acks=all write needs this
    # many of them in sync. 1 / 1 only for a single broker (development, tests).
    kafka_replication_factor: int = Field(3, ge=1)
    kafka_min_insync_replicas: int = Field(2, ge=1)
    # POST /v1/events in Kafka mode answers 503 kafka_unavailable when its events are not all acknowledged
    # by then (a broker down or unreachable): a client's retry is safe, events count once by their id.
    kafka_produce_timeout_seconds: float = Field(5.0, gt=0)
    kafka_poll_timeout_ms: int = 500
    kafka_max_batch_records: int = 5000  # messages fetched per poll, at most
    # Fetched batches a worker has in flight: with 2, the next batch's events are decoded, validated
    # and stored while the current one applies its dossiers and counters (services/indicators/kafka.py).
    # 1: one batch at a time.
    kafka_batches_in_flight: int = Field(2, ge=1, le=2)
    kafka_session_timeout_ms: int = 10000
    kafka_heartbeat_interval_ms: int = 3000
    kafka_max_poll_interval_ms: int = 300000
    # How long the group waits for members to rejoin in a rebalance (absent: the session timeout).
    kafka_rebalance_timeout_ms: int | None = None
    kafka_request_timeout_ms: int = 30000
    kafka_linger_ms: int = 5
    # A partition whose stored position stays beyond the log's end for this long (the topic was recreated
    # or the broker lost its log) is stopped with an error, never skipped (services/indicators/kafka.py).
    kafka_reset_confirm_seconds: float = Field(5.0, ge=0)

    # Auth. Keys in clear or as "sha256:<hex>"; the key file (same shape, written by `dvc766 keys`;
    # default: api-keys.json in data_dir) is re-read by running services when it changes.
    api_keys: dict[str, ApiKey] = Field(default_factory=dict)
    api_keys_file: Path | None = None
    api_keys_reload_seconds: float = Field(2.0, gt=0)
    # Signs session tokens (the portal's login call, the pages' sign-in). Every process of a deployment
    # needs the same one; absent: generated once and kept in data_dir/session-secret.
    session_secret: SecretStr | None = None

    # Rate limits (token buckets; 429 with Retry-After): requests per second and burst per API key and per
    # client address, and failed authentications per client address (far fewer: a key cannot be guessed
    # by trying). 0 turns a limit off. Behind a reverse proxy the address is the one uvicorn's
    # --forwarded-allow-ips trusts.
    rate_limit_key_per_second: float = Field(50.0, ge=0)
    rate_limit_key_burst: int = Field(200, ge=1)
    rate_limit_address_per_second: float = Field(100.0, ge=0)
    rate_limit_address_burst: int = Field(400, ge=1)
    rate_limit_auth_failures_per_minute: float = Field(10.0, ge=0)
    rate_limit_auth_failure_burst: int = Field(20, ge=1)

    # Units tree (JSON or CSV with code, name, level, parent): a seed, loaded at start for the units not
    # known yet; units changed since through PUT /v1/units keep those changes.
    units_file: Path | None = None

    # HTTP.
    host: str = "127.0.0.1"
    port: int = 8766
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch_events: int = 1000
    max_event_bytes: int = 64 * 1024
    # `dvc766 api` (the query API alone, with a configured database): this many server processes on one
    # port (SO_REUSEPORT: the kernel spreads connections), metrics summed over them (prometheus
    # multiprocess mode). Raise it where the API has cores of its own.
    api_workers: int = Field(1, ge=1, le=64)
    # `dvc766 ingest` processes on the port (SO_REUSEPORT), each validating on its own core.
    ingest_workers: int = Field(1, ge=1, le=64)

    # Indicators worker.
    apply_batch_size: int = 5000
    # `dvc766 replay` derives this many dossiers at a time (its memory is bounded by one chunk).
    replay_chunk_dossiers: int = 5000
    # The indicators worker recomputes the score cards marked out of date this often (a read finding
    # one out of date computes it itself).
    score_card_refresh_seconds: float = Field(1.0, gt=0)
    # Score answers say clients and proxies may reuse them for this long (Cache-Control max-age); an api
    # process reuses the cards it read no longer (services/indicators/cards.py CardCache; 0: never).
    score_max_age_seconds: int = Field(1, ge=0)
    # Every score card is also recomputed this often: what moves with the clock alone (feedback
    # turning late, the instant an open period is judged at) shows within it.
    score_card_full_refresh_seconds: float = Field(300.0, gt=0)
    apply_idle_poll_seconds: float = 0.2
    # An applier with work pending that committed nothing for this long reports itself not ready (/readyz).
    apply_stall_seconds: float = Field(120.0, gt=0)
    # How often open dossiers are checked for a deadline the clock has crossed (the API shows it by then).
    sweep_interval_seconds: float = 15.0
    # Scheduled self-evaluation snapshots (last day of each quarter, 19/12) are taken from this local
    # time of that day on, so the day's work is in them. Empty: never taken automatically.
    snapshot_local_time: dt.time | None = dt.time(17, 0)

    # Storage. Events are stored in monthly partitions, by the month of their dossier's first event
    # (shared/db/partitions.py); the indicators side creates the current month's and this many following
    # months' partitions at start and with every sweep (older ones are created when an event needs one).
    partitions_ahead_months: int = Field(2, ge=0, le=24)
    # `dvc766 archive` exports months older than this many months (before the current one) to files in
    # archive_dir and drops them; it refuses younger ones. Their dossiers can then take no more events
    # (refused: dossier_archived), and `dvc766 replay` reads them back from the files.
    retention_months: int = Field(24, ge=1)
    archive_dir: Path | None = None  # absent: data_dir/archive

    # Pages (services/api/pages/): a sign-in cookie lasts this long.
    session_hours: float = Field(8.0, gt=0, le=24 * 30)
    # Who may frame the public scoreboard (CSP frame-ancestors sources), e.g. ["https://phutho.gov.vn"].
    public_frame_ancestors: list[str] = Field(default_factory=lambda: ["'self'"])
    # The indicators side records each unit's score of the current month, quarter and year as the day's
    # row of the score history this often (the last record of a day is its end-of-day score).
    daily_scores_interval_seconds: float = Field(60.0, gt=0)

    log_level: str = "INFO"
    log_json: bool = True
    access_log: bool = True
    # How often each process runs its /readyz checks for the dvc766_ready gauge (Prometheus reads that).
    readiness_metric_seconds: float = Field(10.0, gt=0)  # one line per HTTP request (logger dvc766.access) with its request id
    # Allocations between young-generation garbage collections (Python's default: 700; 0 keeps it).
    # Higher means far fewer full collections on the hot paths (shared/process.py).
    gc_young_threshold: int = Field(50_000, ge=0)

    calendar: CalendarSettings = Field(default_factory=CalendarSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    portal: PortalSettings = Field(default_factory=PortalSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        if not value:
            return None
        # Accept plain libpq URLs; SQLAlchemy needs the asyncpg driver named.
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+asyncpg://" + value[len(prefix):]
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()


def reset_settings_cache() -> None:
    get_settings.cache_clear()
