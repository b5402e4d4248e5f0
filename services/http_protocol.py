"""uvicorn's httptools protocol: cached answers written straight from the parser; each other
response's head and first body bytes sent in one write.

uvicorn writes a response's status line and headers as soon as the application starts the response,
then its body: two ``send`` system calls (and two loopback deliveries) per small JSON answer. For a
cached score answer those two writes were ~60% of the API's CPU per request (py-spy, `dvc766 api`
under wrk). Here the head is held until the first body bytes (or the end of the response, or a close)
and both leave together. Nothing else changes: interim ``100 Continue`` lines are written at once,
and a response that streams still sends each later chunk as it comes.

Cached answers: when the application is served behind ``CachedReads`` (services/api/fastpath.py), a
keep-alive HTTP/1.1 GET under ``/v1/scores`` with nothing else in flight on its connection is first
offered to ``CachedReads.raw_answer`` as soon as its headers are parsed. A hit (key checked, same
bytes and headers as the ASGI path would write) is written at once: no ASGI scope, task or messages.
Anything else — a miss, another method or path, pipelined requests, a paused writer — goes the usual
way.

``CachedReadsProtocol`` (``dvc766 api`` and ``serve``) goes further: it is the connection's protocol
while its requests are cache hits, with nothing of uvicorn's per-request machinery (scope, cycle,
keep-alive timer re-armed per request), which cost about as much CPU as the answer itself: a cached
read takes 57–64 instead of 71–89 µs of the api's CPU (bench/README.md, round 7). Any request it does
not answer is handed, with every byte from that request's first one on, to a
``CoalescingHttpToolsProtocol`` for the same connection, which serves it as uvicorn does; after a
cache miss under ``/v1/scores`` the connection comes back once that response is done and nothing
else is in flight.
"""

from __future__ import annotations

import asyncio

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

PREFIX = b"/v1/scores"
_MAX_UNANSWERED = 64 * 1024  # more bytes than this without an answer (huge headers): uvicorn's to judge


def _raw_answers(app):
    """The ``raw_answer`` of a ``CachedReads`` in the server's application chain (uvicorn wraps it in
    its own middleware), or None."""
    for _ in range(8):
        if app is None:
            return None
        answer = getattr(app, "raw_answer", None)
        if answer is not None:
            return answer
        app = getattr(app, "app", None)
    return None


class _HeadHoldingTransport:
    """Stands in for the connection's transport in one request-response cycle."""

    __slots__ = ("_transport", "_held")

    def __init__(self, transport) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 1"):
            self._held = data  # a final response's head: wait for its body
        else:
            self._transport.write(data)

    def flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


_answers_of: dict = {}  # application -> its raw_answer (or None), found once per server
_default_headers: list = [None, b""]  # the server's default header lines, and them encoded


def _raw_answer_of(app):
    """``_raw_answers`` of an application, looked up once (not per connection)."""
    if app not in _answers_of:
        _answers_of[app] = _raw_answers(app)
    return _answers_of[app]


def _default_head(server_state) -> bytes:
    """The server's default header lines (date, server), encoded once per change (every second)."""
    headers = server_state.default_headers  # replaced by the server every second (date)
    if _default_headers[0] is not headers:
        _default_headers[:] = headers, b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return _default_headers[1]


def _cached_read(parser, url: bytes) -> tuple[str, bytes] | None:
    """Path and query string of a request a cached answer may serve (a keep-alive HTTP/1.1 GET under
    ``PREFIX``, no upgrade, no percent-escapes in the path), or None."""
    if parser.get_method() != b"GET" or parser.get_http_version() != "1.1" or not parser.should_keep_alive() \
            or parser.should_upgrade():
        return None
    parsed = httptools.parse_url(url)
    path = parsed.path
    if not path.startswith(PREFIX) or b"%" in path:
        return None
    return path.decode("ascii"), parsed.query or b""


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._answered = False
        self._raw_answer = _raw_answer_of(self.app)

    def on_message_begin(self) -> None:
        self._answered = False
        super().on_message_begin()

    def on_body(self, body: bytes) -> None:
        if not self._answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._answered:
            super().on_message_complete()

    def _answer_from_cache(self) -> bool:
        if self.pipeline or self.root_path or self.flow.write_paused \
                or (self.cycle is not None and not self.cycle.response_complete):
            return False
        target = _cached_read(self.parser, self.url)
        if target is None:
            return False
        data = self._raw_answer(*target, self.headers, _default_head(self.server_state))
        if data is None:
            return False
        self._answered = True
        self.transport.write(data)
        self.on_response_complete()  # what a finished cycle does: count it, arm the keep-alive timeout
        return True

    def on_headers_complete(self) -> None:
        if self._raw_answer is not None and self._answer_from_cache():
            return
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None or cycle.transport is not self.transport:
            return  # an upgrade (no new cycle)
        holding = _HeadHoldingTransport(self.transport)
        cycle.transport = holding
        finished = cycle.on_response

        def on_response() -> None:  # a response without body bytes (HEAD): its head goes now
            holding.flush()
            finished()

        cycle.on_response = on_response


class _Served(CoalescingHttpToolsProtocol):
    """uvicorn's protocol for the requests ``CachedReadsProtocol`` hands over; gives the connection
    back after a cache miss's response when nothing else is in flight."""

    def __init__(self, *args, reader: CachedReadsProtocol, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._reader = reader
        self._in_message = False
        self.give_back = False  # set per hand-over: only a missed cached read returns

    def on_message_begin(self) -> None:
        self._in_message = True
        super().on_message_begin()

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if (self.give_back and not self._in_message and not self.pipeline and self.cycle is not None
                and self.cycle.response_complete and not self.transport.is_closing()
                and not self.flow.read_paused and not self.flow.write_paused):
            self._unset_keepalive_if_required()
            self.connections.discard(self)
            self._reader.take_back()


class CachedReadsProtocol(asyncio.Protocol):
    """A connection's protocol while its requests are cached reads (module docstring). Built by uvicorn
    with the arguments of its own protocols; ``_Served`` gets the same ones when a request is handed on."""

    def __init__(self, config, server_state, app_state, _loop=None) -> None:
        self._args = (config, server_state, app_state, _loop)
        if not config.loaded:
            config.load()
        self._raw_answer = _raw_answer_of(config.loaded_app)
        self._served_root = bool(config.root_path)
        self._server_state = server_state
        self._connections = server_state.connections
        self._loop = _loop or asyncio.get_event_loop()
        self._keep_alive = config.timeout_keep_alive
        self._served: _Served | None = None  # uvicorn's protocol for this connection, once needed
        self._serving = False  # whether the connection is with ``_served`` now
        self.transport = None

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        self._connections.add(self)
        self._start()
        self._timer = self._loop.call_later(self._keep_alive, self._idle_check)

    def _start(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._buffer = b""  # bytes received from the first one of the first request not yet answered
        self._start_at = 0  # where in the bytes being parsed the current request starts
        self._hand_over = False
        self._give_back = False
        self._write_paused = False
        self._last_seen = self._loop.time()

    def data_received(self, data: bytes) -> None:
        self._last_seen = self._loop.time()
        received = self._buffer + data if self._buffer else data
        self._received = received
        self._start_at = 0
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # uvicorn answers these
            self._hand_over = True
        if self._hand_over or len(received) - self._start_at > _MAX_UNANSWERED:
            self._hand_on(received[self._start_at:])
            return
        self._buffer = received[self._start_at:]
        self._received = b""

    def connection_lost(self, exc) -> None:
        self._connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._served is not None:  # an ASGI task may still wait on its cycle
            self._served.connection_lost(exc)

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False

    # what uvicorn's server calls
    def shutdown(self) -> None:
        """Graceful shutdown: nothing of ours is ever in flight (answers are written at once)."""
        self.transport.close()

    # parser callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in (b"content-length", b"transfer-encoding") and value.strip() not in (b"0", b""):
            self._body = True  # a GET with a body is the application's (its end is not a blank line)
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._hand_over:
            return
        target = None
        if not (self._body or self._write_paused or self._served_root or self._raw_answer is None):
            target = _cached_read(self._parser, self._url)
        if target is None:
            self._hand_over = True
            return
        # The request ends at its blank line (it has no body): the next one starts right after it.
        received = self._received
        start = self._start_at
        while received[start:start + 1] in (b"\r", b"\n"):  # empty lines before a request are allowed
            start += 1
        end = received.find(b"\r\n\r\n", start)
        if end < 0:
            self._hand_over = True
            return
        data = self._raw_answer(*target, self._headers, _default_head(self._server_state))
        if data is None:
            self._hand_over = True
            self._give_back = True
            return
        self.transport.write(data)
        self._server_state.total_requests += 1
        self._start_at = end + 4

    def on_body(self, body: bytes) -> None:
        pass

    def on_message_complete(self) -> None:
        pass

    # hand-over and back
    def _hand_on(self, data: bytes) -> None:
        """The connection goes to uvicorn's protocol, from the first byte of the request it must answer."""
        give_back = self._give_back
        served = self._served
        if served is None:
            config, server_state, app_state, loop = self._args
            served = self._served = _Served(config, server_state, app_state, loop, reader=self)
            self._connections.discard(self)
            served.connection_made(self.transport)
        else:
            self._connections.discard(self)
            self._connections.add(served)
        served.give_back = give_back
        self._serving = True
        self._parser = None
        self._buffer = b""
        self._received = b""
        self.transport.set_protocol(served)
        if data:
            served.data_received(data)

    def take_back(self) -> None:
        """``_Served`` is done with a missed read and nothing else is in flight: back to cached reads."""
        self._serving = False
        self._connections.add(self)
        self._start()
        self.transport.set_protocol(self)

    def _idle_check(self) -> None:
        """The keep-alive timeout, checked lazily: one timer per connection, not one per request."""
        self._timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._serving:  # uvicorn's protocol keeps its own keep-alive meanwhile
            self._timer = self._loop.call_later(self._keep_alive, self._idle_check)
            return
        idle = self._loop.time() - self._last_seen
        if idle >= self._keep_alive:
            transport.close()
        else:
            self._timer = self._loop.call_later(self._keep_alive - idle, self._idle_check)
