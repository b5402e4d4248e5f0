"""Prometheus metrics of every service (one registry per process, or prometheus-client's multiprocess
mode for `dvc766 api`'s workers; served at ``/metrics``)."""

from __future__ import annotations

import os
import platform
import threading
import weakref

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

EVENTS_ACCEPTED = Counter("dvc766_events_accepted_total", "Events accepted (new), by transport and source",
                          ["transport", "source"])
EVENTS_DUPLICATE = Counter("dvc766_events_duplicate_total", "Events already known (same source, id, body)",
                           ["transport", "source"])
EVENTS_REJECTED = Counter("dvc766_events_rejected_total", "Events rejected, by transport, source and reason",
                          ["transport", "source", "reason"])

# The ``source`` label is bounded: the first MAX_SOURCES sources a process sees keep their name, any
# later one counts as "other" (sources are configured per API key, but a Kafka header can say anything).
MAX_SOURCES = 100
_sources: set[str] = set()
_sources_lock = threading.Lock()


def source_label(source: str) -> str:
    if source in _sources:
        return source
    with _sources_lock:
        if len(_sources) < MAX_SOURCES and len(source) <= 64:
            _sources.add(source)
            return source
    return "other"
EVENTS_APPLIED = Counter("dvc766_events_applied_total", "Events applied to the counters")
DOSSIERS_RECOMPUTED = Counter("dvc766_dossiers_recomputed_total", "Dossier states re-derived")
DOSSIERS_PARKED = Counter("dvc766_dossiers_parked_total",
                          "Dossier applies that failed and parked the dossier (out of the counters, error kept)")
PARKED_DOSSIERS = Gauge("dvc766_parked_dossiers", "Dossiers parked now (GET /v1/parked-dossiers)",
                        multiprocess_mode="max")
APPLY_SECONDS = Histogram(
    "dvc766_apply_batch_seconds",
    "Time to apply one batch to dossier state and counters (one transaction)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
APPLY_BATCH_SIZE = Histogram(
    "dvc766_apply_batch_events", "Events in one applied batch", buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000)
)
DOSSIERS_OPEN = Gauge("dvc766_dossiers_open", "Received dossiers not yet finished")
DOSSIERS_OPEN_OVERDUE = Gauge("dvc766_dossiers_open_overdue", "Open dossiers past their deadline now")
DEADLINES_CROSSED = Counter("dvc766_deadlines_crossed_total", "Open dossiers turned overdue by the clock alone")
PENDING_EVENTS = Gauge("dvc766_pending_events", "Accepted events waiting to be applied (database queue)")
LAST_APPLIED = Gauge(
    "dvc766_last_applied_timestamp_seconds", "When a batch of events was last committed to the counters (Unix time)",
    multiprocess_mode="max",
)
APPLY_STALLED = Gauge(
    "dvc766_apply_stalled_seconds",
    "How long an applier of this process has had work pending without committing any (0 when idle or keeping up)",
)
TIME_BEHIND = Gauge(
    "dvc766_time_behind_seconds",
    "How far behind the newest accepted event the counters are, in seconds (0 when nothing is pending)",
)
DB_POOL_IN_USE = Gauge("dvc766_db_pool_connections_in_use", "Database connections checked out of the pool",
                       multiprocess_mode="livesum")
DB_POOL_CAPACITY = Gauge("dvc766_db_pool_connections_max", "Connections the pool may open (size + overflow)",
                         multiprocess_mode="livesum")
BUILD_INFO = Gauge("dvc766_build_info", "The running build (always 1)", ["version", "python_version"],
                   multiprocess_mode="max")
READY = Gauge("dvc766_ready", "1 when the process's readiness check (as /readyz) passes, checked periodically",
              ["check"], multiprocess_mode="min")
HTTP_REQUESTS = Counter("dvc766_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_SECONDS = Histogram("dvc766_http_request_seconds", "HTTP request latency", ["method", "route"])


LAST_SWEEP = Gauge("dvc766_last_sweep_timestamp_seconds", "When the deadline sweep last completed (Unix time)",
                   multiprocess_mode="max")
SWEEP_FAILURES = Counter("dvc766_sweep_failures_total", "Deadline sweeps (with the gauges' refresh) that failed")
LAST_SNAPSHOT = Gauge("dvc766_last_scheduled_snapshot_timestamp_seconds",
                      "When a scheduled snapshot was last taken (Unix time)", multiprocess_mode="max")
SNAPSHOT_FAILURES = Counter("dvc766_scheduled_snapshot_failures_total", "Scheduled snapshot attempts that failed")

# The notifier (services/notify): targets evaluated, notifications queued, webhook deliveries.
NOTIFICATIONS_QUEUED = Counter("dvc766_notifications_queued_total", "Webhook deliveries queued, by event", ["event"])
WEBHOOK_ATTEMPTS = Counter("dvc766_webhook_attempts_total",
                           "Webhook delivery attempts, by outcome (delivered, retry, failed: given up)", ["outcome"])
LAST_NOTIFY_EVALUATION = Gauge("dvc766_last_notify_evaluation_timestamp_seconds",
                               "When the notifier last evaluated targets, rejects and digests (Unix time)",
                               multiprocess_mode="max")
NOTIFY_EVALUATION_SECONDS = Histogram("dvc766_notify_evaluation_seconds", "One notifier evaluation pass",
                                      buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
NOTIFY_FAILURES = Counter("dvc766_notify_failures_total", "Notifier evaluation or delivery passes that failed")

# The appliers running in this process (services/indicators): the two gauges above are read from them
# when scraped, so they keep moving while an applier is blocked (a stuck batch cannot freeze them).
_appliers: list = []


def watch_applier(applier) -> None:
    """``applier`` has ``stalled_seconds()`` and ``behind_seconds()``; read at every scrape until unwatched."""
    _appliers.append(applier)


def unwatch_applier(applier) -> None:
    if applier in _appliers:
        _appliers.remove(applier)


APPLIERS = Gauge("dvc766_appliers", "Appliers (database-queue or Kafka workers) running in this process")
APPLY_STALL_LIMIT = Gauge("dvc766_apply_stall_limit_seconds",
                          "apply_stall_seconds: a stall longer than this fails /readyz (and the alert)")
APPLIERS.set_function(lambda: len(_appliers))
APPLY_STALLED.set_function(lambda: max((a.stalled_seconds() for a in _appliers), default=0.0))
TIME_BEHIND.set_function(lambda: max((a.behind_seconds() for a in _appliers), default=0.0))


def set_build_info() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        built = version("dvc766")
    except PackageNotFoundError:
        built = "unknown"
    BUILD_INFO.labels(built, platform.python_version()).set(1)


_engines: weakref.WeakSet = weakref.WeakSet()
_read_pools: list = []  # asyncpg pools (shared/db/engine.py create_read_pool); they take no weak reference


def watch_pool(engine, capacity: int) -> None:
    """Report an engine's pool (or an asyncpg pool): ``capacity`` connections at most, and how many are
    checked out."""
    DB_POOL_CAPACITY.inc(capacity)
    if hasattr(engine, "sync_engine"):
        _engines.add(engine)
    else:  # an asyncpg pool
        _read_pools[:] = [pool for pool in _read_pools if not pool.is_closing()] + [engine]


def refresh_pool_metrics() -> None:
    """Connections checked out now, over this process's engines (read at each scrape of this process and
    every readiness round, so the other api workers' figures stay current too)."""
    DB_POOL_IN_USE.set(sum(engine.sync_engine.pool.checkedout() for engine in list(_engines))
                       + sum(pool.get_size() - pool.get_idle_size() for pool in _read_pools if not pool.is_closing()))


# With several worker processes the default process collector only describes the one answering a
# scrape: each worker copies its own process figures into these (labelled by pid when rendered).
_PROCESS_GAUGES: dict[str, Gauge] = {}


def record_process_metrics() -> None:
    if not MULTIPROCESS:
        return
    for family in ProcessCollector(registry=None).collect():
        for sample in family.samples:
            gauge = _PROCESS_GAUGES.get(sample.name)
            if gauge is None:
                gauge = _PROCESS_GAUGES[sample.name] = Gauge(sample.name, family.documentation, registry=None,
                                                             multiprocess_mode="all")
            gauge.set(sample.value)


def render() -> tuple[bytes, str]:
    """This process's metrics; with several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set by
    `dvc766 api`), all of theirs: counters and histograms summed, gauges per process (a ``pid`` label)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    refresh_pool_metrics()
    if not directory:
        return generate_latest(), CONTENT_TYPE_LATEST
    record_process_metrics()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return generate_latest(registry), CONTENT_TYPE_LATEST
