"""The database refusing connections: every request that needs it is answered 503 `store_unavailable`
with `Retry-After` (reads, writes, the portal's calls; never a 500), keep-alive connections stay open,
/readyz says not ready within its bound, and everything recovers by itself when the store is back.

A real `dvc766 serve` whose DATABASE_URL points at a proxy in front of the real PostgreSQL; closing the
proxy cuts the pool's connections and refuses new ones."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from urllib.parse import urlsplit

import h11
import pytest

from tests.conftest import ADMIN_KEY, READER_KEY, SOURCE_KEY, UNITS_FILE
from tests.support.events import event, vn
from tests.support.kafka import free_port
from tests.support.portal import Story, snapshot_call
from tests.support.proxy import TcpProxy


class KeptAliveConnection:
    """One HTTP/1.1 connection, kept open across requests (h11 says when the server closed it)."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> KeptAliveConnection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.h11 = h11.Connection(h11.CLIENT)
        return self

    async def request(self, method: str, path: str, body: object = None, key: str = ADMIN_KEY,
                      timeout: float = 30) -> tuple[int, dict[str, str], bytes, float]:
        data = json.dumps(body).encode() if body is not None else b""
        headers = [("host", "test"), ("authorization", f"Bearer {key}"), ("content-length", str(len(data)))]
        if body is not None:
            headers.append(("content-type", "application/json"))
        started = time.monotonic()
        self.writer.write(self.h11.send(h11.Request(method=method, target=path, headers=headers)))
        if data:
            self.writer.write(self.h11.send(h11.Data(data=data)))
        self.writer.write(self.h11.send(h11.EndOfMessage()))
        await self.writer.drain()
        response, chunks = None, []
        async with asyncio.timeout(timeout):
            while True:
                event_ = self.h11.next_event()
                if event_ is h11.NEED_DATA:
                    self.h11.receive_data(await self.reader.read(65536))
                elif isinstance(event_, h11.Response):
                    response = event_
                elif isinstance(event_, h11.Data):
                    chunks.append(event_.data)
                elif isinstance(event_, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
        assert self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE, "the server closed the connection"
        self.h11.start_next_cycle()
        headers_ = {k.decode(): v.decode() for k, v in response.headers}
        return response.status_code, headers_, b"".join(chunks), time.monotonic() - started

    async def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def proxied_serve(test_database, clean_db, tmp_path):
    """`dvc766 serve` on a free port, its store reached through a proxy the test controls."""
    url = urlsplit(test_database.url)
    proxy = await TcpProxy(url.hostname or "127.0.0.1", url.port or 5432).open()
    proxied = test_database.async_url.replace(f"{url.hostname}:{url.port}", f"127.0.0.1:{proxy.port}")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC766_")}
    env.update({
        "DVC766_DATABASE_URL": proxied, "DVC766_UNITS_FILE": str(UNITS_FILE), "DVC766_DATA_DIR": str(tmp_path),
        "DVC766_LOG_JSON": "false", "DVC766_LOG_LEVEL": "ERROR", "DVC766_READINESS_TIMEOUT_SECONDS": "2",
        "DVC766_DB_CONNECT_TIMEOUT_SECONDS": "2", "DVC766_SCORE_CACHE_SECONDS": "0",
        "DVC766_API_KEYS": json.dumps({ADMIN_KEY: {"role": "admin"}, READER_KEY: {"role": "reader"},
                                       SOURCE_KEY: {"role": "source", "source": "igate-h44-03", "units": ["H44.03"]}}),
    })
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "serve", "--host", "127.0.0.1", "--port", str(port), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = await KeptAliveConnection(port).open()
                status, *_ = await connection.request("GET", "/readyz")
                await connection.close()
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and process.returncode is None, "dvc766 serve did not start"
            await asyncio.sleep(0.3)
        yield port, proxy
    finally:
        await proxy.close()
        process.terminate()
        output, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode in (0, -15), output.decode(errors="replace")


async def test_a_store_outage_is_a_503_on_every_path_and_recovers_by_itself(proxied_serve):
    port, proxy = proxied_serve
    connection = await KeptAliveConnection(port).open()
    received = event("OUT-1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10))
    status, _, body, _ = await connection.request("POST", "/v1/events", [received])
    assert status == 200, body

    await proxy.close()
    portal = snapshot_call("H44.03", [Story("HS-OUT", "1.001", vn(2026, 8, 3), vn(2026, 8, 10))
                                      .snapshot_at(vn(2026, 8, 31))])
    answers = []
    for method, path, payload, key in [
        ("GET", "/v1/scores/H44.03?period=2026-08", None, READER_KEY),
        ("GET", "/v1/scores?parent=H44&period=2026-08", None, READER_KEY),
        ("GET", "/v1/units/H44.03/dossiers?period=2026-08&flag=overdue", None, READER_KEY),
        ("GET", "/v1/parked-dossiers", None, READER_KEY),
        ("POST", "/v1/events", [event("OUT-2", 2, vn(2026, 8, 4))], ADMIN_KEY),
        ("POST", "/v1/dvcqg", portal, SOURCE_KEY),
        ("GET", "/v1/scores/H44.07?period=2026-07", None, READER_KEY),
    ]:
        status, headers, body, took = await connection.request(method, path, payload, key=key)
        answers.append((path, status, headers.get("content-type"), json.loads(body).get("code"),
                        headers.get("retry-after")))
        assert took < 10, (path, took)  # bounded: the connect timeout, not a hang
    assert answers == [(path, 503, "application/problem+json", "store_unavailable", "2")
                       for path, *_ in answers], answers
    status, _, body, took = await connection.request("GET", "/readyz")
    assert status == 503 and json.loads(body)["checks"]["database"].startswith("unavailable") and took < 5

    await proxy.open()  # the store is back: nothing to restart
    deadline = time.monotonic() + 30
    while (await connection.request("GET", "/readyz"))[0] != 200:
        assert time.monotonic() < deadline, "not ready again"
        await asyncio.sleep(0.2)
    status, _, body, _ = await connection.request("POST", "/v1/events", [event("OUT-2", 2, vn(2026, 8, 4))])
    assert status == 200 and json.loads(body)["accepted"] == 1
    status, _, body, _ = await connection.request("GET", "/v1/scores/H44.03?period=2026-08", key=READER_KEY)
    assert status == 200, body
    await connection.close()


async def test_readyz_answers_within_its_bound_with_the_broker_frozen(clean_db, broker):
    import dataclasses
    import signal

    import httpx

    from services.app import create_app
    from tests.support.kafka import kafka_settings

    settings = kafka_settings(clean_db.settings, broker.bootstrap, partitions=1, readiness_timeout_seconds=1.0)
    app = create_app(("ingest", "api"), runtime=dataclasses.replace(clean_db, settings=settings))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            assert (await client.get("/readyz")).status_code == 200
            os.kill(broker.process.pid, signal.SIGSTOP)  # the broker freezes: connections open, no answers
            try:
                _until_stopped(broker.process.pid)
                started = time.monotonic()
                frozen = await client.get("/readyz")
                took = time.monotonic() - started
            finally:
                os.kill(broker.process.pid, signal.SIGCONT)
            assert frozen.status_code == 503 and took < 3, (frozen.text, took)
            checks = frozen.json()["checks"]
            assert checks["database"] == "ok" and checks["kafka"] != "ok", checks
            deadline = time.monotonic() + 30
            while (await client.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "not ready again after the broker thawed"
                await asyncio.sleep(0.2)


def _until_stopped(pid: int, timeout: float = 5.0) -> None:
    """Until every thread of ``pid`` is stopped (a signal is delivered when a thread next runs)."""
    from pathlib import Path

    deadline = time.monotonic() + timeout
    while True:
        states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0] for task in Path(f"/proc/{pid}/task").iterdir()]
        if all(state in ("T", "t") for state in states):
            return
        assert time.monotonic() < deadline, f"process {pid} not stopped: {states}"
        time.sleep(0.01)
