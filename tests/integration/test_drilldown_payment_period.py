"""3.6's drill-down lists the dossiers 3.6 counts: by the month of the processing start (first status 4),
not the received month (indicators.md §3), so the items agree with the component's denominator."""

from tests.conftest import ADMIN_KEY, READER_KEY, auth, drain
from tests.support.events import event, vn

FEE = {"fee_required": True}


async def items_and_component(client, period):
    r = await client.get("/v1/units/H44.03/components/3.6/items", params={"period": period},
                         headers=auth(READER_KEY))
    assert r.status_code == 200, r.text
    s = await client.get("/v1/scores/H44.03", params={"period": period}, headers=auth(READER_KEY))
    c36 = next(c for g in s.json()["groups"] for c in g["components"] if c["id"] == "3.6")
    return sorted(i["dossier_code"] for i in r.json()["items"]), (c36["numerator"], c36["denominator"])


async def test_payment_drill_down_follows_the_processing_start_month(app_client):
    batch = [
        # Received in July, processing started in August, not paid online: counts (and costs) in August.
        event("P-JUL-AUG", 2, vn(2026, 7, 30), attributes=FEE),
        event("P-JUL-AUG", 4, vn(2026, 8, 3), attributes=FEE),
        # Received and started in August, not paid online: August.
        event("P-AUG", 2, vn(2026, 8, 5), attributes=FEE),
        event("P-AUG", 4, vn(2026, 8, 6), attributes=FEE),
        # Received in August, started in September: September's, not August's.
        event("P-AUG-SEP", 2, vn(2026, 8, 28), attributes=FEE),
        event("P-AUG-SEP", 4, vn(2026, 9, 2), attributes=FEE),
        # Received in August, never started: the received month (payment_period_fallback = received).
        event("P-AUG-OPEN", 2, vn(2026, 8, 20), attributes=FEE),
        # Paid online: counts in the denominator, never listed.
        event("P-PAID", 2, vn(2026, 8, 7), attributes={**FEE, "paid_online": True}),
        event("P-PAID", 4, vn(2026, 8, 7, 10), attributes={**FEE, "paid_online": True}),
    ]
    r = await app_client.post("/v1/events", json=batch, headers=auth(ADMIN_KEY))
    assert r.status_code == 200 and r.json()["accepted"] == len(batch), r.text
    await drain(app_client.app.state.runtime)

    listed, (numerator, denominator) = await items_and_component(app_client, "2026-08")
    assert listed == ["P-AUG", "P-AUG-OPEN", "P-JUL-AUG"]
    assert (numerator, denominator) == (1, 4)
    assert denominator - numerator == len(listed)

    listed, pair = await items_and_component(app_client, "2026-07")
    assert listed == [] and pair == (0, 0)
    listed, pair = await items_and_component(app_client, "2026-09")
    assert listed == ["P-AUG-SEP"] and pair == (0, 1)
    # A quarter holds every month's anchor once.
    listed, pair = await items_and_component(app_client, "2026-Q3")
    assert listed == ["P-AUG", "P-AUG-OPEN", "P-AUG-SEP", "P-JUL-AUG"] and pair == (1, 5)
