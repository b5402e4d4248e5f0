"""Schemathesis against the live application: every operation of /openapi.json with a
bounded number of generated requests (fixed seed), over a real socket: no server error, and every
answer's status, content type, headers and body as the document says. Undeclared methods get 405 with
Allow. It runs on a database of its own: the fuzzer writes units, catalogues and totals as an admin."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.db.engine import migrate_sync
from tests.conftest import ADMIN_KEY
from tests.support.database import TestDatabase
from tests.support.processes import live_server

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Every check, with the units of the test tree (and a cursor the API issues: "0" encoded) as realistic
# values, so requests reach past "unknown unit". positive_data_acceptance (a schema-valid request must
# succeed) is left out only where a schema cannot say what the route refuses: items naming a unit that
# is not in the tree, or a time outside 2000-2100 (the tree is data; format date-time has no years);
# the portal sync, whose body depends on the service named in the body, the path or the query; a CSV
# unit list, which must list a unit. The two stateful resource checks need OpenAPI links.
CONFIG = """
[checks]
use_after_free.enabled = false
ensure_resource_availability.enabled = false

[dictionaries]
units = { values = ["H44", "H44.03", "H44.07", "H44.100"] }
cursors = { values = ["MA"] }

[parameters]
"path.unit_code" = { dictionary = "units" }
"query.unit" = { dictionary = "units" }
"query.parent" = { dictionary = "units" }
"query.cursor" = { dictionary = "cursors" }
"body.unit_code" = { dictionary = "units" }
"body.[*].unit_code" = { dictionary = "units" }
"body.unit" = { dictionary = "units" }
"body.[*].unit" = { dictionary = "units" }
"body.[*].units.[*]" = { dictionary = "units" }
"body.madonvi" = { dictionary = "units" }

[[operations]]
include-name = ["POST /v1/events", "POST /v1/feedback", "PUT /v1/catalog/procedures", "GET /v1/catalog/procedures",
                "PUT /v1/reported-totals", "PUT /v1/targets", "PUT /v1/webhooks", "POST /v1/dvcqg",
                "POST /v1/dvcqg/{service}", "PUT /v1/units"]
checks.positive_data_acceptance.enabled = false
"""


@pytest.fixture(scope="module")
def live(settings, tmp_path_factory):
    database = TestDatabase()
    database.create()
    try:
        migrate_sync(database.async_url)
        own = settings.model_copy(update={"database_url": database.url,
                                          "data_dir": tmp_path_factory.mktemp("fuzz")})
        # the fuzzer is one client with one key, sending as fast as it can: limits would hide the rest
        with live_server(own, rate_limit_key_per_second=0, rate_limit_address_per_second=0,
                        rate_limit_auth_failures_per_minute=0) as server:
            yield server
    finally:
        database.drop()


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(live, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(SCHEMATHESIS), "--config-file", str(config), "run", f"{live.url}/openapi.json",
        "--seed", "766", "--max-examples", "15", "--workers", "1", "--no-color",
        "--header", f"Authorization: Bearer {ADMIN_KEY}",
    ]
    # In a directory of its own: schemathesis keeps a cache (.schemathesis/) where it runs.
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    summary = result.stdout[result.stdout.find("SUMMARY"):]
    print(summary)
    assert result.returncode == 0, result.stdout[-20000:]
    generated, passed = re.search(r"(\d+) generated, (\d+) passed", summary).groups()
    assert int(generated) > 500 and generated == passed, summary


async def test_an_undeclared_method_is_405_with_every_method_of_the_path(app_client):
    response = await app_client.request("DELETE", "/v1/units", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "PUT"}


def test_the_document_names_every_error_answer(settings):
    from services.app import create_app

    document = create_app(settings=settings).openapi()  # no lifespan: the document needs no store
    answers = document["paths"]["/v1/scores/{unit_code}"]["get"]["responses"]
    for status in ("400", "401", "403", "404", "422", "429", "503"):
        assert "application/problem+json" in answers[status]["content"], status
    assert "Retry-After" in answers["429"]["headers"]
    assert "413" in document["paths"]["/v1/events"]["post"]["responses"]
    assert "application/json" in document["paths"]["/v1/dvcqg"]["post"]["responses"]["401"]["content"]
