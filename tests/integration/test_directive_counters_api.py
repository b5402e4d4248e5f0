"""The directives' counters in a score response and in the league table, from events through ingest."""

from tests.conftest import ADMIN_KEY, READER_KEY, auth, drain
from tests.support.events import event, vn


async def test_directive_counters_in_scores_and_league_table(app_client):
    events = [
        event("R1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10)), event("R1", 3, vn(2026, 8, 4)),
        event("S1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10)), event("S1", 8, vn(2026, 8, 4)),
        event("W1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10)), event("W1", 7, vn(2026, 8, 4)),
        event("L1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 5)),
        event("L1", 9, vn(2026, 8, 7), attributes={"apology_letter": False}),
    ]
    response = await app_client.post("/v1/events", json=events, headers=auth(ADMIN_KEY))
    assert response.status_code == 200 and response.json()["accepted"] == len(events)
    await drain(app_client.app.state.runtime)

    score = (await app_client.get("/v1/scores/H44.03", params={"period": "2026-08"}, headers=auth(READER_KEY))).json()
    counters = score["counters"]
    assert (counters["returned"], counters["stopped"], counters["withdrawn"]) == (1, 1, 1)
    assert counters["late_without_apology"] == 1

    table = (await app_client.get("/v1/scores", params={"parent": "H44", "period": "2026-08", "sort": "code",
                                                         "limit": 500}, headers=auth(READER_KEY))).json()
    row = next(item for item in table["items"] if item["unit"]["code"] == "H44.03")
    assert row["directives"] == {"returned": 1, "stopped": 1, "withdrawn": 1, "dossiers_with_2plus_supplements": 0,
                                 "late_without_apology": 1, "overdue_steps": 0}
