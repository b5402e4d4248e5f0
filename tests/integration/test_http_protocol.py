"""The coalescing HTTP protocol (services/http_protocol.py) over a real socket: whole responses, HEAD,
304, streamed bodies, 100-continue, pipelined requests and Connection: close, as uvicorn's own."""

import asyncio
import socket
import threading
import time

import pytest
import uvicorn

from services.http_protocol import CoalescingHttpToolsProtocol


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


@pytest.fixture(scope="module")
def server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=CoalescingHttpToolsProtocol, log_config=None,
                            access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(10)


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


@pytest.fixture(scope="module")
def answering():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    front = Answering(app)
    config = uvicorn.Config(front, host="127.0.0.1", port=port, http=CoalescingHttpToolsProtocol, log_config=None,
                            access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port, front
    server.should_exit = True
    thread.join(10)


def test_raw_answers_interleave_with_the_application_on_one_connection(answering):
    port, front = answering
    before = front.raw
    one_by_one = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        for request, ends in ((b"GET /v1/scores/hit?a=1 HTTP/1.1\r\nHost: x\r\n\r\n", b"raw:a=1"),
                              (b"GET /v1/scores/miss HTTP/1.1\r\nHost: x\r\n\r\n", b"echo:/v1/scores/miss:"),
                              (b"GET /v1/scores/hit?a=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
                               b"raw:a=2"),
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
