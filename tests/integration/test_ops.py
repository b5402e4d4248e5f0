"""Health, readiness, metrics, OpenAPI; and `dvc766 serve` as a real process, stopped gracefully."""

import json
import logging
import platform
import time

from importlib.metadata import version

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_KEY, READER_KEY, UNITS_FILE, auth
from tests.support.events import event, vn
from tests.support.processes import DvcProcess, service_env


async def test_health_ready_metrics_openapi(app_client, clean_db):
    assert (await app_client.get("/healthz")).json() == {"status": "ok"}
    ready = await app_client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
    await app_client.post("/v1/events", json=[event("M1", 2, vn(2026, 8, 3)), {"status": 99}],
                          headers=auth(ADMIN_KEY))
    metrics = (await app_client.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("dvc766_events_accepted_total", (("source", "admin:admin"), ("transport", "http")))] >= 1
    assert samples[("dvc766_events_rejected_total",
                    (("reason", "missing_field"), ("source", "admin:admin"), ("transport", "http")))] >= 1
    assert 'route="/v1/events"' in metrics  # labelled by route template, not raw path
    assert samples[("dvc766_build_info", (("python_version", platform.python_version()),
                                          ("version", version("dvc766"))))] == 1
    assert samples[("dvc766_db_pool_connections_max", ())] >= 2 * clean_db.settings.db_pool_size
    assert samples[("dvc766_db_pool_connections_in_use", ())] >= 0
    async with clean_db.engine.connect():  # a connection checked out shows while it is
        held = (await app_client.get("/metrics")).text
    in_use = {s.name: s.value for f in text_string_to_metric_families(held) for s in f.samples}
    assert in_use["dvc766_db_pool_connections_in_use"] >= 1
    spec = (await app_client.get("/openapi.json")).json()
    assert {"/v1/events", "/v1/scores/{unit_code}", "/v1/scores", "/v1/units/{unit_code}/dossiers"} <= set(
        spec["paths"])


def test_serve_applies_in_the_background_and_stops_gracefully(test_database, clean_db, tmp_path):
    env = service_env(test_database.async_url, tmp_path, units_file=UNITS_FILE,
                      api_keys=json.dumps({ADMIN_KEY: {"role": "admin"}, READER_KEY: {"role": "reader"}}))
    with DvcProcess("serve", env) as serve:
        events = [event("S1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10)), event("S1", 9, vn(2026, 8, 4))]
        posted = httpx.post(f"{serve.url}/v1/events", json=events, headers=auth(ADMIN_KEY), timeout=10)
        assert posted.json()["accepted"] == 2
        received = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and received == 0:  # the background worker applies them
            body = httpx.get(f"{serve.url}/v1/scores/H44.03?period=2026-08", headers=auth(READER_KEY),
                             timeout=5).json()
            received = body["counters"]["received"]
            time.sleep(0.1)
        assert received == 1
        assert body["counters"]["on_time"] == 1
        output = serve.terminate()
    assert '"msg":"dvc766 stopped"' in output and "Application shutdown complete" in output


async def test_request_ids_in_and_out_and_one_access_line_per_request(app_client, caplog):
    caplog.set_level(logging.INFO, logger="dvc766.access")
    given = await app_client.get("/healthz", headers={"X-Request-ID": "portal-7f3a"})
    fresh = await app_client.get("/v1/scores/H44.03?period=2026-08", headers=auth(READER_KEY))
    hostile = await app_client.get("/healthz", headers={"X-Request-ID": "x" * 300})
    assert given.headers["x-request-id"] == "portal-7f3a"
    assert len(fresh.headers["x-request-id"]) == 32 and fresh.headers["x-request-id"] != "portal-7f3a"
    assert hostile.headers["x-request-id"] != "x" * 300
    lines = [r for r in caplog.records if r.name == "dvc766.access"]
    by_id = {r.request_id: r for r in lines}
    assert by_id["portal-7f3a"].status == 200 and by_id["portal-7f3a"].path == "/healthz"
    scores = by_id[fresh.headers["x-request-id"]]
    assert (scores.method, scores.route, scores.status) == ("GET", "/v1/scores/{unit_code}", fresh.status_code)
    assert scores.duration_ms >= 0


async def test_the_units_file_seeds_and_never_overwrites_changes_made_through_the_api(app_client, settings):
    from services.app import build_runtime
    from shared.runtime import upsert_units
    from shared.units import load_units_file

    original = next(u for u in load_units_file(UNITS_FILE) if u.code == "H44.03")
    renamed = {"code": "H44.03", "name": "Sở Tư pháp (đổi tên)", "level": original.level, "parent": original.parent}
    put = await app_client.put("/v1/units", json=[renamed], headers={**auth(ADMIN_KEY), "content-type": "application/json"})
    assert put.status_code == 200, put.text
    try:
        restarted = await build_runtime(settings, run_migrations=False)  # a restart loads the units file again
        try:
            assert restarted.units.get("H44.03").name == "Sở Tư pháp (đổi tên)"
        finally:
            await restarted.engine.dispose()
    finally:
        await upsert_units(app_client.app.state.runtime.engine, [original])
        await app_client.app.state.runtime.reload_units()
