"""Which errors mean "the store cannot serve now" (503 store_unavailable), and which are bugs (500)."""

import asyncpg
import pytest
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared.problems import is_store_unavailable


def _wrapped(kind, orig: BaseException) -> BaseException:
    error = kind("SELECT 1", {}, orig)
    error.__cause__ = orig
    return error


@pytest.mark.parametrize("error", [
    ConnectionRefusedError(111, "Connection refused"),
    OSError(113, "No route to host"),
    TimeoutError(),
    PoolTimeout("QueuePool limit of size 5 overflow 5 reached, connection timed out"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
    _wrapped(OperationalError, ConnectionRefusedError(111, "Connection refused")),
    _wrapped(InterfaceError, asyncpg.ConnectionDoesNotExistError("closed")),
])
def test_store_errors_are_unavailable(error):
    assert is_store_unavailable(error)


@pytest.mark.parametrize("error", [
    ValueError("a bug"),
    asyncpg.UniqueViolationError("duplicate key"),
    asyncpg.UndefinedColumnError("column does not exist"),
    _wrapped(ProgrammingError, asyncpg.UndefinedTableError("relation does not exist")),
])
def test_other_errors_are_not(error):
    assert not is_store_unavailable(error)
