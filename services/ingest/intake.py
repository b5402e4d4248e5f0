"""From raw input to stored events: decode, validate, authorise, store; every rejection with a reason.

Shared by every way events come in (HTTP today, Kafka and the portal's payloads next), so the
rules for what is accepted are written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
from typing import Any

import orjson

from services.ingest.ownership import check_owners
from services.ingest.store import (
    ACCEPTED,
    DUPLICATE,
    DeadLetter,
    batch_months,
    refusal,
    store_dead_letters,
    store_events,
)
from shared.db.notify import announce_events_queued
from shared.db.partitions import ensure_partitions
from shared.db.raw import driver_connection
from shared.events import MAX_EVENT_ID, DossierEvent, Reason, Rejection, validate_event
from shared.metrics import EVENTS_ACCEPTED, EVENTS_DUPLICATE, EVENTS_REJECTED, source_label
from shared.runtime import Runtime


class Item:
    """One element of an incoming batch: its position, decoded value (or a rejection) and raw text.

    ``raw`` may be left out (None) for a decoded JSON value: it is then the value's compact JSON,
    encoded only when asked for (a rejected item's dead letter). ``size_bound``, when known, is at
    least the UTF-8 size of that text (see :func:`decode_json`), so most items are never encoded.
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


@dataclass
class IntakeResult:
    results: list[dict] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0

    def summary(self) -> dict:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "results": self.results,
        }


def decode_ndjson(body: bytes) -> list[Item]:
    items = []
    for index, line in enumerate(l for l in body.splitlines() if l.strip()):
        text = line.decode("utf-8", errors="replace")
        try:
            items.append(Item(index, orjson.loads(line), text))
        except orjson.JSONDecodeError as exc:
            items.append(Item(index, None, text, Rejection(Reason.INVALID_JSON, f"line is not JSON: {exc}")))
    return items


# Items of a JSON array are re-encoded in chunks of this many: a chunk's compact JSON is at least as long
# as each of its items' own (orjson writes a list as "[a,b,…]"), which bounds their size in one call.
SIZE_CHUNK = 64


def decode_json(body: bytes) -> list[Item] | Rejection:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return Rejection(Reason.INVALID_JSON, f"body is not JSON: {exc}")
    values = value if isinstance(value, list) else [value]
    items = []
    for start in range(0, len(values), SIZE_CHUNK):
        chunk = values[start:start + SIZE_CHUNK]
        try:
            bound: int | None = len(orjson.dumps(chunk))
        except orjson.JSONEncodeError:  # an item nested as deep as orjson goes: measure each on its own
            bound = None
        items.extend([Item(start + i, v, None, None, bound) for i, v in enumerate(chunk)])
    return items


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


async def check_ownership(conn, checked: list[DossierEvent | Rejection], *, allowed_units: tuple[str, ...] | None,
                          runtime: Runtime) -> None:
    """Claim the owners of new dossiers and turn every event its key may not add into ``not_owner``
    (in place; on the caller's transaction, so the claims commit with the events)."""
    positions = [i for i, c in enumerate(checked) if isinstance(c, DossierEvent)]
    verdicts = await check_owners(conn, [checked[i] for i in positions],  # type: ignore[misc]
                                  allowed_units=allowed_units, units=runtime.units)
    for i, verdict in zip(positions, verdicts):
        if verdict is not None:
            checked[i] = verdict


async def intake(
    runtime: Runtime,
    items: list[Item],
    *,
    source: str,
    transport: str,
    allowed_units: tuple[str, ...] | None,
    enqueue: bool,
) -> IntakeResult:
    """Validate and durably store a batch in one transaction; rejected items go to the dead letters."""
    checked = check_items(items, source=source, runtime=runtime, allowed_units=allowed_units)
    result = IntakeResult()
    results = result.results
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        # First: creating a partition waits for the readers of events, while holding nothing else yet.
        await ensure_partitions(apg, batch_months([c for c in checked if isinstance(c, DossierEvent)]))
        await check_ownership(apg, checked, allowed_units=allowed_units, runtime=runtime)
        good = [c for c in checked if isinstance(c, DossierEvent)]
        outcomes, seqs = await store_events(apg, good, transport=transport, enqueue=enqueue)
        next_outcome = iter(outcomes).__next__  # outcomes come in the order of the good items
        letters = []
        for item, check in zip(items, checked):
            if isinstance(check, DossierEvent):
                outcome = next_outcome()
                if outcome == ACCEPTED:
                    result.accepted += 1
                refused = refusal(outcome)
                if refused is None:
                    results.append({"index": item.index, "event_id": check.event_id, "status": outcome})
                    continue
                entry: dict[str, Any] = {"index": item.index, "event_id": check.event_id}
                check = refused
            else:
                entry = {"index": item.index}
                if (claimed := item.event_id()) is not None:
                    entry["event_id"] = claimed
            entry.update(status="rejected", **check.as_dict())
            result.rejected += 1
            results.append(entry)
            letters.append(DeadLetter(transport=transport, reason=check.reason, detail=check.detail, raw=item.raw,
                                      source=source, event_index=item.index, event_id=entry.get("event_id")))
            EVENTS_REJECTED.labels(transport, source_label(source), check.reason).inc()
        result.duplicates = len(results) - result.accepted - result.rejected
        await store_dead_letters(apg, letters)
        if enqueue and seqs:
            await announce_events_queued(apg)  # an indicators worker in another process wakes at commit
    EVENTS_ACCEPTED.labels(transport, source_label(source)).inc(result.accepted)
    EVENTS_DUPLICATE.labels(transport, source_label(source)).inc(result.duplicates)
    if enqueue and seqs:
        runtime.events_waiting.set()
    return result


async def submit(app_state: Any, runtime: Runtime, items: list[Item], *, source: str, transport: str,
                 allowed_units: tuple[str, ...] | None) -> IntakeResult:
    """The one door for dossier events (canonical or mapped from the portal's payloads): in Kafka mode
    produced to the topic before answering, else stored and queued for the indicators worker."""
    publisher = getattr(app_state, "publish_events", None)  # State keeps attributes in _state
    if publisher is not None:
        return await publisher(runtime, items, source=source, transport=transport, allowed_units=allowed_units)
    return await intake(runtime, items, source=source, transport=transport, allowed_units=allowed_units, enqueue=True)


async def dead_letter_body(runtime: Runtime, *, source: str, transport: str, rejection: Rejection, raw: bytes) -> None:
    """Keep a whole rejected body (not JSON at all, or too large) with its reason."""
    EVENTS_REJECTED.labels(transport, source_label(source), rejection.reason).inc()
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        await store_dead_letters(apg, [DeadLetter(transport=transport, reason=rejection.reason,
                                                   detail=rejection.detail, raw=raw.decode("utf-8", "replace"),
                                                   source=source)])


__all__ = ["Item", "IntakeResult", "decode_json", "decode_ndjson", "intake", "submit", "dead_letter_body", "DUPLICATE"]
