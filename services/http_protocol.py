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
"""

from __future__ import annotations

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

PREFIX = b"/v1/scores"


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


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    _answers_of: dict = {}  # application -> its raw_answer (or None), found once per server
    _default_headers: tuple[list, bytes] = ([], b"")  # the server's default header lines, encoded

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._answered = False
        app = self.app
        if app not in self._answers_of:
            self._answers_of[app] = _raw_answers(app)
        self._raw_answer = self._answers_of[app]

    def on_message_begin(self) -> None:
        self._answered = False
        super().on_message_begin()

    def on_body(self, body: bytes) -> None:
        if not self._answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._answered:
            super().on_message_complete()

    def _default_head(self) -> bytes:
        headers = self.server_state.default_headers  # replaced by the server every second (date)
        cached = CoalescingHttpToolsProtocol._default_headers
        if cached[0] is not headers:
            cached = CoalescingHttpToolsProtocol._default_headers = (
                headers, b"".join(name + b": " + value + b"\r\n" for name, value in headers))
        return cached[1]

    def _answer_from_cache(self) -> bool:
        parser = self.parser
        if parser.get_method() != b"GET" or parser.get_http_version() != "1.1" or not parser.should_keep_alive() \
                or parser.should_upgrade() or self.pipeline or self.root_path or self.flow.write_paused \
                or (self.cycle is not None and not self.cycle.response_complete):
            return False
        url = httptools.parse_url(self.url)
        path = url.path
        if not path.startswith(PREFIX) or b"%" in path:
            return False
        data = self._raw_answer(path.decode("ascii"), url.query or b"", self.headers, self._default_head())
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
