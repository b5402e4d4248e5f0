"""The split deployment on the real Kafka-protocol broker (Tansu): a real system's portal sync (TD's calls,
tests/support/clients.py) goes to a `dvc766 ingest` process, which produces the mapped events to the
topic like any canonical event; `dvc766 indicators` workers count them, one SIGKILLed mid-stream and
replaced. The counters equal one clean run over what is on the topic, and the rules' expectations."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json

import httpx
import orjson
import pytest

from services.indicators.engine import IndicatorEngine
from services.indicators.replay import check
from shared.db.raw import driver_connection
from shared.kafka import SOURCE_HEADER, ensure_topics
from tests.integration.test_crash import start_worker
from tests.support.clients import TDDossier, TDHistoryRow, ThanhHoaTD
from tests.support.kafka import (
    end_offsets,
    kafka_env,
    kafka_settings,
    live_counters,
    read_all,
    reference_counters,
    stored_offsets,
    wait_caught_up,
)
from tests.support.processes import DvcProcess
from tests.support.portal import vn

pytestmark = pytest.mark.slow
TD_KEY = "td-split-key"
DOSSIERS = 150
IDENTIFIERS = {"H44.07": "000.00.07.H44", "H44.100": "000.20.01.H44"}


@pytest.fixture
async def kafka_rt(clean_db, broker):
    settings = kafka_settings(clean_db.settings, broker.bootstrap, kafka_max_batch_records=100)
    await ensure_topics(settings, [settings.kafka_topic, settings.kafka_dead_letter_topic])
    async with clean_db.engine.begin() as conn:
        apg = await driver_connection(conn)
        for code, identifier in IDENTIFIERS.items():
            await apg.execute("UPDATE units SET identifier = $2 WHERE code = $1", code, identifier)
    try:
        yield dataclasses.replace(clean_db, settings=settings)
    finally:
        async with clean_db.engine.begin() as conn:
            await (await driver_connection(conn)).execute("UPDATE units SET identifier = NULL")


def ingest_process(runtime) -> DvcProcess:
    """One `dvc766 ingest` process in Kafka mode, started."""
    keys = {TD_KEY: {"role": "source", "source": "td-h44", "units": ["H44"]}}
    env = {**kafka_env(runtime.settings, runtime.settings.database_url), "DVC766_API_KEYS": json.dumps(keys)}
    return DvcProcess("ingest", env).start()


def lives(n: int) -> list[TDDossier]:
    """TD dossiers of Sở Công Thương and of a commune (codes under their identifiers), every fifth one
    with a supplement request that TD sends as 9."""
    out = []
    for i in range(n):
        commune = i % 4 == 3
        identifier = "000.20.01.H44" if commune else "000.00.07.H44"
        received = vn(2026, 8, 3 + i % 20, 8)
        out.append(TDDossier(f"{identifier}-2608{3 + i % 20:02d}-{i:05d}", f"1.00{i % 3}", "x", identifier,
                             str(1 + i % 2), received=received, due=vn(2026, 8, 10 + i % 20, 17), status="4",
                             history=[TDHistoryRow(vn(2026, 8, 3 + i % 20, 9), "")]))
    return out


async def replay(td: ThanhHoaTD, dossiers: list[TDDossier]) -> None:
    assert set(await td.run(dossiers)) == {"synced"}
    for i, d in enumerate(dossiers):  # then a supplement request (sent as 9) or the end
        if i % 5 == 0:
            d.status, d.supplement_requested = "5", d.received + dt.timedelta(hours=7)
            d.history.append(TDHistoryRow(d.supplement_requested, "5"))
        else:
            d.status, d.ended = "9", d.received + dt.timedelta(days=1, hours=2)
            d.history.append(TDHistoryRow(d.ended, "", action="Kết thúc xử lý"))
        d.synced = False
    assert set(await td.run(dossiers)) == {"synced"}
    for d in dossiers:  # the result returned
        if d.status == "9":
            d.status, d.returned, d.synced = "10", d.ended.replace(hour=15), False
    outcome = await td.run(dossiers)
    assert outcome.count("synced") == sum(1 for d in dossiers if d.status == "10")
    for d in dossiers:  # an operator marks them all unsynced: every dossier re-sent, nothing new in it
        d.synced = False
    assert set(await td.run(dossiers)) == {"synced"}


async def test_portal_sync_through_dvc766_ingest_is_on_the_topic_and_counted_once(kafka_rt):
    settings = kafka_rt.settings
    ingest = ingest_process(kafka_rt)
    first = start_worker(kafka_rt, "a")
    try:
        await ingest.ready()
        async with httpx.AsyncClient(base_url=ingest.url, timeout=30) as http:
            base = f"madonvi=000.00.00.H44&token={TD_KEY}"
            td = ThanhHoaTD(http, url_create=f"/v1/dvcqg/DongBoHoSoMC?{base}&isUpdating=False",
                            url_update=f"/v1/dvcqg/DongBoHoSoMC?{base}&isUpdating=True",
                            url_steps=f"/v1/dvcqg/CapNhatTienDoHoSoMC?{base}")
            dossiers = lives(DOSSIERS)
            sending = asyncio.create_task(replay(td, dossiers))
            # Kill the worker once it has stored some offsets while the system is still sending.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 90
            while sum((await stored_offsets(kafka_rt, settings.kafka_group_id)).values()) < 300:
                assert first.alive(), first.output()[-3000:]
                assert not sending.done(), "the stream ended before the worker was killed"
                assert loop.time() < deadline
                await asyncio.sleep(0.02)
            first.kill()
            killed_at = sum((await stored_offsets(kafka_rt, settings.kafka_group_id)).values())
            assert not sending.done()
            second = start_worker(kafka_rt, "b")
            await sending
        assert all(c.status == 200 and str(c.reply["error_code"]) == "0" for c in td.calls)

        # On the topic: every mapped event, under the key's source, keyed by its dossier.
        messages = await read_all(settings.kafka_bootstrap_servers, settings.kafka_topic, expected=1, timeout=10, idle=1.0)
        ends = await end_offsets(settings.kafka_bootstrap_servers, settings.kafka_topic, expected=len(messages))
        assert len(messages) == sum(ends.values()) > killed_at
        bodies = [orjson.loads(m.value) for m in sorted(messages, key=lambda m: (m.partition, m.offset))]
        assert all(dict(m.headers)[SOURCE_HEADER] == b"td-h44" for m in messages)
        assert all(m.key == orjson.loads(m.value)["dossier_code"].encode() for m in messages)
        assert all(b["event_id"].startswith("dvcqg:") for b in bodies)

        await wait_caught_up(kafka_rt, settings.kafka_group_id, ends, timeout=120, alive=second.alive)
        await second.ready()
        second.terminate()
    finally:
        ingest.stop()
        for process in (first, locals().get("second")):
            if process is not None and process.alive():
                process.kill()

    # Exactly once: the counters of one clean run over the topic's messages, whatever was killed.
    assert await live_counters(kafka_rt) == reference_counters(kafka_rt, bodies, "td-h44")
    assert await check(kafka_rt, IndicatorEngine(kafka_rt.calendar, settings.policy)) == []
    async with kafka_rt.engine.connect() as conn:
        apg = await driver_connection(conn)
        distinct = len({b["event_id"] for b in bodies})
        assert await apg.fetchval("SELECT count(*) FROM events") == distinct < len(bodies)  # re-sends: once
        rows = await apg.fetch("SELECT unit_code, count(*) AS n, count(ended_at) AS ended, "
                               "sum(supplement_count) AS supplements FROM dossiers GROUP BY unit_code")
    by_unit = {r["unit_code"]: (r["n"], r["ended"], r["supplements"]) for r in rows}
    communes = sum(1 for i in range(DOSSIERS) if i % 4 == 3)
    collapsed = [i for i in range(DOSSIERS) if i % 5 == 0]
    assert by_unit["H44.100"][0] == communes and by_unit["H44.07"][0] == DOSSIERS - communes
    # Every fifth dossier's 9 was a supplement request (the history row at the same instant says 5): open.
    assert sum(n for n, _, _ in by_unit.values()) - sum(e for _, e, _ in by_unit.values()) == len(collapsed)
    assert sum(s for _, _, s in by_unit.values()) == len(collapsed)
