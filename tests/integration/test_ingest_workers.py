"""`dvc766 ingest` with several worker processes (``ingest_workers``): one port, every batch answered
per event as with one process, duplicates found across processes, a graceful stop on SIGTERM."""

import json

import httpx
import psutil

from shared.db.raw import driver_connection
from tests.conftest import ADMIN_KEY, UNITS_FILE, auth
from tests.support.events import event, vn
from tests.support.processes import DvcProcess, service_env


async def test_ingest_with_two_workers(test_database, clean_db, tmp_path):
    env = service_env(test_database.async_url, tmp_path, units_file=UNITS_FILE, ingest_workers=2,
                      api_keys=json.dumps({ADMIN_KEY: {"role": "admin", "source": "igate"}}))
    service = DvcProcess("ingest", env).start()
    process, base = service.proc, service.url
    batches = [[event(f"W{b}-{i}", 2, vn(2026, 8, 3), unit="H44.03") for i in range(5)] for b in range(10)]
    try:
        service.wait_ready(30)
        workers = psutil.Process(process.pid).children()
        assert len(workers) == 2
        answers = []
        for batch in batches + batches:  # each on a new connection: the kernel spreads them
            response = httpx.post(f"{base}/v1/events", json=batch, headers=auth(ADMIN_KEY), timeout=10)
            assert response.status_code == 200
            answers.append([r["status"] for r in response.json()["results"]])
        assert answers == [["accepted"] * 5] * 10 + [["duplicate"] * 5] * 10
    finally:
        service.terminate()
    assert process.returncode == 0, service.output()
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)
    async with clean_db.engine.connect() as conn:
        apg = await driver_connection(conn)
        assert await apg.fetchval("SELECT count(*) FROM events") == 50
        assert await apg.fetchval("SELECT count(*) FROM pending_events") == 50
