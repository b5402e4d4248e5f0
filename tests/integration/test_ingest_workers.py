"""`dvc766 ingest` with several worker processes (``ingest_workers``): one port, every batch answered
per event as with one process, duplicates found across processes, a graceful stop on SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil

from shared.db.raw import driver_connection
from tests.conftest import ADMIN_KEY, UNITS_FILE, auth
from tests.support.events import event, vn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_ingest_with_two_workers(test_database, clean_db, tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "DVC766_DATABASE_URL": test_database.async_url,
        "DVC766_UNITS_FILE": str(UNITS_FILE),
        "DVC766_DATA_DIR": str(tmp_path),
        "DVC766_INGEST_WORKERS": "2",
        "DVC766_API_KEYS": json.dumps({ADMIN_KEY: {"role": "admin", "source": "igate"}}),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "ingest", "--host", "127.0.0.1",
                                "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    batches = [[event(f"W{b}-{i}", 2, vn(2026, 8, 3), unit="H44.03") for i in range(5)] for b in range(10)]
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        workers = psutil.Process(process.pid).children()
        assert len(workers) == 2
        answers = []
        for batch in batches + batches:  # each on a new connection: the kernel spreads them
            response = httpx.post(f"{base}/v1/events", json=batch, headers=auth(ADMIN_KEY), timeout=10)
            assert response.status_code == 200
            answers.append([r["status"] for r in response.json()["results"]])
        assert answers == [["accepted"] * 5] * 10 + [["duplicate"] * 5] * 10
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=40)[0].decode(errors="replace")
    assert process.returncode == 0, output
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)
    async with clean_db.engine.connect() as conn:
        apg = await driver_connection(conn)
        assert await apg.fetchval("SELECT count(*) FROM events") == 50
        assert await apg.fetchval("SELECT count(*) FROM pending_events") == 50
