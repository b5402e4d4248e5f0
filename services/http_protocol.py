"""uvicorn's httptools protocol, with each response's head and first body bytes sent in one write.

uvicorn writes a response's status line and headers as soon as the application starts the response,
then its body: two ``send`` system calls (and two loopback deliveries) per small JSON answer. For a
cached score answer those two writes were ~60% of the API's CPU per request (py-spy, `dvc766 api`
under wrk). Here the head is held until the first body bytes (or the end of the response, or a close)
and both leave together. Nothing else changes: interim ``100 Continue`` lines are written at once,
and a response that streams still sends each later chunk as it comes.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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
    def on_headers_complete(self) -> None:
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
