"""The asyncpg connection under a SQLAlchemy connection, for hot-path statements (arrays, COPY).

It runs inside the SQLAlchemy transaction, so one commit still covers everything. SQLAlchemy's
asyncpg dialect installs the jsonb codec: parameters go in as JSON text (:func:`jsonb`), results
come back decoded.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncConnection


async def driver_connection(conn: AsyncConnection) -> asyncpg.Connection:
    raw = await conn.get_raw_connection()
    if conn.in_transaction():
        # SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its own first statement: start it now,
        # or statements sent straight to asyncpg would each autocommit outside the caller's transaction.
        adapted = raw.dbapi_connection
        if hasattr(adapted, "_start_transaction") and hasattr(adapted, "_transaction"):
            if adapted._transaction is None and not getattr(adapted, "autocommit", False):  # noqa: SLF001
                await adapted._start_transaction()  # noqa: SLF001
        else:  # another SQLAlchemy version: any statement through SQLAlchemy sends the BEGIN
            await conn.exec_driver_sql("SELECT 1")
    return raw.driver_connection  # type: ignore[return-value]


def jsonb(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()
