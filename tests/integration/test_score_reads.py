"""Score reads from the score cards (services/indicators/cards.py): the same bytes until the data moves,
ETags and 304s, Cache-Control, keys checked on every request; a feed write, a batch and a deadline
passing each show on another api process; `dvc766 api` with several worker processes."""

import asyncio
import dataclasses
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import pytest_asyncio

from services.indicators.cards import read_card
from services.indicators.engine import IndicatorEngine
from services.indicators.worker import sweep
from shared.auth import KeyRing
from shared.settings import ApiKey
from shared.timeutil import VIETNAM, utcnow
from tests.conftest import ADMIN_KEY, READER_KEY, SOURCE_KEY, UNITS_FILE, auth, drain
from tests.support.events import event, vn

AUGUST = [
    event("F1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10), channel=2),
    event("F1", 9, vn(2026, 8, 5)),
    event("F2", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 5), channel=1),
    event("F2", 9, vn(2026, 8, 7)),
    event("F3", 2, vn(2026, 8, 4), unit="H44.07", due_at=vn(2026, 8, 20)),
]
SCORE = "/v1/scores/H44.03?period=2026-08"
RANKING = "/v1/scores?parent=H44&period=2026-08&level=COMMUNE&limit=5"


@pytest_asyncio.fixture
async def client(app_client):
    await app_client.post("/v1/events", json=AUGUST, headers=auth(ADMIN_KEY))
    await drain(app_client.app.state.runtime)
    return app_client


async def test_a_score_is_the_same_bytes_and_headers_until_the_data_moves(client):
    first = await client.get(SCORE, headers=auth(READER_KEY))
    second = await client.get(SCORE, headers=auth(READER_KEY))
    assert first.status_code == 200 and second.content == first.content
    headers = ("content-type", "content-length", "etag", "cache-control", "vary")
    assert {k: second.headers[k] for k in headers} == {k: first.headers[k] for k in headers}
    assert first.headers["cache-control"] == "public, max-age=1" and first.headers["vary"] == "Authorization"
    assert second.json()["counters"]["received"] == 2

    pages = []
    for _ in range(2):
        page = await client.get(RANKING, headers=auth(READER_KEY))
        assert page.status_code == 200 and page.headers["etag"]
        pages.append(page.content)
    assert pages[0] == pages[1] and len(json.loads(pages[0])["items"]) == 5
    nxt = await client.get(RANKING + "&cursor=" + json.loads(pages[0])["next_cursor"], headers=auth(READER_KEY))
    assert nxt.json()["items"][0]["rank"] == 6


async def test_if_none_match_gets_a_304(client):
    first = await client.get(SCORE, headers=auth(READER_KEY))
    etag = first.headers["etag"]
    again = await client.get(SCORE, headers={**auth(READER_KEY), "If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    other = await client.get(SCORE, headers={**auth(READER_KEY), "If-None-Match": '"stale", W/' + etag})
    assert other.status_code == 304
    assert (await client.get(SCORE, headers={**auth(READER_KEY), "If-None-Match": "*"})).status_code == 304
    changed = await client.get(SCORE, headers={**auth(READER_KEY), "If-None-Match": '"stale"'})
    assert changed.status_code == 200 and changed.content == first.content
    ranking = await client.get(RANKING, headers=auth(READER_KEY))
    assert (await client.get(RANKING, headers={**auth(READER_KEY), "If-None-Match": ranking.headers["etag"]})
            ).status_code == 304


async def test_keys_are_checked_on_every_read_and_a_revoked_key_stops_working(client):
    assert (await client.get(SCORE, headers=auth(READER_KEY))).status_code == 200
    assert (await client.get(SCORE)).status_code == 401
    assert (await client.get(SCORE, headers=auth("nope"))).json()["code"] == "bad_api_key"
    assert (await client.get(SCORE, headers=auth(SOURCE_KEY))).status_code == 403
    client.app.state.keyring = KeyRing({ADMIN_KEY: ApiKey(role="admin", name="admin")})
    revoked = await client.get(SCORE, headers=auth(READER_KEY))
    assert (revoked.status_code, revoked.json()["code"]) == (401, "bad_api_key")
    assert (await client.get(SCORE, headers=auth(ADMIN_KEY))).status_code == 200


async def test_applied_changes_are_served_at_once(client):
    before = await client.get(SCORE, headers=auth(READER_KEY))
    assert before.json()["counters"]["received"] == 2
    await client.post("/v1/events", json=[event("F4", 2, vn(2026, 8, 6), due_at=vn(2026, 8, 9))],
                      headers=auth(ADMIN_KEY))
    await drain(client.app.state.runtime)
    after = await client.get(SCORE, headers=auth(READER_KEY))
    assert after.json()["counters"]["received"] == 3 and after.headers["etag"] != before.headers["etag"]
    assert (await client.get(SCORE, headers={**auth(READER_KEY), "If-None-Match": before.headers["etag"]})
            ).status_code == 200
    children = "/v1/scores?parent=H44&period=2026-08&limit=200"
    await client.post("/v1/events", json=[event("F5", 2, vn(2026, 8, 6), unit="H44.07")], headers=auth(ADMIN_KEY))
    await drain(client.app.state.runtime)
    changed = (await client.get(children, headers=auth(READER_KEY))).json()["items"]
    assert next(i for i in changed if i["unit"]["code"] == "H44.07")["received"] == 2
    for period in ("2026-Q3", "2026"):  # the quarter's and the year's cards move with the month's
        card = (await client.get(f"/v1/scores/H44?period={period}", headers=auth(READER_KEY))).json()
        assert card["counters"]["received"] == 5, period


async def test_a_league_table_page_is_sent_again_only_while_its_rows_are_unchanged(client):
    children = "/v1/scores?parent=H44&period=2026-08&limit=200"
    pages = [await client.get(children + sort, headers=auth(READER_KEY)) for sort in ("", "", "&sort=code")]
    assert pages[0].content == pages[1].content and pages[0].headers["etag"] == pages[1].headers["etag"]
    assert pages[2].content != pages[0].content  # another request, another page
    await client.post("/v1/events", json=[event("F6", 2, vn(2026, 8, 6), unit="H44.07")], headers=auth(ADMIN_KEY))
    await drain(client.app.state.runtime)
    after = await client.get(children, headers=auth(READER_KEY))
    assert after.headers["etag"] != pages[0].headers["etag"]
    assert next(i for i in after.json()["items"] if i["unit"]["code"] == "H44.07")["received"] == 2
    again = await client.get(children, headers={**auth(READER_KEY), "If-None-Match": after.headers["etag"]})
    assert again.status_code == 304


async def test_a_read_survives_its_pooled_connection_dropped_by_the_server(client):
    runtime = client.app.state.runtime
    first = await client.get(SCORE, headers=auth(READER_KEY))
    async with runtime.reads.acquire() as conn:
        pid = conn.get_server_pid()
    async with runtime.engine.connect() as conn:
        await conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
    runtime.card_cache.moved()  # read from the database, not from this process's cards
    again = await client.get(SCORE, headers=auth(READER_KEY))
    assert again.status_code == 200 and again.content == first.content


async def test_an_api_process_reuses_a_card_until_a_write_anywhere_moves_it(client):
    """A card read is reused (up to its max-age, here 60 s) until a write moves it, whichever process
    writes: here the writer shares nothing with the api but the database, so only the writer's
    notification can tell it."""
    from services.app import create_app

    settings = client.app.state.runtime.settings.model_copy(update={"score_max_age_seconds": 60})
    runtime = dataclasses.replace(client.app.state.runtime, settings=settings, card_cache=None)
    elsewhere = dataclasses.replace(runtime)
    await read_card(elsewhere, "H44.03", "2026-08")  # computed before this api listens
    app = create_app(("ingest", "api"), runtime=runtime)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
            await asyncio.wait_for(app.state.card_listener.listening.wait(), 10)
            first = await api.get(SCORE, headers=auth(READER_KEY))
            assert first.json()["counters"]["received"] == 2
            # Reused: a change no writer announced (made behind the API's back) does not show.
            async with runtime.engine.begin() as conn:
                await conn.exec_driver_sql("UPDATE score_cards SET body = '\\x7b7d'::bytea")
            assert (await api.get(SCORE, headers=auth(READER_KEY))).content == first.content
            # A batch applied elsewhere: its notification empties the cache.
            await api.post("/v1/events", json=[event("F7", 2, vn(2026, 8, 6), due_at=vn(2026, 8, 9))],
                           headers=auth(ADMIN_KEY))
            await drain(elsewhere)
            deadline = time.monotonic() + 5
            while (answer := await api.get(SCORE, headers=auth(READER_KEY))).content == first.content:
                assert time.monotonic() < deadline, "the card was not read again after a write elsewhere"
                await asyncio.sleep(0.02)
            assert answer.json()["counters"]["received"] == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_api(test_database, tmp_path, keys: dict, workers: int = 1) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {
        **os.environ,
        "DVC766_DATABASE_URL": test_database.async_url,
        "DVC766_UNITS_FILE": str(UNITS_FILE),
        "DVC766_DATA_DIR": str(tmp_path),
        "DVC766_API_WORKERS": str(workers),
        "DVC766_API_KEYS": json.dumps(keys),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "api", "--port", str(port)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(process.communicate()[0].decode(errors="replace"))


def _stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=40)[0].decode(errors="replace")
    # uvicorn re-raises the signal it shut down on (one process); the supervisor of several exits 0.
    assert process.returncode in (0, -signal.SIGTERM), output
    return output


@pytest.fixture
def other_api(test_database, clean_db, tmp_path):
    """A `dvc766 api` process of its own on the test database: nothing in this process can tell it
    anything but what is in the database."""
    process, base = _start_api(test_database, tmp_path, {READER_KEY: {"role": "reader"}})
    with httpx.Client(base_url=base, headers=auth(READER_KEY), timeout=10) as other:
        yield other
    _stop(process)


async def test_a_batch_a_feed_write_and_a_deadline_passing_each_show_on_another_api_process(app_client, other_api):
    runtime = app_client.app.state.runtime
    now = utcnow()
    period = now.astimezone(VIETNAM).strftime("%Y-%m")

    def counters() -> dict:
        response = other_api.get(f"/v1/scores/H44.03?period={period}")
        assert response.status_code == 200
        return response.json()["counters"]

    def component(cid: str) -> dict:
        groups = other_api.get(f"/v1/scores/H44?period={period}").json()["groups"]
        return next(c for g in groups for c in g["components"] if c["id"] == cid)

    assert counters()["received"] == 0  # read once: its card exists from now on
    assert component("1.4")["denominator"] == 0

    # A batch.
    due = now + dt.timedelta(seconds=2)
    await app_client.post("/v1/events", json=[event("X1", 2, now - dt.timedelta(minutes=1), due_at=due)],
                          headers=auth(ADMIN_KEY))
    await drain(runtime)
    assert (counters()["received"], counters()["open_in_time"], counters()["open_overdue"]) == (1, 1, 0)

    # A feed write (reported totals: 1.4's denominator is at least what the reporting system says).
    response = await app_client.put("/v1/reported-totals", json=[{"unit_code": "H44", "period": period,
                                                                  "received": 40}], headers=auth(ADMIN_KEY))
    assert response.status_code == 200
    assert component("1.4")["denominator"] == 40

    # The deadline passing, with no event: the sweep.
    time.sleep(max(0.0, (due - utcnow()).total_seconds()) + 0.5)
    assert await sweep(runtime, IndicatorEngine(runtime.calendar, runtime.settings.policy)) == 1
    assert (counters()["open_in_time"], counters()["open_overdue"]) == (0, 1)


def _read_response(conn: socket.socket, request: bytes) -> tuple[bytes, list, bytes]:
    """Send one request; its status line, headers without the date and request id, and body (by content-length)."""
    conn.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = [tuple(line.split(b": ", 1)) for line in lines]
    length = int(dict(headers).get(b"content-length", b"0"))
    while len(body) < length:
        body += conn.recv(65536)
    return status, [h for h in headers if h[0] not in (b"date", b"x-request-id")], body


def test_api_with_two_workers_serves_sums_metrics_and_stops_gracefully(test_database, clean_db, tmp_path):
    process, base = _start_api(test_database, tmp_path, {READER_KEY: {"role": "reader"}}, workers=2)
    import psutil

    workers = psutil.Process(process.pid).children()
    try:
        assert len(workers) == 2
        bodies = set()
        for _ in range(20):  # new connections: the kernel spreads them over both workers
            response = httpx.get(f"{base}{SCORE}", headers=auth(READER_KEY), timeout=10)
            assert response.status_code == 200
            bodies.add(response.json()["unit"]["code"])
        assert bodies == {"H44.03"}
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=10) as conn:
            request = f"GET {SCORE}&layout=decision HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER_KEY}\r\n\r\n"
            answers = [_read_response(conn, request.encode()) for _ in range(3)]
            etag = dict(answers[0][1])[b"etag"].decode()
            not_modified = _read_response(conn, request.replace("\r\n\r\n", f"\r\nIf-None-Match: {etag}\r\n\r\n")
                                          .encode())
        assert answers[0] == answers[1] == answers[2] and answers[0][0] == b"HTTP/1.1 200 OK"
        assert not_modified[0] == b"HTTP/1.1 304 Not Modified" and not_modified[2] == b""
        assert dict(not_modified[1])[b"etag"] == etag.encode()
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        line = next(x for x in metrics.splitlines()
                    if x.startswith('dvc766_http_requests_total{method="GET",route="/v1/scores/{unit_code}"'))
        assert float(line.rsplit(" ", 1)[1]) == 23.0  # summed over the workers (20 + 3 on one connection)
    finally:
        _stop(process)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)
