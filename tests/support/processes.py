"""`dvc766` roles run as real processes on free loopback ports, for tests that need a process of their
own: a socket, several workers, a SIGKILL. One class, so every such test starts, waits and stops them
the same way, and none outlives its test (the conftest's autouse fixture stops what is left)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

_running: list[DvcProcess] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(database_url: str, data_dir: str | Path, **settings: object) -> dict[str, str]:
    """The environment of a `dvc766` process: this one's without its DVC766_ settings and without
    PROMETHEUS_MULTIPROC_DIR (the child's metrics are its own), then ``settings`` as DVC766_ variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC766_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env["DVC766_DATABASE_URL"] = database_url
    env["DVC766_DATA_DIR"] = str(data_dir)
    env.update({f"DVC766_{name.upper()}": str(value) for name, value in settings.items()})
    return env


class DvcProcess:
    """One `dvc766 <role>` process (the code of the current directory) with its output kept in a file."""

    def __init__(self, role: str, env: dict[str, str], *, name: str | None = None,
                 args: tuple[str, ...] = ("--host", "127.0.0.1")) -> None:
        self.role = role
        self.env = env
        self.name = name or role
        self.args = args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> DvcProcess:
        self.log = tempfile.NamedTemporaryFile(prefix=f"dvc766-{self.name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "services.cli", self.role, *self.args,
                                      "--port", str(self.port)],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        _running.append(self)
        return self

    def __enter__(self) -> DvcProcess:
        if self.proc is None:
            self.start()
        self.wait_ready()
        return self

    def __exit__(self, *_) -> None:
        self.stop()

    def _ready(self, client_get) -> httpx.Response | None:
        assert self.alive(), f"dvc766 {self.role} exited:\n{self.output()[-4000:]}"
        try:
            response = client_get(f"{self.url}/readyz")
        except httpx.TransportError:
            return None
        return response if response.status_code == 200 else None

    def wait_ready(self, timeout: float = 60.0) -> httpx.Response:
        """Until /readyz answers 200 (blocking: for a test with nothing else on its event loop)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (response := self._ready(lambda url: httpx.get(url, timeout=2))) is not None:
                return response
            time.sleep(0.1)
        raise AssertionError(f"dvc766 {self.role} not ready:\n{self.output()[-4000:]}")

    async def ready(self, timeout: float = 60.0) -> httpx.Response:
        """Until /readyz answers 200, without blocking this process's event loop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while loop.time() < deadline:
                assert self.alive(), f"dvc766 {self.role} exited:\n{self.output()[-4000:]}"
                try:
                    response = await client.get(f"{self.url}/readyz")
                    if response.status_code == 200:
                        return response
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"dvc766 {self.role} not ready:\n{self.output()[-4000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self) -> str:
        """SIGTERM, a graceful stop that must succeed (uvicorn re-raises the signal it stopped on; a
        supervisor of several workers exits 0); returns the output."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(40)
        assert code in (0, -signal.SIGTERM), f"exit {code}:\n{self.output()[-4000:]}"
        return self.output()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop in time; for clean-up, asserts nothing."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")


def running() -> int:
    """How many processes were started so far: a mark for :func:`kill_started_since`."""
    return len(_running)


def kill_started_since(mark: int) -> None:
    """Kill every process started after ``mark`` that is still running (a test's own, not a wider
    fixture's): none may keep applying to the next test's tables."""
    while len(_running) > mark:
        process = _running.pop()
        if process.alive():
            process.kill()


def live_server(settings, **overrides: object) -> DvcProcess:
    """`dvc766 serve` on the test database with the test settings' keys and units, plus ``overrides``
    (settings by name); use as a context manager: started and ready inside, stopped after."""
    keys = {key: spec.model_dump(mode="json", exclude_none=True) for key, spec in settings.api_keys.items()}
    env = service_env(settings.database_url or "", settings.data_dir, units_file=settings.units_file or "",
                      api_keys=json.dumps(keys), log_level="WARNING", **overrides)
    return DvcProcess("serve", env)
