"""What a province would be told in a month: the simulated Phú Thọ month replayed day by day with the
example targets (examples/targets-h44.json) and one webhook subscribed to every event.

    .venv/bin/python bench/notifications_month.py [--scale 0.1] [--until 2026-09-03]

A fresh database gets the units, the simulated catalogue, the targets and a webhook (a real HTTP
receiver on 127.0.0.1). Then, for each day, with the clock at 07:05 and at 18:00 Vietnam time: the
events that occurred by then are posted through ingest and applied with that instant as "now", the
deadline sweeps run on it, and the notifier evaluates and delivers on it. Prints, per day, what the
receiver got (by event), and writes bench/results/notifications-month-*.json.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import orjson

from common import ADMIN_KEY, DVC766, ROOT, UNITS_FILE, base_parser, fresh_database, report

from services.app import build_runtime, create_app  # noqa: E402 (common puts the repository on sys.path)
from services.indicators.engine import IndicatorEngine  # noqa: E402
from services.indicators.worker import apply_pending  # noqa: E402
from services.notify.notifier import Notifier  # noqa: E402
from shared.db.raw import driver_connection  # noqa: E402
from shared.settings import ApiKey, Settings  # noqa: E402
from shared.timeutil import VIETNAM  # noqa: E402
from tests.support.receiver import Receiver  # noqa: E402


def simulate(scale: float, seed: int, work: Path) -> tuple[list[dict], list[dict]]:
    events_file, catalogue_file = work / "events.ndjson", work / "catalogue.json"
    subprocess.run([DVC766, "simulate", "--scale", str(scale), "--seed", str(seed), "-o", str(events_file),
                    "--catalog-out", str(catalogue_file)], check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
    events = [orjson.loads(line) for line in events_file.read_bytes().splitlines() if line]
    return events, orjson.loads(catalogue_file.read_bytes())


async def run(url: str, scale: float, seed: int, until: dt.date) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        events, catalogue = simulate(scale, seed, Path(tmp))
    for index, item in enumerate(events):
        item["_at"] = dt.datetime.fromisoformat(item["occurred_at"])
        item["_index"] = index
    settings = Settings(database_url=url, units_file=UNITS_FILE, log_json=False,
                        api_keys={ADMIN_KEY: ApiKey(role="admin", name="bench", source="simulator")})
    runtime = await build_runtime(settings, run_migrations=False)
    app = create_app(("ingest", "api"), runtime=runtime)
    engine = IndicatorEngine(runtime.calendar, settings.policy)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    per_day: dict[str, Counter] = defaultdict(Counter)
    samples: dict[str, list] = defaultdict(list)
    started = time.perf_counter()
    evaluate_seconds: list[float] = []
    import httpx

    with Receiver() as receiver:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=600) as client:
            for start in range(0, len(catalogue), 2000):  # a fresh database: upserts are the whole catalogue
                response = await client.put("/v1/catalog/procedures", json=catalogue[start:start + 2000],
                                            headers=headers)
                assert response.status_code == 200, response.text
            for path, body in (("/v1/targets?mode=full", orjson.loads((ROOT / "examples" / "targets-h44.json").read_bytes())),
                               ("/v1/webhooks?mode=full", [{"id": "province", "url": receiver.url,
                                                            "secret": "simulated-province-secret",
                                                            "events": ["target.at_risk", "target.missed", "target.met",
                                                                       "dossiers.due_soon", "source.rejects"]}])):
                response = await client.put(path, json=body, headers=headers)
                assert response.status_code == 200, response.text
            ordered = sorted(events, key=lambda e: (e["_at"], e["_index"]))
            position = 0
            day = min(e["_at"] for e in events).astimezone(VIETNAM).date()
            first_day = day
            while day <= until:
                for hour, minute in ((7, 5), (18, 0)):
                    now = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=VIETNAM)
                    batch = []
                    while position < len(ordered) and ordered[position]["_at"] <= now:
                        batch.append({k: v for k, v in ordered[position].items() if not k.startswith("_")})
                        position += 1
                    for start in range(0, len(batch), 1000):
                        response = await client.post("/v1/events", json=batch[start:start + 1000], headers=headers)
                        assert response.status_code in (200, 422), response.text
                    while await apply_pending(runtime, engine, 5000, now=now):
                        pass
                    async with runtime.engine.begin() as conn:
                        apg = await driver_connection(conn)
                        while await engine.sweep_deadlines(apg, now) or await engine.sweep_open_steps(apg, now):
                            pass
                    notifier = Notifier(runtime, clock=lambda now=now: now)
                    evaluated = time.perf_counter()
                    await notifier.evaluate_once()
                    evaluate_seconds.append(time.perf_counter() - evaluated)
                    while await notifier.deliver_due():
                        pass
                    await notifier.stop()
                day += dt.timedelta(days=1)
            received = list(receiver.received)
    await runtime.engine.dispose()
    for item in received:
        body = orjson.loads(item.body)
        stamp = dt.datetime.fromisoformat(body["created_at"]).date().isoformat()
        per_day[stamp][body["event"]] += 1
        if len(samples[body["event"]]) < 3:
            samples[body["event"]].append(body["data"])
    days = []
    day = first_day
    while day <= until:
        counts = per_day.get(day.isoformat(), Counter())
        days.append({"day": day.isoformat(), **{k: counts.get(k, 0) for k in (
            "target.at_risk", "target.missed", "target.met", "dossiers.due_soon", "source.rejects")}})
        day += dt.timedelta(days=1)
    return {"events": len(events), "deliveries": len(received), "seconds": round(time.perf_counter() - started, 1),
            "evaluation_seconds": {"passes": len(evaluate_seconds), "mean": round(sum(evaluate_seconds)
                                   / len(evaluate_seconds), 3), "max": round(max(evaluate_seconds), 3)},
            "days": days, "samples": samples, "by_target": by_target(received)}


def by_target(received) -> dict:
    out: dict[str, Counter] = defaultdict(Counter)
    for item in received:
        body = orjson.loads(item.body)
        if body["event"].startswith("target."):
            out[body["data"]["id"]][body["event"]] += 1
    return {k: dict(v) for k, v in sorted(out.items())}


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=766)
    parser.add_argument("--until", default="2026-09-03", help="last day replayed (Vietnam time)")
    args = parser.parse_args()
    with fresh_database("dvc766_notify") as url:
        result = asyncio.run(run(url, args.scale, args.seed, dt.date.fromisoformat(args.until)))
    print(f"{result['events']} events, {result['deliveries']} deliveries in {result['seconds']} s; one evaluation "
          f"pass: {result['evaluation_seconds']}", file=sys.stderr)
    print("by target:", orjson.dumps(result["by_target"]).decode())
    report(f"notifications-month-s{args.scale:g}", result["days"], extra={k: v for k, v in result.items()
                                                                           if k != "days"})


if __name__ == "__main__":
    main()
