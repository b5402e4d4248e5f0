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

import orjson

from fastapi import Request

from shared.problems import Problem
from shared.settings import ApiKey, Settings

log = logging.getLogger("dvc766.auth")


HASHED = "sha256:"


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def hashed_key(key: str) -> str:
    """How a key is written in the configuration or the key file without the key itself."""
    return HASHED + key_digest(key).hex()


def key_id(digest: bytes) -> str:
    """A key's public name in listings, metrics and the audit log: a prefix of its hash, never the key."""
    return digest.hex()[:12]


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    source: str
    units: tuple[str, ...]
    portal_ok_code: int | str = 0  # the national portal's "kept" error_code, as this key's system reads it
    key_id: str = ""

    def can_read(self) -> bool:
        return self.role in ("reader", "admin")


class KeyRing:
    """The keys in force. Configured as ``{"<key>": spec}`` or ``{"sha256:<hex of the key's sha256>": spec}``;
    a presented key is hashed and looked up by its digest (the ring holds no key in clear). A ring is
    immutable: keys change by replacing ``app.state.keyring`` (services/keys.py re-reads the key file)."""

    def __init__(self, keys: dict[str, ApiKey], session_secret: bytes = b"") -> None:
        self.session_secret = session_secret  # empty: this ring issues and accepts no session tokens
        self._by_digest: dict[bytes, Principal] = {}
        self._by_fingerprint: dict[str, tuple[bytes, Principal]] = {}
        for configured, spec in keys.items():
            digest = _configured_digest(configured)
            found = _principal(spec, key_id(digest))
            self._by_digest[digest] = found
            self._by_fingerprint[_fingerprint(digest)] = (digest, found)
        # key_id -> when it was last presented (time.time()); written to the database by services/keys.py.
        self.last_used: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._by_digest)

    def principals(self) -> list[Principal]:
        return list(self._by_digest.values())

    def lookup(self, presented: str) -> Principal | None:
        # A dict keyed by SHA-256 digests: timing can tell at most how a guess's digest compares with a
        # key's digest, which says nothing about the key.
        found = self._by_digest.get(key_digest(presented))
        if found is not None:
            self.last_used[found.key_id] = time.time()
        return found

    lookup_cached = lookup  # the read fast path's name for it

    # Session tokens: what the national portal's login call issues and its sync calls carry (the body's
    # ``session``). A token is bound to the key that logged in (a fingerprint of its hash), signed with the
    # server's session secret (a key's hash alone may be readable in the configuration) and expires; it
    # needs no state, so every process with the same secret accepts it, and it dies with its key.

    def issue_session(self, presented: str, seconds: int, now: float | None = None) -> str | None:
        if not self.session_secret or self.lookup(presented) is None:
            return None
        digest = key_digest(presented)
        expires = int((time.time() if now is None else now) + seconds)
        payload = f"{SESSION_PREFIX}{_fingerprint(digest)}.{expires}"
        return f"{payload}.{self._sign(digest, payload)}"

    def lookup_session(self, token: str, now: float | None = None) -> Principal | None | str:
        """The principal a session token stands for; None if not a valid token; "expired" if it was one."""
        if not self.session_secret or not token.startswith(SESSION_PREFIX):
            return None
        payload, _, signature = token.rpartition(".")
        fingerprint, _, expires = payload[len(SESSION_PREFIX):].partition(".")
        entry = self._by_fingerprint.get(fingerprint)
        if entry is None or not expires.isdigit() or not hmac.compare_digest(self._sign(entry[0], payload), signature):
            return None
        if int(expires) < (time.time() if now is None else now):
            return "expired"
        self.last_used[entry[1].key_id] = time.time()
        return entry[1]

    def _sign(self, digest: bytes, payload: str) -> str:
        return hmac.new(self.session_secret + digest, payload.encode(), hashlib.sha256).hexdigest()


SESSION_PREFIX = "dvcs1."


def _configured_digest(configured: str) -> bytes:
    if not configured.startswith(HASHED):
        return key_digest(configured)
    try:
        digest = bytes.fromhex(configured[len(HASHED):])
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ValueError(f"a hashed key is 'sha256:' and 64 hex digits, not {configured[:16]}...")
    return digest


def _fingerprint(digest: bytes) -> str:
    return hashlib.sha256(b"dvc766-key:" + digest).hexdigest()[:24]


def _principal(spec: ApiKey, key_id: str) -> Principal:
    name = spec.name or spec.source or spec.role
    source = spec.source or (f"admin:{name}" if spec.role == "admin" else name)
    return Principal(name=name, role=spec.role, source=source, units=tuple(spec.units),
                     portal_ok_code=spec.portal_ok_code, key_id=key_id)


def load_key_file(path: Path) -> dict[str, ApiKey]:
    """The key file: a JSON object shaped like ``DVC766_API_KEYS`` (keys in clear or hashed)."""
    raw = orjson.loads(path.read_bytes()) if path.exists() and path.stat().st_size else {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the key file must be a JSON object of key -> spec")
    return {key: ApiKey.model_validate(spec) for key, spec in raw.items()}


def key_file_path(settings: Settings) -> Path:
    """The key file `dvc766 keys` writes and running services re-read (default: in the data dir)."""
    return Path(settings.api_keys_file or Path(settings.data_dir) / "api-keys.json").expanduser()


def configured_keys(settings: Settings) -> dict[str, ApiKey]:
    """The configured keys (``DVC766_API_KEYS``) and those of the key file."""
    return {**settings.api_keys, **load_key_file(key_file_path(settings))}


def session_secret(settings: Settings) -> bytes:
    """The configured session secret, else one generated once and kept in the data dir."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value().encode()
    if settings.environment == "production":
        raise SystemExit("DVC766_SESSION_SECRET is not set: refusing to start in production without it "
                         "(every process of the deployment must sign sessions with the same secret)")
    path = Path(settings.data_dir).expanduser() / "session-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    return path.read_bytes().strip()


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


# The dependencies below are coroutines: FastAPI runs a plain-function dependency in a worker thread,
# a thread hand-off on every request for a header read and a dict look-up.


async def reader(request: Request) -> Principal:
    who = principal(request)
    if not who.can_read():
        raise Problem(403, "forbidden", f"role {who.role!r} may not read scores")
    return who


async def source_or_admin(request: Request) -> Principal:
    who = principal(request)
    if who.role not in ("source", "admin"):
        raise Problem(403, "forbidden", f"role {who.role!r} may not post events")
    return who


async def admin(request: Request) -> Principal:
    who = principal(request)
    if who.role != "admin":
        raise Problem(403, "forbidden", "this needs an admin key")
    return who
