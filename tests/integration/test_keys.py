"""API keys (issue 19): hashed keys in the configuration, `dvc766 keys` create / list / revoke on a key
file that running services re-read, last use, the audit log of admin writes, and no key in any log."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re

import pytest

from services import keys as keys_cli
from shared.auth import KeyRing, hashed_key, key_file_path
from shared.db.raw import driver_connection
from shared.settings import ApiKey
from tests.conftest import ADMIN_KEY, auth
from tests.support.events import event, vn


def test_a_hashed_key_in_the_configuration_is_accepted_and_the_ring_holds_no_key_in_clear():
    ring = KeyRing({hashed_key("s3cret-reader"): ApiKey(role="reader", name="portal"),
                    "clear-admin": ApiKey(role="admin", name="ops")})
    assert ring.lookup("s3cret-reader").name == "portal"
    assert ring.lookup("clear-admin").role == "admin"
    assert ring.lookup("sha256:" + hashed_key("s3cret-reader")[7:]) is None  # the hash is not the key
    assert ring.lookup("s3cret-readeR") is None
    assert "s3cret" not in repr(vars(ring)) and "clear-admin" not in repr(vars(ring))
    with pytest.raises(ValueError):
        KeyRing({"sha256:abc": ApiKey(role="reader")})


async def _rows(runtime, sql, *args):
    async with runtime.engine.connect() as conn:
        return await (await driver_connection(conn)).fetch(sql, *args)


async def keys(settings, capsys, *argv) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    keys_cli.add_arguments(parser)
    code = await asyncio.to_thread(keys_cli.run, parser.parse_args(argv), settings)
    return code, capsys.readouterr().out


@pytest.fixture
def key_file(settings):
    path = key_file_path(settings)
    path.unlink(missing_ok=True)
    yield path
    path.unlink(missing_ok=True)


async def test_create_use_list_and_revoke_a_key_without_a_restart(app_client, key_file, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    runtime = app_client.app.state.runtime
    settings = runtime.settings
    maintenance = keys_cli.KeyMaintenance(app_client.app, runtime, {})

    code, out = await keys(settings, capsys, "create", "--name", "igate-h44-07", "--role", "source",
                           "--units", "H44.07")
    assert code == 0
    key = re.search(r"^\s+(dvc766_\S+)$", out, re.M).group(1)
    assert key not in key_file.read_text() and hashed_key(key) in key_file.read_text()
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    post = [event("K1", 2, vn(2026, 8, 3), unit="H44.07")]
    assert (await app_client.post("/v1/events", json=post, headers=auth(key))).status_code == 401
    assert maintenance.reload_if_changed()  # what the running service does every api_keys_reload_seconds
    assert (await app_client.post("/v1/events", json=post, headers=auth(key))).json()["accepted"] == 1
    await maintenance.flush_last_use()

    code, out = await keys(settings, capsys, "list")
    line = next(l for l in out.splitlines() if "igate-h44-07" in l)
    assert "source" in line and "H44.07" in line and "never" not in line and key not in out
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", line)  # created, last used
    assert (await keys(settings, capsys, "create", "--name", "igate-h44-07", "--role", "reader"))[0] == 2

    code, out = await keys(settings, capsys, "revoke", "igate-h44-07")
    assert code == 0
    assert maintenance.reload_if_changed()
    assert (await app_client.post("/v1/events", json=post, headers=auth(key))).status_code == 401
    assert (await keys(settings, capsys, "revoke", "igate-h44-07"))[0] == 2

    audit = await _rows(runtime, "SELECT actor, action FROM audit_log ORDER BY id")
    assert [r["action"] for r in audit] == ["keys create igate-h44-07 (source)", "keys revoke igate-h44-07"]
    assert all(r["actor"].startswith("cli:") for r in audit)
    assert key not in caplog.text


async def test_a_broken_key_file_keeps_the_keys_in_force(app_client, key_file, capsys):
    runtime = app_client.app.state.runtime
    maintenance = keys_cli.KeyMaintenance(app_client.app, runtime, {})
    code, out = await keys(runtime.settings, capsys, "create", "--name", "r1", "--role", "reader")
    key = re.search(r"^\s+(dvc766_\S+)$", out, re.M).group(1)
    assert maintenance.reload_if_changed()
    key_file.write_text('{"half": ')
    assert not maintenance.reload_if_changed()
    assert (await app_client.get("/v1/units", headers=auth(key))).status_code == 200


async def test_admin_writes_are_audited_with_who_what_and_when(app_client):
    runtime = app_client.app.state.runtime
    response = await app_client.post("/v1/events", json=[event("AU1", 2, vn(2026, 8, 3))], headers=auth(ADMIN_KEY))
    assert response.status_code == 200
    refused = await app_client.put("/v1/reported-totals", json={"nope": 1}, headers=auth(ADMIN_KEY))
    await app_client.get("/v1/units", headers=auth(ADMIN_KEY))  # a read: not audited
    rows = await _rows(runtime, "SELECT at, actor, key_id, action, status FROM audit_log ORDER BY id")
    assert [(r["actor"], r["action"], r["status"]) for r in rows] == [
        ("admin", "POST /v1/events", 200), ("admin", "PUT /v1/reported-totals", refused.status_code)]
    assert all(r["at"] is not None and len(r["key_id"]) == 12 for r in rows)
    assert ADMIN_KEY not in repr([dict(r) for r in rows])


async def test_no_key_is_ever_logged(app_client, caplog):
    caplog.set_level(logging.DEBUG)
    for key in ("guessed-key-123456", ADMIN_KEY):
        await app_client.get("/v1/units", headers=auth(key))
        await app_client.post("/v1/dvcqg", json={"service": "x"}, headers={"token": key})
    assert caplog.records  # something was logged
    assert "guessed-key-123456" not in caplog.text and ADMIN_KEY not in caplog.text
