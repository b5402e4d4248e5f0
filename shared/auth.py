"""API keys with roles (source, reader, admin) as ``Authorization: Bearer <key>``."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
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
    portal_ok_code: int | str = 0  # the national portal's "kept" error_code, as this key's system reads it

    def can_read(self) -> bool:
        return self.role in ("reader", "admin")


class KeyRing:
    def __init__(self, keys: dict[str, ApiKey]) -> None:
        self._keys = [(k.encode(), v) for k, v in keys.items()]
        self._by_fingerprint = {_fingerprint(k.encode()): (k.encode(), v) for k, v in keys.items()}
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
        return _principal(found)

    # Session tokens: what the national portal's login call issues and its sync calls carry (the body's
    # ``session``). A token is bound to the key that logged in (its fingerprint, signed with the key
    # itself) and expires; it needs no state, so every ingest process accepts it, and it dies with its key.

    def issue_session(self, presented: str, seconds: int, now: float | None = None) -> str | None:
        key = presented.encode()
        if self.lookup(presented) is None:
            return None
        expires = int((time.time() if now is None else now) + seconds)
        payload = f"{SESSION_PREFIX}{_fingerprint(key)}.{expires}"
        return f"{payload}.{_sign(key, payload)}"

    def lookup_session(self, token: str, now: float | None = None) -> Principal | None | str:
        """The principal a session token stands for; None if not a valid token; "expired" if it was one."""
        if not token.startswith(SESSION_PREFIX):
            return None
        payload, _, signature = token.rpartition(".")
        fingerprint, _, expires = payload[len(SESSION_PREFIX):].partition(".")
        entry = self._by_fingerprint.get(fingerprint)
        if entry is None or not expires.isdigit() or not hmac.compare_digest(_sign(entry[0], payload), signature):
            return None
        if int(expires) < (time.time() if now is None else now):
            return "expired"
        return _principal(entry[1])

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


SESSION_PREFIX = "dvcs1."


def _fingerprint(key: bytes) -> str:
    return hashlib.sha256(b"dvc766-key:" + key).hexdigest()[:24]


def _sign(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def _principal(spec: ApiKey) -> Principal:
    name = spec.name or spec.source or spec.role
    source = spec.source or (f"admin:{name}" if spec.role == "admin" else name)
    return Principal(name=name, role=spec.role, source=source, units=tuple(spec.units),
                     portal_ok_code=spec.portal_ok_code)


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
