from tests.conftest import ADMIN_KEY, auth, drain
from tests.support.events import event, vn


async def test_post_apply_and_read_scores(app_client):
    batch = [
        event("D1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10), channel=2),
        event("D1", 9, vn(2026, 8, 5)),
    ]
    response = await app_client.post("/v1/events", json=batch, headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2
    assert await drain(app_client.app.state.runtime) == 2
    scores = await app_client.get("/v1/scores/H44.03?period=2026-08", headers=auth(ADMIN_KEY))
    assert scores.status_code == 200
    body = scores.json()
    assert body["counters"]["received"] == 1
    tdgq = next(g for g in body["groups"] if g["code"] == "TDGQ")
    assert tdgq["components"][0]["numerator"] == 1
    assert tdgq["score"] == 20.0
