"""Cached score reads served before routing (services/api/fastpath.py): same bytes as the application,
ETags and 304s, keys checked on every request, invalidation when data changes; `dvc766 api` with
several worker processes."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest_asyncio

from shared.auth import KeyRing
from shared.settings import ApiKey
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
async def served_client(clean_db):
    """The app as the server runs it: behind the fast path (``services.app.served``)."""
    from services.app import create_app, served

    app = create_app(("ingest", "api"), runtime=clean_db)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=served(app, ("ingest", "api")))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            await client.post("/v1/events", json=AUGUST, headers=auth(ADMIN_KEY))
            await drain(clean_db)
            yield client


def responses(client):
    return client.app.state.responses


async def test_a_hit_answers_the_same_bytes_and_headers_as_the_application(served_client):
    first = await served_client.get(SCORE, headers=auth(READER_KEY))  # computed by the route
    assert first.status_code == 200 and len(responses(served_client)) == 1
    hits = responses(served_client).hits
    second = await served_client.get(SCORE, headers=auth(READER_KEY))  # from the fast path
    assert responses(served_client).hits == hits + 1
    assert second.content == first.content
    assert {k: second.headers[k] for k in ("content-type", "content-length", "etag")} == {
        k: first.headers[k] for k in ("content-type", "content-length", "etag")}
    assert second.json()["counters"]["received"] == 2

    pages = []
    for _ in range(2):
        page = await served_client.get(RANKING, headers=auth(READER_KEY))
        assert page.status_code == 200
        pages.append(page.content)
    assert pages[0] == pages[1] and len(json.loads(pages[0])["items"]) == 5
    # Another query string is another answer (here: the next page), computed by the route.
    nxt = await served_client.get(RANKING + "&cursor=" + json.loads(pages[0])["next_cursor"],
                                  headers=auth(READER_KEY))
    assert nxt.json()["items"][0]["rank"] == 6


async def test_if_none_match_gets_a_304_from_the_route_and_from_the_fast_path(served_client):
    first = await served_client.get(SCORE, headers=auth(READER_KEY))
    etag = first.headers["etag"]
    hits = responses(served_client).hits
    again = await served_client.get(SCORE, headers={**auth(READER_KEY), "If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert responses(served_client).hits == hits + 1
    other = await served_client.get(SCORE, headers={**auth(READER_KEY), "If-None-Match": '"stale", W/' + etag})
    assert other.status_code == 304
    changed = await served_client.get(SCORE, headers={**auth(READER_KEY), "If-None-Match": '"stale"'})
    assert changed.status_code == 200 and changed.content == first.content
    # The route itself answers 304 too (a new query string: not cached yet).
    decision = await served_client.get(SCORE + "&layout=decision", headers=auth(READER_KEY))
    layout = SCORE + "&layout=decision&x=1"
    uncached = await served_client.get(layout, headers={**auth(READER_KEY), "If-None-Match": decision.headers["etag"]})
    assert uncached.status_code == 304


async def test_keys_are_checked_on_every_hit_and_a_revoked_key_stops_working(served_client):
    assert (await served_client.get(SCORE, headers=auth(READER_KEY))).status_code == 200
    assert (await served_client.get(SCORE, headers=auth(READER_KEY))).status_code == 200  # a hit
    assert (await served_client.get(SCORE)).status_code == 401
    assert (await served_client.get(SCORE, headers=auth("nope"))).json()["code"] == "bad_api_key"
    assert (await served_client.get(SCORE, headers=auth(SOURCE_KEY))).status_code == 403
    # Keys change by replacing the key ring: the reader key is gone, its cached principal with it.
    served_client.app.state.keyring = KeyRing({ADMIN_KEY: ApiKey(role="admin", name="admin")})
    revoked = await served_client.get(SCORE, headers=auth(READER_KEY))
    assert (revoked.status_code, revoked.json()["code"]) == (401, "bad_api_key")
    assert (await served_client.get(SCORE, headers=auth(ADMIN_KEY))).status_code == 200


async def test_applied_changes_are_served_at_once(served_client):
    before = await served_client.get(SCORE, headers=auth(READER_KEY))
    assert before.json()["counters"]["received"] == 2
    await served_client.post("/v1/events", json=[event("F4", 2, vn(2026, 8, 6), due_at=vn(2026, 8, 9))],
                             headers=auth(ADMIN_KEY))
    await drain(served_client.app.state.runtime)  # applied: the data version moves
    after = await served_client.get(SCORE, headers=auth(READER_KEY))
    assert after.json()["counters"]["received"] == 3 and after.headers["etag"] != before.headers["etag"]
    assert (await served_client.get(SCORE, headers={**auth(READER_KEY), "If-None-Match": before.headers["etag"]})
            ).status_code == 200
    # The league table of the province's direct children (H44.07 among them) moves too.
    children = "/v1/scores?parent=H44&period=2026-08&limit=200"
    ranking = await served_client.get(children, headers=auth(READER_KEY))
    assert (await served_client.get(children, headers=auth(READER_KEY))).content == ranking.content
    version = served_client.app.state.runtime.data_version
    response = await served_client.post("/v1/events", json=[event("F5", 2, vn(2026, 8, 6), unit="H44.07")],
                                        headers=auth(ADMIN_KEY))
    assert response.status_code == 200 and served_client.app.state.runtime.data_version > version
    await drain(served_client.app.state.runtime)
    changed = (await served_client.get(children, headers=auth(READER_KEY))).json()["items"]
    assert next(i for i in changed if i["unit"]["code"] == "H44.07")["received"] == 2


async def test_concurrent_misses_of_one_answer_go_through_the_application_once(clean_db):
    from services.app import create_app, served

    app = create_app(("ingest", "api"), runtime=clean_db)
    front = served(app, ("ingest", "api"))
    inner, through = front.app, []

    async def counting(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET":
            through.append(scope["path"])
        await inner(scope, receive, send)

    front.app = counting
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=front), base_url="http://testserver") as client:
            await client.post("/v1/events", json=AUGUST, headers=auth(ADMIN_KEY))
            await drain(clean_db)
            await client.get("/v1/scores/H44", params={"period": "2026-08"}, headers=auth(READER_KEY))
            through.clear()
            answers = await asyncio.gather(*(client.get(SCORE, headers=auth(READER_KEY)) for _ in range(20)))
            assert {a.status_code for a in answers} == {200} and len({a.content for a in answers}) == 1
            assert through == ["/v1/scores/H44.03"]  # the others waited for its answer
            # A problem is not cached: each request gets it from the application.
            missing = await asyncio.gather(*(client.get("/v1/scores/H00?period=2026-08", headers=auth(READER_KEY))
                                             for _ in range(3)))
            assert [m.status_code for m in missing] == [404] * 3 and through.count("/v1/scores/H00") == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_response(conn: socket.socket, request: bytes) -> tuple[bytes, list, bytes]:
    """Send one request; its status line, headers without the date, and body (by content-length)."""
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
    return status, [h for h in headers if h[0] != b"date"], body


def test_api_with_two_workers_serves_sums_metrics_and_stops_gracefully(test_database, clean_db, tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "DVC766_DATABASE_URL": test_database.async_url,
        "DVC766_UNITS_FILE": str(UNITS_FILE),
        "DVC766_DATA_DIR": str(tmp_path),
        "DVC766_API_WORKERS": "2",
        "DVC766_API_KEYS": json.dumps({READER_KEY: {"role": "reader"}}),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "api", "--port", str(port)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        import psutil

        workers = psutil.Process(process.pid).children()
        assert len(workers) == 2
        bodies = set()
        for _ in range(20):  # new connections: the kernel spreads them over both workers
            response = httpx.get(f"{base}{SCORE}", headers=auth(READER_KEY), timeout=10)
            assert response.status_code == 200
            bodies.add(response.json()["unit"]["code"])
        assert bodies == {"H44.03"}
        # One connection (one worker): a miss answered by the application, then hits written by the
        # protocol straight from the cache: the same status line, headers (but the date) and body.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            request = f"GET {SCORE}&layout=decision HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER_KEY}\r\n\r\n"
            answers = [_read_response(conn, request.encode()) for _ in range(3)]
            etag = dict(answers[0][1])[b"etag"].decode()
            not_modified = _read_response(conn, request.replace("\r\n\r\n", f"\r\nIf-None-Match: {etag}\r\n\r\n")
                                          .encode())
        # The miss went through the application, which adds its request id; hits are the protocol's own.
        assert [name for name, _ in answers[0][1]][-1] == b"x-request-id"
        answers = [(status, [h for h in headers if h[0] != b"x-request-id"], body) for status, headers, body in answers]
        assert answers[0] == answers[1] == answers[2] and answers[0][0] == b"HTTP/1.1 200 OK"
        assert [name for name, _ in answers[0][1]] == [b"server", b"etag", b"content-length", b"content-type"]
        assert not_modified == (b"HTTP/1.1 304 Not Modified", [(b"server", b"uvicorn"), (b"etag", etag.encode())], b"")
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        line = next(x for x in metrics.splitlines()
                    if x.startswith('dvc766_http_requests_total{method="GET",route="/v1/scores/{unit_code}"'))
        assert float(line.rsplit(" ", 1)[1]) == 23.0  # summed over the workers (20 + 3 on one connection)
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=40)[0].decode(errors="replace")
    assert process.returncode == 0, output
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)
