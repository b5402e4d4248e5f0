"""The application served for real: `dvc766 serve` in a process of its own on a free loopback port, for
tests that need a socket (rate limits by address, schemathesis)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from shared.settings import Settings


class LiveServer:
    def __init__(self, settings: Settings, **overrides: object) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        keys = {key: spec.model_dump(mode="json", exclude_none=True) for key, spec in settings.api_keys.items()}
        self.env = {
            **os.environ,
            "DVC766_DATABASE_URL": settings.database_url or "",
            "DVC766_DATA_DIR": str(settings.data_dir),
            "DVC766_UNITS_FILE": str(settings.units_file or ""),
            "DVC766_API_KEYS": json.dumps(keys),
            "DVC766_LOG_LEVEL": "WARNING",
            **{f"DVC766_{name.upper()}": str(value) for name, value in overrides.items()},
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # its metrics are its own, not this process's
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> LiveServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dvc766 serve exited: {self.process.stderr.read().decode()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("dvc766 serve did not become ready")

    def __exit__(self, *_) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
