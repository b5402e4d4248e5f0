"""The application served for real: uvicorn on a free loopback port, in a thread with its own event loop
(and so its own runtime and database pool), for tests that need a socket (rate limits by address,
schemathesis)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from shared.settings import Settings


class LiveServer:
    def __init__(self, settings: Settings, roles: tuple[str, ...] = ("ingest", "indicators", "api")) -> None:
        from services.app import create_app, served

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        app = served(create_app(roles, settings=settings), roles)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, access_log=False,
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="live-server")

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the live server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_) -> None:
        self.server.should_exit = True
        self.thread.join(30)
