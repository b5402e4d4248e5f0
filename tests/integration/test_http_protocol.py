"""The HTTP protocols (services/http_protocol.py) over a real socket: whole responses, HEAD, 304,
streamed bodies, 100-continue, pipelined requests and Connection: close, as uvicorn's own; cached
answers interleaved with the application's on one connection, with either protocol in front."""

import asyncio
import socket
import threading
import time

import pytest
import uvicorn

from services.http_protocol import CachedReadsProtocol, CoalescingHttpToolsProtocol

PROTOCOLS = [CoalescingHttpToolsProtocol, CachedReadsProtocol]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/not-modified":
        await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", b'"x"')]})
        await send({"type": "http.response.body", "body": b""})
        return
    answer = b"echo:" + path.encode() + b":" + body
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


class Running:
    """A uvicorn server in a thread, on a free loopback port."""

    def __init__(self, application, protocol, **options) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(application, host="127.0.0.1", port=self.port, http=protocol, log_config=None,
                                access_log=False, lifespan="off", **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module", params=PROTOCOLS, ids=lambda p: p.__name__)
def server(request):
    running = Running(app, request.param)
    yield running.port
    running.stop()


def exchange(port: int, data: bytes, *, until: bytes, then: bytes | None = None) -> bytes:
    """Send ``data``; read until ``until`` has been seen (``then``: sent once the first reply is in)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(data)
        received = b""
        while until not in received:
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
            if then is not None and b"100 Continue" in received:
                conn.sendall(then)
                then = None
        return received


def test_whole_responses_pipelined_and_closed(server):
    replies = exchange(server, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
                               b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", until=b"echo:/c:")
    assert replies.count(b"HTTP/1.1 200 OK") == 3
    assert replies.index(b"echo:/a:") < replies.index(b"echo:/b:") < replies.index(b"echo:/c:")
    assert b"connection: close" in replies.lower()


def test_head_304_and_streamed_bodies(server):
    head = exchange(server, b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n", until=b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 8" in head.lower()
    assert not head.split(b"\r\n\r\n", 1)[1]
    not_modified = exchange(server, b"GET /not-modified HTTP/1.1\r\nHost: x\r\n\r\n", until=b"\r\n\r\n")
    assert not_modified.startswith(b"HTTP/1.1 304") and b'etag: "x"' in not_modified
    streamed = exchange(server, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n", until=b"0\r\n\r\n")
    assert b"transfer-encoding: chunked" in streamed.lower()
    assert b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n" in streamed


def test_100_continue_is_not_held(server):
    request = b"POST /p HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    reply = exchange(server, request, until=b"echo:/p:hello", then=b"hello")
    assert reply.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")


def test_the_head_waits_for_the_first_body_bytes():
    from services.http_protocol import _HeadHoldingTransport

    class Recorder:
        def __init__(self):
            self.writes, self.closed = [], False

        def write(self, data):
            self.writes.append(data)

        def close(self):
            self.closed = True

    raw = Recorder()
    holding = _HeadHoldingTransport(raw)
    holding.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    holding.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert raw.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    holding.write(b"{}")
    assert raw.writes[1] == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}" and len(raw.writes) == 2
    holding.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    holding.close()  # closing sends what was held first
    assert raw.writes[2].startswith(b"HTTP/1.1 500") and raw.closed


class Answering:
    """An application with a cache in front (as CachedReads): /v1/scores/hit is answered raw."""

    def __init__(self, inner):
        self.app = inner
        self.raw = 0

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)

    def raw_answer(self, path, query_string, headers, default_headers):
        if path != "/v1/scores/hit":
            return None
        self.raw += 1
        body = b"raw:" + query_string
        return (b"HTTP/1.1 200 OK\r\n" + default_headers + b"content-length: " + str(len(body)).encode()
                + b"\r\n\r\n" + body)


@pytest.fixture(scope="module", params=PROTOCOLS, ids=lambda p: p.__name__)
def answering(request):
    front = Answering(app)
    running = Running(front, request.param)
    yield running.port, front
    running.stop()


def test_raw_answers_interleave_with_the_application_on_one_connection(answering):
    port, front = answering
    before = front.raw
    one_by_one = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        for request, ends in ((b"GET /v1/scores/hit?a=1 HTTP/1.1\r\nHost: x\r\n\r\n", b"raw:a=1"),
                              (b"GET /v1/scores/miss HTTP/1.1\r\nHost: x\r\n\r\n", b"echo:/v1/scores/miss:"),
                              (b"GET /v1/scores/hit?a=2 HTTP/1.1\r\nHost: x\r\n\r\n", b"raw:a=2"),
                              (b"POST /v1/scores/hit HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
                               b"echo:/v1/scores/hit:hi")):
            conn.sendall(request)
            while ends not in one_by_one:
                one_by_one += conn.recv(65536)
    assert one_by_one.count(b"HTTP/1.1 200 OK") == 4 and front.raw == before + 2
    # Pipelined behind a request still in flight: answered in order, by the application.
    pipelined = exchange(port, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/scores/hit?b=1 HTTP/1.1\r\n"
                               b"Host: x\r\n\r\n", until=b"echo:/v1/scores/hit:")
    assert pipelined.index(b"0\r\n\r\n") < pipelined.index(b"echo:/v1/scores/hit:")
    # HTTP/1.0 and Connection: close go the usual way (which closes the connection).
    closing = exchange(port, b"GET /v1/scores/hit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                       until=b"echo:/v1/scores/hit:")
    assert b"connection: close" in closing.lower()


def _read_until(conn, received: bytes, ends: bytes) -> bytes:
    while ends not in received:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed before {ends!r}"
        received += chunk
    return received


def test_cached_reads_come_back_after_a_miss_and_pipelined_hits_stay_in_order():
    front = Answering(app)
    running = Running(front, CachedReadsProtocol)
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as conn:
            # hit, miss (the application answers), hit again: answered raw, so the connection came back
            received = b""
            for request, ends in ((b"GET /v1/scores/hit?n=1 HTTP/1.1\r\nHost: x\r\n\r\n", b"raw:n=1"),
                                  (b"GET /v1/scores/miss HTTP/1.1\r\nHost: x\r\n\r\n", b"echo:/v1/scores/miss:"),
                                  (b"GET /v1/scores/hit?n=2 HTTP/1.1\r\nHost: x\r\n\r\n", b"raw:n=2")):
                conn.sendall(request)
                received = _read_until(conn, received, ends)
            assert front.raw == 2
            assert [type(c) for c in list(running.server.server_state.connections)] == [CachedReadsProtocol]
            # Pipelined in one write (empty lines before the second), split inside the last request:
            # hit, hit, miss, hit, in order.
            conn.sendall(b"GET /v1/scores/hit?n=3 HTTP/1.1\r\nHost: x\r\n\r\n\r\n\r\nGET /v1/scores/hit?n=3b HTTP/1.1\r\n"
                         b"Host: x\r\n\r\nGET /v1/scores/miss2 HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/scores/hit?n=4 HTTP/1.1\r\nHo")
            time.sleep(0.1)
            conn.sendall(b"st: x\r\n\r\n")
            tail = _read_until(conn, b"", b"raw:n=4")
            assert tail.count(b"HTTP/1.1 200 OK") == 4
            assert (tail.index(b"raw:n=3") < tail.index(b"raw:n=3b") < tail.index(b"echo:/v1/scores/miss2:")
                    < tail.index(b"raw:n=4"))
            # A request in pieces is answered once whole; a POST goes to the application (and the connection
            # stays with uvicorn's protocol, whose own cached path still answers hits).
            conn.sendall(b"GET /v1/scores/hit?n=5 HTTP/1.1\r\n")
            time.sleep(0.05)
            conn.sendall(b"Host: x\r\n\r\nPOST /v1/scores/hit HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
            tail = _read_until(conn, b"", b"echo:/v1/scores/hit:hi")
            assert tail.index(b"raw:n=5") < tail.index(b"echo:/v1/scores/hit:hi")
            conn.sendall(b"GET /v1/scores/hit?n=6 HTTP/1.1\r\nHost: x\r\n\r\n")
            _read_until(conn, b"", b"raw:n=6")
            assert front.raw == 7
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as conn:
            # Malformed input is uvicorn's to answer (400), as before.
            conn.sendall(b"GET /v1/scores/hit?n=7 HTTP/1.1\r\nHost x\r\n\r\n")
            assert _read_until(conn, b"", b"\r\n\r\n").startswith(b"HTTP/1.1 400")
    finally:
        running.stop()


def test_idle_connections_of_cached_reads_are_closed_and_shutdown_closes_the_rest():
    front = Answering(app)
    running = Running(front, CachedReadsProtocol, timeout_keep_alive=1)
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as idle, \
                socket.create_connection(("127.0.0.1", running.port), timeout=5) as busy:
            idle.sendall(b"GET /v1/scores/hit?i=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            _read_until(idle, b"", b"raw:i=1")
            started = time.monotonic()
            for n in range(6):  # busy keeps talking past the timeout; idle says nothing
                busy.sendall(b"GET /v1/scores/hit?b=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
                _read_until(busy, b"", b"raw:b=%d" % n)
                time.sleep(0.3)
            assert idle.recv(1) == b""  # closed by the server
            assert time.monotonic() - started < 4
            running.stop()  # graceful shutdown closes the busy one too, and returns
            assert busy.recv(1) == b""
            assert not running.thread.is_alive()
    finally:
        running.stop()
