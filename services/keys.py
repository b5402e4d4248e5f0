"""Manage API keys: create, list (with last use), revoke.

Keys live in the key file (``DVC766_API_KEYS_FILE``, default ``api-keys.json`` in the data dir) as
``sha256:<hash>`` only: the key itself is printed once, at creation, and never stored, logged or shown
again. Running services re-read the file when it changes (:class:`KeyMaintenance`), record when each
key was last presented, and keep an audit log of every write made with an admin key (:class:`AdminAudit`);
creations and revocations are audited too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import logging
import os
import secrets
from pathlib import Path

import orjson

from shared.auth import KeyRing, configured_keys, hashed_key, key_file_path, load_key_file
from shared.db.raw import driver_connection
from shared.settings import ApiKey, Settings, get_settings

log = logging.getLogger("dvc766.keys")
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def record_audit(conn, *, actor: str, key_id: str | None, action: str, status: int | None,
                       client: str | None) -> None:
    await conn.execute("INSERT INTO audit_log (actor, key_id, action, status, client) VALUES ($1, $2, $3, $4, $5)",
                       actor[:128], key_id, action[:255], status, (client or "")[:64] or None)


class KeyMaintenance:
    """Background task of every service: re-reads the key file when it changes (a revoked key stops
    working within ``api_keys_reload_seconds``; a bad file keeps the keys in force and says why), and
    writes the keys' last use to the database."""

    def __init__(self, app, runtime, base_keys: dict[str, ApiKey]) -> None:
        self.app, self.runtime = app, runtime
        self.settings: Settings = runtime.settings
        self.base_keys = base_keys  # the first-run admin key, in a development install without keys
        self.path = key_file_path(self.settings)
        self.seen = self._stamp()
        self._task: asyncio.Task | None = None

    def _stamp(self):
        with contextlib.suppress(OSError):
            stat = self.path.stat()
            return (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        return None

    def reload_if_changed(self) -> bool:
        stamp = self._stamp()
        if stamp == self.seen:
            return False
        try:
            ring = KeyRing({**self.base_keys, **configured_keys(self.settings)},
                           session_secret=self.app.state.keyring.session_secret)
        except Exception as exc:  # noqa: BLE001 - a half-written or bad file must not lock everyone out
            log.warning("key file not reloaded; the keys in force stay", extra={"file": str(self.path),
                                                                                 "error": str(exc)})
            return False
        self.seen = stamp
        old = self.app.state.keyring
        ring.last_used.update(old.last_used)
        self.app.state.keyring = ring
        log.info("key file reloaded", extra={"file": str(self.path), "keys": len(ring)})
        return True

    async def flush_last_use(self) -> None:
        ring = self.app.state.keyring
        if not ring.last_used:
            return
        used, ring.last_used = ring.last_used, {}
        async with self.runtime.engine.begin() as conn:
            await (await driver_connection(conn)).execute(
                """INSERT INTO api_key_uses (key_id, last_used_at)
                   SELECT k, to_timestamp(t) FROM unnest($1::text[], $2::float8[]) AS u(k, t)
                   ON CONFLICT (key_id) DO UPDATE SET last_used_at = greatest(api_key_uses.last_used_at,
                                                                             excluded.last_used_at)""",
                list(used), list(used.values()))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dvc766-keys")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.flush_last_use()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.api_keys_reload_seconds)
            self.reload_if_changed()
            try:
                await self.flush_last_use()
            except Exception as exc:  # noqa: BLE001 - the store may be away; uses are kept for next time
                log.warning("last use of keys not recorded", extra={"error": repr(exc)})


class AdminAudit:
    """Pure ASGI middleware: every write request made with an admin key is recorded (who, what, when,
    the answer's status) in ``audit_log`` once it is answered."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in WRITES:
            return await self.app(scope, receive, send)
        from services.limits import presented_key

        key = presented_key(scope["headers"])
        keyring = getattr(scope["app"].state, "keyring", None)
        who = keyring.lookup(key) if key and keyring is not None else None
        if who is None or who.role != "admin":
            return await self.app(scope, receive, send)
        status = None

        async def watch(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            action = f"{scope['method']} {scope['path']}" + (f"?{query}" if query else "")
            client = scope.get("client")
            runtime = scope["app"].state.runtime
            try:
                async with runtime.engine.begin() as conn:
                    await record_audit(await driver_connection(conn), actor=who.name, key_id=who.key_id,
                                       action=action, status=status, client=client[0] if client else None)
            except Exception as exc:  # noqa: BLE001 - the write itself stands; say that its record is missing
                log.error("admin write not audited", extra={"action": action, "actor": who.name,
                                                            "error": repr(exc)})


# ------------------------------------------------------------------------------- dvc766 keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="create a key (printed once) in the key file")
    create.add_argument("--name", required=True, help="who holds it (unique), e.g. igate-h44-07")
    create.add_argument("--role", required=True, choices=("source", "reader", "admin"))
    create.add_argument("--units", nargs="*", default=[], help="units (and subtrees) a source key may post for")
    create.add_argument("--source", help="the event source recorded for its events (default: the name)")
    sub.add_parser("list", help="every key in force, with its last use (never the keys themselves)")
    revoke = sub.add_parser("revoke", help="revoke a key of the key file, by name or key id")
    revoke.add_argument("which")


def _write_key_file(path: Path, keys: dict[str, ApiKey]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {k: v.model_dump(mode="json", exclude_none=True, exclude_defaults=True) | {"role": v.role}
            for k, v in keys.items()}
    temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(temporary, path)  # services never read a half-written file


async def _with_store(settings: Settings, work) -> object:
    from shared.db.engine import create_engine, resolve_database_url

    url = await asyncio.to_thread(resolve_database_url, settings)
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            return await work(await driver_connection(conn))
    finally:
        await engine.dispose()


def run(args: argparse.Namespace, settings: Settings | None = None) -> int:
    settings = settings or get_settings()
    path = key_file_path(settings)
    actor = f"cli:{getpass.getuser()}"
    if args.keys_command == "create":
        keys = load_key_file(path)
        ring = KeyRing({**settings.api_keys, **keys})
        if any(p.name == args.name for p in ring.principals()):
            print(f"a key named {args.name!r} exists already; revoke it first or choose another name")
            return 2
        key = "dvc766_" + secrets.token_urlsafe(32)
        spec = ApiKey(role=args.role, name=args.name, units=args.units, source=args.source,
                      created_at=dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
        keys[hashed_key(key)] = spec
        _write_key_file(path, keys)
        key_id = KeyRing({hashed_key(key): spec}).principals()[0].key_id
        _audit(settings, actor, key_id, f"keys create {args.name} ({args.role})")
        print(f"created {args.role} key {args.name!r} (id {key_id}) in {path}; it is shown this once:\n\n    {key}\n")
        return 0
    if args.keys_command == "revoke":
        keys = load_key_file(path)
        kept = {k: v for k, v in keys.items()
                if args.which not in (v.name, KeyRing({k: v}).principals()[0].key_id)}
        if len(kept) == len(keys):
            in_settings = any(args.which in (p.name, p.key_id) for p in KeyRing(settings.api_keys).principals())
            print(f"{args.which!r} is set in DVC766_API_KEYS: remove it there" if in_settings
                  else f"no key named {args.which!r} in {path}")
            return 2
        _write_key_file(path, kept)
        _audit(settings, actor, None, f"keys revoke {args.which}")
        print(f"revoked {args.which!r}; running services drop it within {settings.api_keys_reload_seconds:g} s")
        return 0
    # list
    from_file = load_key_file(path)
    rows = [(p, "file") for p in KeyRing(from_file).principals()]
    rows += [(p, "settings") for p in KeyRing(settings.api_keys).principals()]
    created = {KeyRing({k: v}).principals()[0].key_id: v.created_at for k, v in from_file.items()}

    async def uses(conn):
        return {r[0]: r[1] for r in await conn.fetch("SELECT key_id, last_used_at FROM api_key_uses")}

    try:
        last = asyncio.run(_with_store(settings, uses))
    except Exception as exc:  # noqa: BLE001 - still list the keys
        print(f"(last use unknown: the database is not reachable: {exc})")
        last = {}
    print(f"{'id':12}  {'name':24} {'role':7} {'units':16} {'from':8} {'created':25} last used")
    for p, origin in sorted(rows, key=lambda r: r[0].name):
        when = created.get(p.key_id)
        used = last.get(p.key_id)
        print(f"{p.key_id:12}  {p.name:24} {p.role:7} {','.join(p.units) or '-':16} {origin:8} "
              f"{when.isoformat() if when else '-':25} {used.isoformat(timespec='seconds') if used else 'never'}")
    return 0


def _audit(settings: Settings, actor: str, key_id: str | None, action: str) -> None:
    async def write(conn):
        await record_audit(conn, actor=actor, key_id=key_id, action=action, status=None, client="cli")

    try:
        asyncio.run(_with_store(settings, write))
    except Exception as exc:  # noqa: BLE001 - the key file changed; say that the audit record is missing
        print(f"warning: not recorded in the audit log (database not reachable: {exc})")


__all__ = ["AdminAudit", "KeyMaintenance", "add_arguments", "run"]
