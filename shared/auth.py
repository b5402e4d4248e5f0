"""API keys with roles (source, reader, admin) as ``Authorization: Bearer <key>``."""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from shared.problems import Problem
from shared.settings import ApiKey, Settings

log = logging.getLogger("dvc766.auth")


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    source: str
    units: tuple[str, ...]

    def can_read(self) -> bool:
        return self.role in ("reader", "admin")


class KeyRing:
    def __init__(self, keys: dict[str, ApiKey]) -> None:
        self._keys = [(k.encode(), v) for k, v in keys.items()]
        # Known keys already looked up -> their principal (never unknown ones: the memo stays as small
        # as the ring). A ring is immutable: keys change by replacing ``app.state.keyring``, which drops
        # the memo with it, so a revoked key stops working at once.
        self._known: dict[str, Principal] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, presented: str) -> Principal | None:
        candidate = presented.encode()
        found = None
        for key, spec in self._keys:  # compare with every key in constant time
            if hmac.compare_digest(key, candidate):
                found = spec
        if found is None:
            return None
        name = found.name or found.source or found.role
        source = found.source or (f"admin:{name}" if found.role == "admin" else name)
        return Principal(name=name, role=found.role, source=source, units=tuple(found.units))

    def lookup_cached(self, presented: str) -> Principal | None:
        """``lookup`` for hot read paths. The memo is a dict keyed by the presented string: its lookup
        compares bytes only after a (randomly seeded) hash matches, so timing says nothing useful about
        a guessed key; unknown keys still take the constant-time path every time."""
        found = self._known.get(presented)
        if found is None:
            found = self.lookup(presented)
            if found is not None:
                self._known[presented] = found
        return found


def first_run_admin_key(settings: Settings) -> dict[str, ApiKey]:
    """No keys configured: a development install gets a generated admin key, kept in the data dir."""
    if settings.environment == "production":
        raise SystemExit("DVC766_API_KEYS is empty: refusing to start in production without API keys")
    path = Path(settings.data_dir).expanduser() / "admin-key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        key = path.read_text().strip()
    else:
        key = "dvc766_" + secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        print(f"\ndvc766: no DVC766_API_KEYS set; generated an admin key (saved in {path}):\n\n    {key}\n", flush=True)
    log.info("using the generated admin key", extra={"key_file": str(path)})
    return {key: ApiKey(role="admin", name="first-run-admin")}


def principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "unauthenticated", "send an API key as 'Authorization: Bearer <key>'")
    found = request.app.state.keyring.lookup_cached(token.strip())
    if found is None:
        raise Problem(401, "bad_api_key", "this API key is not known")
    return found


def reader(request: Request) -> Principal:
    who = principal(request)
    if not who.can_read():
        raise Problem(403, "forbidden", f"role {who.role!r} may not read scores")
    return who


def source_or_admin(request: Request) -> Principal:
    who = principal(request)
    if who.role not in ("source", "admin"):
        raise Problem(403, "forbidden", f"role {who.role!r} may not post events")
    return who


def admin(request: Request) -> Principal:
    who = principal(request)
    if who.role != "admin":
        raise Problem(403, "forbidden", "this needs an admin key")
    return who
