"""Builds the FastAPI application of one service, or of all three in one process (``dvc766 serve``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from fastapi import FastAPI

from services import admin, ops
from services.api import breakdown as api_breakdown
from services.api import exports as api_exports
from services.api import feeds as api_feeds
from services.api import history as api_history
from services.api import http as api_http
from services.api import parked as api_parked
from services.api import portal as api_portal
from services.api import snapshots as api_snapshots
from services.api.pages import routes as pages
from services.api.pages.headers import PageSecurityHeaders
from services.indicators.cards import CardCache, CardsMovedListener
from services.indicators.engine import IndicatorEngine
from services.indicators.worker import QueueWorker
from services.notify import http as notify_http
from services.notify.notifier import Notifier
from services.ingest import http as ingest_http
from services.ingest import portal as ingest_portal
from services.keys import AdminAudit, KeyMaintenance
from services.limits import install_rate_limits
from services.openapi import document_answers
from shared.auth import KeyRing, configured_keys, first_run_admin_key, session_secret
from shared.db.engine import stop_embedded_postgres
from shared.db.notify import EventsQueuedListener
from shared.metrics import APPLY_STALL_LIMIT, set_build_info
from shared.problems import install_problem_handlers
from shared.process import tune_garbage_collector
from shared.runtime import Runtime, build_runtime
from shared.settings import Settings, get_settings

log = logging.getLogger("dvc766.app")
ROLES = ("ingest", "indicators", "api")


def create_app(roles: Iterable[str] = ROLES, *, settings: Settings | None = None,
               runtime: Runtime | None = None) -> FastAPI:
    roles = tuple(roles)
    settings = settings or (runtime.settings if runtime else get_settings())
    # Embedded default: nobody else will migrate it. Elsewhere, `dvc766 migrate` is a deploy step.
    run_migrations = settings.database_url is None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        own_runtime = runtime is None
        rt = runtime or await build_runtime(settings, run_migrations=run_migrations)
        app.state.runtime = rt
        keys = configured_keys(settings)
        first_run = {} if keys else first_run_admin_key(settings)
        app.state.keyring = KeyRing({**first_run, **keys}, session_secret=session_secret(settings))
        key_maintenance = KeyMaintenance(app, rt, first_run)
        key_maintenance.start()
        engine = IndicatorEngine(rt.calendar, settings.policy)
        app.state.indicator_engine = engine
        background: list = []
        app.state.ready_checks = {}  # /readyz: name -> async check answering "ok" or what is wrong
        if "indicators" in roles:
            worker = QueueWorker(rt, engine)
            app.state.ready_checks["indicators"] = worker.ready
            # In Kafka mode too: events queued in the database before the switch to Kafka are applied
            # (nothing new is queued there then; an empty queue costs one cheap poll per idle period).
            worker.start(apply_queue=True)
            background.append(worker)
            notifier = app.state.notifier = Notifier(rt)  # targets and webhooks: never in the apply path
            notifier.start()
            background.append(notifier)
        if settings.kafka_bootstrap_servers:  # Kafka mode: topic in, offsets with the counters
            background.extend(await _start_kafka(app, rt, engine, roles))
        if "indicators" in roles and not settings.kafka_bootstrap_servers:
            # Events queued by an ingest process elsewhere wake this worker at once.
            listener = app.state.events_listener = EventsQueuedListener(rt)
            listener.start()
            background.append(listener)
        if "api" in roles and settings.score_max_age_seconds > 0:
            # Cards read are reused up to their max-age, emptied by the writers' notifications.
            rt.card_cache = CardCache(settings.score_max_age_seconds)
            card_listener = app.state.card_listener = CardsMovedListener(rt, rt.card_cache)
            card_listener.start()
            background.append(card_listener)
        refresher = None
        if "indicators" not in roles or len(roles) < len(ROLES):
            refresher = asyncio.create_task(_refresh_units(rt))
        set_build_info()
        APPLY_STALL_LIMIT.set(settings.apply_stall_seconds)
        background.insert(0, _Task(asyncio.create_task(ops.publish_readiness(app, settings.readiness_metric_seconds))))
        tune_garbage_collector(settings.gc_young_threshold)
        log.info("dvc766 started", extra={"roles": list(roles)})
        try:
            yield
        finally:
            if refresher:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
            for worker in background:
                await worker.stop()  # lets the batch in flight commit
            await key_maintenance.stop()
            if own_runtime:
                await rt.close()
                if not settings.database_url:  # the embedded default: stop the database this process started
                    await asyncio.to_thread(stop_embedded_postgres)
            log.info("dvc766 stopped", extra={"roles": list(roles)})

    app = FastAPI(
        title="dvc766",
        version="0.1.0",
        summary="Real-time QĐ 766/QĐ-TTg service-quality indicators (Bộ chỉ số chỉ đạo, điều hành và đánh giá "
        "chất lượng phục vụ người dân, doanh nghiệp)",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    document_answers(app)
    ops.install_http_metrics(app, access_log_enabled=settings.access_log)
    app.add_middleware(AdminAudit)
    install_rate_limits(app, settings)  # added last: the outermost, before any other work
    app.include_router(ops.router)
    if "ingest" in roles:
        app.include_router(ingest_http.router)
        app.include_router(ingest_portal.router)  # the national portal's own payloads
    if "api" in roles:
        app.include_router(api_http.router)
        app.include_router(api_breakdown.router)  # per procedure, per field
        app.include_router(api_history.router)  # the score at the end of each day
        app.include_router(api_exports.router)  # Excel
        app.include_router(api_feeds.router)  # catalogue, feedback, reported totals
        app.include_router(api_snapshots.router)
        app.include_router(api_portal.router)  # read side in the portal's shapes
        app.include_router(notify_http.router)  # targets and webhooks
        app.include_router(admin.router)
        app.include_router(api_parked.router)  # dossiers whose apply failed
        pages.install(app)  # the pages people read, and the public scoreboard
        app.add_middleware(PageSecurityHeaders)
    return app


class _Task:
    """A background task stopped with the workers."""

    def __init__(self, task: asyncio.Task) -> None:
        self.task = task

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def _refresh_units(runtime: Runtime, every: float = 30.0) -> None:
    """Processes that do not own the unit tree pick up changes made through another process."""
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):
            await runtime.reload_units()


async def _start_kafka(app: FastAPI, rt: Runtime, engine: IndicatorEngine, roles: tuple[str, ...]) -> list:
    """Kafka mode. ingest: POST /v1/events produces to the topic (acks=all) before answering, and an
    optional raw upstream topic is bridged in; indicators: the consumer-group worker that applies the
    topic with its offsets in PostgreSQL. Returns what to stop, in order."""
    from services.indicators.kafka import KafkaApplier
    from services.ingest.kafka import KafkaPublisher, UpstreamBridge
    from shared.kafka import client_ready, ensure_topics, make_producer

    s = rt.settings
    await ensure_topics(s, [s.kafka_topic, s.kafka_dead_letter_topic, s.kafka_upstream_topic or ""])
    started: list = []
    checks = []
    if "ingest" in roles:
        producer = make_producer(s)
        await producer.start()
        rt.producer = producer
        app.state.publish_events = KafkaPublisher(producer)
        if s.kafka_upstream_topic and s.kafka_upstream_topic != s.kafka_topic:
            bridge = UpstreamBridge(rt, producer)
            await bridge.start()
            started.append(bridge)  # stops before the producer it uses
        started.append(producer)
        checks.append(client_ready(lambda: producer.client))
    if "indicators" in roles:
        applier = KafkaApplier(rt, engine)
        await applier.start()
        app.state.kafka_applier = applier
        started.insert(0, applier)
        checks.append(applier.ready)

    async def kafka_ready() -> str:
        for check in checks:
            state = await check()
            if state != "ok":
                return state
        return "ok"

    app.state.ready_checks["kafka"] = kafka_ready
    return started
