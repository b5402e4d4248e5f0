"""Rate limits over a real loopback socket (issue 19): per API key, per client address, and far
stricter for failed authentication; 429 problem JSON with Retry-After; probes never limited.
Each client address is its own 127.0.0.x (all of 127/8 is loopback)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ADMIN_KEY, READER_KEY, auth
from tests.support.processes import live_server


@pytest.fixture(scope="module")
def server(settings):
    with live_server(settings, rate_limit_key_per_second=0.01, rate_limit_key_burst=3,
                    rate_limit_address_per_second=0.01, rate_limit_address_burst=10,
                    rate_limit_auth_failures_per_minute=0.5, rate_limit_auth_failure_burst=3) as live:
        yield live


def client_from(server, address: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, transport=httpx.HTTPTransport(local_address=address), timeout=10)


def assert_limited(response: httpx.Response, detail: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert (body["code"], body["retry_after"]) == ("rate_limited", int(response.headers["retry-after"]))
    assert detail in body["detail"]


def test_a_key_gets_its_burst_then_429_with_retry_after(server):
    with client_from(server, "127.0.0.11") as client:
        answers = [client.get("/v1/units", headers=auth(READER_KEY)) for _ in range(4)]
        assert [r.status_code for r in answers[:3]] == [200, 200, 200]
        assert_limited(answers[3], "this API key")
    with client_from(server, "127.0.0.12") as other:  # the key's bucket, whatever the address
        assert_limited(other.get("/v1/units", headers=auth(READER_KEY)), "this API key")
        assert other.get("/v1/units", headers=auth(ADMIN_KEY)).status_code == 200  # another key: its own


def test_an_address_gets_its_burst_then_429(server):
    with client_from(server, "127.0.0.21") as client:
        answers = [client.get("/openapi.json") for _ in range(11)]
        assert [r.status_code for r in answers[:10]] == [200] * 10
        assert_limited(answers[10], "this address")
        assert [client.get("/healthz").status_code for _ in range(20)] == [200] * 20  # probes: never limited
    with client_from(server, "127.0.0.22") as other:
        assert other.get("/openapi.json").status_code == 200


def test_failed_authentication_is_limited_far_sooner_but_a_valid_key_still_gets_in(server):
    with client_from(server, "127.0.0.31") as client:
        answers = [client.get("/v1/units", headers=auth(f"guess-{i}")) for i in range(4)]
        assert [r.status_code for r in answers[:3]] == [401, 401, 401]
        assert_limited(answers[3], "failed authentications")
        assert_limited(client.get("/v1/units"), "failed authentications")  # no key at all: the same
        assert_limited(client.post("/v1/dvcqg", headers={"token": "guess"}, json={}), "failed authentications")
        assert client.get("/v1/units", headers=auth(ADMIN_KEY)).status_code == 200
