"""Incoming dossier events, checked: each item of a batch (an HTTP body's element, a portal record's
event, a Kafka message) validated as a canonical event of its source, within the size limit, for a unit
of the tree and of the key's units, or rejected with its reason.

Below the roles: the ingest edge (HTTP, the portal, the Kafka publisher) and the indicators' Kafka
consumer check with the same function.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from shared.events import MAX_EVENT_ID, DossierEvent, Reason, Rejection, validate_event
from shared.runtime import Runtime


class Item:
    """One element of an incoming batch: its position, decoded value (or a rejection) and raw text.

    ``raw`` may be left out (None) for a decoded JSON value: it is then the value's compact JSON,
    encoded only when asked for (a rejected item's dead letter). ``size_bound``, when known, is at
    least the UTF-8 size of that text (``services.ingest.intake.decode_json``), so most items are never
    encoded.
    """

    __slots__ = ("index", "value", "_raw", "rejection", "size_bound")

    def __init__(self, index: int, value: Any, raw: str | None = None, rejection: Rejection | None = None,
                 size_bound: int | None = None) -> None:
        self.index = index
        self.value = value
        self._raw = raw
        self.rejection = rejection
        self.size_bound = size_bound

    @property
    def raw(self) -> str:
        if self._raw is None:
            self._raw = compact_json(self.value)
        return self._raw

    def event_id(self) -> str | None:
        """The event_id the item claims, when it is one we could have accepted (kept with its dead letter)."""
        value = self.value
        if type(value) is dict:
            claimed = value.get("event_id")
            if type(claimed) is str and 0 < len(claimed) <= MAX_EVENT_ID:
                return claimed
        return None

    def __repr__(self) -> str:
        return f"Item({self.index!r}, {self.value!r}, rejection={self.rejection!r})"


def compact_json(value: Any) -> str:
    """``value`` as compact JSON text, whatever its depth (orjson stops at 255 levels, the standard
    library at Python's recursion limit): a dead letter never fails its batch."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except (RecursionError, ValueError, TypeError):
            return '"(nested too deep to keep)"'


def check_items(
    items: list[Item], *, source: str, runtime: Runtime, allowed_units: tuple[str, ...] | None
) -> list[DossierEvent | Rejection]:
    """Validate each item; ``allowed_units`` None means any unit (admin keys, trusted topics)."""
    max_bytes = runtime.settings.max_event_bytes
    out: list[DossierEvent | Rejection] = []
    for item in items:
        if item.rejection is not None:
            out.append(item.rejection)
            continue
        bound = item.size_bound
        if (bound is None or bound > max_bytes) and len(item.raw.encode()) > max_bytes:
            out.append(Rejection(Reason.TOO_LARGE, f"event is larger than {max_bytes} bytes"))
            continue
        checked = validate_event(item.value, source)
        if isinstance(checked, DossierEvent):
            if checked.unit_code not in runtime.units:
                checked = Rejection(Reason.UNKNOWN_UNIT, f"unit {checked.unit_code!r} is not in the unit tree",
                                    "unit_code")
            elif allowed_units is not None and not runtime.units.is_within(checked.unit_code, allowed_units):
                checked = Rejection(Reason.UNIT_NOT_ALLOWED,
                                    f"this key may not post events for unit {checked.unit_code!r}", "unit_code")
        out.append(checked)
    return out
