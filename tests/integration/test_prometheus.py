"""The alert rules and dashboards against a real Prometheus (Debian's package, installed by ./dev test).

promtool checks the rules and runs their unit tests (a case for every alert); then Prometheus, started
here on 127.0.0.1, scrapes a live `dvc766 serve` and a `dvc766 api` with two worker processes: every
rule loads and evaluates healthy, every dashboard query evaluates, every metric they name is one the
code defines, both api workers' process metrics are there, and a locked dossiers table makes readiness
fail and the stall and readiness alerts' expressions fire.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
import yaml

from tests.conftest import ADMIN_KEY, READER_KEY, ROOT, UNITS_FILE, auth
from tests.support.events import event, vn
from tests.support.kafka import free_port

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
# Grafana's variables, as Grafana would fill them for a short range.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: ./dev test installs Debian's prometheus package"
    return path


def _alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _dashboard_queries() -> list[tuple[str, str, str]]:
    queries = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", ()):
                expr = target["expr"]
                for name, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(name, value)
                queries.append((path.name, panel["title"], expr))
    return queries


def _metric_names(expr: str) -> set[str]:
    """Metric names in a query: plain ones, and the patterns of ``__name__=~"…"`` (as regular expressions)."""
    patterns = set(re.findall(r'__name__=~"([^"]+)"', expr))
    plain = re.sub(r'__name__=~"[^"]+"', "", expr)
    return patterns | set(re.findall(r"\b((?:dvc766|process)_[a-z0-9_]+)\b", plain))


def _defined_metric_names() -> set[str]:
    """Every sample name the code can export: its metric families and their samples' suffixes."""
    import services.app  # noqa: F401 - registers every service's metrics
    import services.indicators.kafka  # noqa: F401
    from prometheus_client import REGISTRY

    names = {"up"}
    for collector in list(REGISTRY._collector_to_names):  # the families and their sample names
        names |= set(REGISTRY._collector_to_names[collector])
    return names


def test_promtool_checks_the_rules_and_every_alert_has_a_test_case():
    checked = subprocess.run([_tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([_tool("promtool"), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                            capture_output=True, text=True)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert {rule["alert"] for rule in _alerts()} == firing


def test_every_rule_and_dashboard_query_names_metrics_the_code_defines():
    defined = _defined_metric_names()
    for rule in _alerts():
        for name in _metric_names(rule["expr"]):
            assert any(re.fullmatch(name, d) for d in defined), f"{rule['alert']}: {name} is not a dvc766 metric"
    queries = _dashboard_queries()
    assert len(queries) >= 30
    for dashboard, title, expr in queries:
        for name in _metric_names(expr):
            assert any(re.fullmatch(name, d) for d in defined), f"{dashboard} / {title}: {name} is not a dvc766 metric"


def _start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_http(url: str, timeout: float = 60.0, ok=lambda r: r.status_code == 200) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=2)
            if ok(last):
                return last
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} not ready: {last.text if last is not None else 'no answer'}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _query(base: str, expr: str) -> dict:
    answer = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", f"{expr}: {answer}"
    return answer["data"]


def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not seen in {timeout:.0f} s: {what}")


@pytest.fixture
def live(test_database, clean_db, tmp_path):
    """`dvc766 serve` and a two-worker `dvc766 api` on the test database, and Prometheus scraping both."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC766_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({
        "DVC766_DATABASE_URL": test_database.async_url,
        "DVC766_UNITS_FILE": str(UNITS_FILE),
        "DVC766_DATA_DIR": str(tmp_path / "data"),
        "DVC766_API_KEYS": json.dumps({ADMIN_KEY: {"role": "admin"}, READER_KEY: {"role": "reader"}}),
        "DVC766_LOG_LEVEL": "WARNING",
        "DVC766_DB_POOL_SIZE": "3",
        "DVC766_SWEEP_INTERVAL_SECONDS": "1",
        "DVC766_READINESS_METRIC_SECONDS": "1",
        "DVC766_APPLY_STALL_SECONDS": "3",
        "DVC766_DB_LOCK_TIMEOUT_MS": "500",
    })
    serve_port, api_port, prometheus_port = free_port(), free_port(), free_port()
    processes = [
        _start([sys.executable, "-m", "services.cli", "serve", "--port", str(serve_port)], env, tmp_path / "serve.log"),
        _start([sys.executable, "-m", "services.cli", "api", "--port", str(api_port)],
               {**env, "DVC766_API_WORKERS": "2"}, tmp_path / "api.log"),
    ]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "dvc766", "static_configs": [
            {"targets": [f"127.0.0.1:{serve_port}"], "labels": {"service": "serve"}},
            {"targets": [f"127.0.0.1:{api_port}"], "labels": {"service": "api"}},
        ]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    try:
        _wait_http(f"http://127.0.0.1:{serve_port}/readyz")
        _wait_http(f"http://127.0.0.1:{api_port}/readyz")
        processes.append(_start([_tool("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{prometheus_port}"], env, tmp_path / "prometheus.log"))
        _wait_http(f"{prometheus}/-/ready")
        yield {"serve": f"http://127.0.0.1:{serve_port}", "api": f"http://127.0.0.1:{api_port}",
               "prometheus": prometheus, "api_instance": f"127.0.0.1:{api_port}"}
    finally:
        for process in reversed(processes):
            _stop(process)


def test_prometheus_scrapes_the_service_and_evaluates_every_rule_and_dashboard_query(live, test_database):
    serve, prometheus = live["serve"], live["prometheus"]
    events = [event("P1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10)), event("P1", 9, vn(2026, 8, 4)),
              {"event_id": "bad", "status": 99}]
    posted = httpx.post(f"{serve}/v1/events", json=events, headers=auth(ADMIN_KEY), timeout=10).json()
    assert (posted["accepted"], posted["rejected"]) == (2, 1)
    httpx.get(f"{live['api']}/v1/scores/H44.03?period=2026-08", headers=auth(READER_KEY), timeout=10)

    targets = _until(lambda: [t for t in httpx.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
                              if t["health"] == "up"] if len(_query(prometheus, "up == 1")["result"]) == 2 else None,
                     30, "both targets up")
    assert len(targets) == 2
    _until(lambda: _query(prometheus, 'sum(dvc766_events_applied_total{service="serve"})')["result"], 30,
           "the applied events scraped")

    def rules_evaluated():
        groups = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["health"] == "ok" and r.get("evaluationTime", 0) > 0 for r in rules) else None

    rules = _until(rules_evaluated, 30, "every rule evaluated healthy")
    assert {r["name"] for r in rules} == {a["alert"] for a in _alerts()}
    assert all(not r.get("lastError") for r in rules)
    # A healthy service raises nothing (once a round of scrapes and evaluations has seen it whole).
    _until(lambda: not httpx.get(f"{prometheus}/api/v1/alerts").json()["data"]["alerts"] or None, 20,
           "no alert pending or firing")

    for dashboard, title, expr in _dashboard_queries():
        _query(prometheus, expr)  # evaluates without error
    # The queries that must have data with this service running (Kafka-only panels have none here); a rate
    # has data once two scrapes have seen its counter, which can take another scrape interval.
    for expr in ('sum by (source) (rate(dvc766_events_accepted_total{job="dvc766"}[1m]))',
                 'sum by (source, reason) (rate(dvc766_events_rejected_total{job="dvc766"}[1m]))',
                 'time() - max(dvc766_last_applied_timestamp_seconds{job="dvc766"} > 0)',
                 'time() - max(dvc766_last_sweep_timestamp_seconds{job="dvc766"} > 0)',
                 'max(dvc766_dossiers_open{job="dvc766"})', 'sum(dvc766_appliers{job="dvc766"})',
                 'sum by (instance) (dvc766_db_pool_connections_max{job="dvc766"})',
                 'count by (version) (dvc766_build_info{job="dvc766"})'):
        _until(lambda: _query(prometheus, expr)["result"], 30, expr)
    sources = {r["metric"]["source"] for r in _query(prometheus, "dvc766_events_accepted_total")["result"]}
    assert sources == {"admin:admin"}
    # Both api worker processes report their own process figures.
    pids = _query(prometheus, f'process_resident_memory_bytes{{instance="{live["api_instance"]}"}}')["result"]
    assert len({r["metric"]["pid"] for r in pids}) == 2, pids

    # A locked dossiers table: the applier stalls, readiness fails, the alerts' expressions fire.
    async def lock_and_post():
        locker = await asyncpg.connect(test_database.url)
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE dossiers IN ACCESS EXCLUSIVE MODE")
        return locker, transaction

    import asyncio

    loop = asyncio.new_event_loop()
    locker, transaction = loop.run_until_complete(lock_and_post())
    try:
        httpx.post(f"{serve}/v1/events", json=[event("P2", 2, vn(2026, 8, 5), due_at=vn(2026, 8, 12))],
                   headers=auth(ADMIN_KEY), timeout=10)
        ready = _wait_http(f"{serve}/readyz", 30, ok=lambda r: r.status_code == 503)
        assert ready.json()["checks"]["indicators"].startswith("stalled"), ready.text

        def pending(name):
            alerts = httpx.get(f"{prometheus}/api/v1/alerts").json()["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] in ("pending", "firing")]

        stalled = _until(lambda: pending("DVC766ApplyStalled"), 30, "DVC766ApplyStalled's expression true")
        not_ready = _until(lambda: pending("DVC766NotReady"), 30, "DVC766NotReady's expression true")
    finally:
        loop.run_until_complete(transaction.rollback())
        loop.run_until_complete(locker.close())
        loop.close()
    assert stalled[0]["labels"]["instance"] == serve.removeprefix("http://")
    assert {a["labels"]["check"] for a in not_ready} == {"indicators"}
    _wait_http(f"{serve}/readyz", 30)  # the lock gone, it recovers
    # With more samples now, every rule still evaluates without error.
    groups = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
    assert all(r["health"] == "ok" and not r.get("lastError") for g in groups for r in g["rules"]), groups
