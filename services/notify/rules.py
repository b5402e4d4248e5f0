"""Webhook delivery rules (targets.md, Notifications). Pure: no I/O."""

from __future__ import annotations

import hashlib
import hmac

EVENTS = ("target.at_risk", "target.missed", "target.met", "dossiers.due_soon", "source.rejects")


def signature(secret: str, body: bytes) -> str:
    """``X-DVC766-Signature``: ``sha256=`` and the hex HMAC-SHA256 of the exact body with the webhook's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay(attempts: int, *, base: float, cap: float) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: base, 2·base, 4·base, … up to cap."""
    if attempts < 1:
        return 0.0
    return min(cap, base * 2 ** (attempts - 1))


def gives_up(age_seconds: float, next_delay: float, *, retry_for: float) -> bool:
    """A delivery is abandoned when its next attempt would fall past the bounded retry time."""
    return age_seconds + next_delay > retry_for


def delivered(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def wants(events: list[str], units: list[str] | None, event: str, unit: str | None, within) -> bool:
    """Whether a webhook subscribed to ``events`` (and, optionally, ``units`` and their subtrees) gets a
    notification about ``unit`` (None: about no unit, e.g. a sender's rejects not bound to a unit).
    ``within(unit, units)`` tells whether a unit lies in one of the subtrees."""
    if event not in events:
        return False
    if not units:
        return True
    return unit is not None and within(unit, units)
