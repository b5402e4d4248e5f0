"""The score projection: one card per unit × period × layout (``score_cards``), and the portal-layout
score of the current month, quarter and year as it stood at the end of each day (``daily_scores``).

A card is everything ``GET /v1/scores/{unit}`` answers (its JSON bytes and their ETag), the unit's
league-table row and its subtree's counters. Reads are primary-key lookups (:func:`read_card`,
:func:`read_cards`).

Writers mark what they moved, after their commit (``score_marks``: unit × period; cheap on the apply
path): an applied batch or a deadline sweep the units whose counters moved and their ancestors, for
every period reading those counters (:func:`counters_moved`); a feed write the cards of the units it
names and their ancestors (:func:`feeds_moved`). The indicators worker recomputes the marked cards every
``score_card_refresh_seconds``, and every card every ``score_card_full_refresh_seconds`` (what moves with
the clock alone: feedback turning late) (:func:`refresh_marked`). A card marked after it was computed is
out of date: a read that finds one, or no card yet, computes it then, the same way; no read from the
database serves a score older than the last commit it could see. An api process reuses what it read
(:class:`CardCache`) until a write anywhere moves a card (marks and computations NOTIFY at their
commit), and never longer than the max-age its answers carry (``score_max_age_seconds``).

Each computation also writes today's ``daily_scores`` row of the cards of the current month, quarter
and year (the last write of a day is that day's end-of-day score; a day's row is never written once
the day is over). Computations take a transaction-level advisory lock first, so each reads every
change committed before it and two of them never leave the older result in place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg
import orjson
from cachetools import TTLCache

from services.indicators.rules.scoring import CounterView, ScoreCard, directive_counters, score_inputs
from services.indicators.score_context import load_context
from shared.db.notify import Listener
from shared.db.raw import driver_connection, fetch_read, jsonb
from shared.runtime import Runtime
from shared.settings import Settings
from shared.timeutil import VIETNAM, parse_period, periods_of, utcnow
from shared.units import UnitTree

CARD_LOCK = 766_010  # advisory lock key of the card refreshes and the daily score rows
LAYOUTS = ("portal", "decision")
CARDS_MOVED = "dvc766_cards_moved"  # NOTIFY channel: cards were marked out of date or recomputed


@dataclass(frozen=True)
class Card:
    unit_code: str
    period: str
    layout: str
    computed_at: dt.datetime
    etag: str  # quoted, as sent in the ETag header
    body: bytes  # the JSON answer of GET /v1/scores/{unit}
    summary: bytes  # the JSON league-table row: unit, total, rating, group scores, received
    counts: dict[str, int]  # the subtree's dossier counters

    def as_dict(self) -> dict:
        """The answer as a dict: unit, period, as_of, total, rating, groups (with components), counters."""
        return orjson.loads(self.body)


def policies_in_force(settings: Settings) -> dict:
    policy = settings.policy
    return {
        "due_time": policy.due_time,
        "online_ratio_denominator": policy.online_ratio_denominator,
        "e_result_denominator": policy.e_result_denominator,
        "digitisation_scoring": policy.digitisation_scoring,
        "payment_group_score": policy.payment_group_score,
        "payment_period_fallback": policy.payment_period_fallback,
        "e_copy_without_communes": policy.e_copy_without_communes,
        "dossier_complaint_kinds": list(policy.dossier_complaint_kinds),
        "publication_lead_days": policy.publication_lead_days,
        "publication_lead_days_ministry": policy.publication_lead_days_ministry,
        "made_public_lag_days": policy.made_public_lag_days,
        "made_public_lag_days_ministry": policy.made_public_lag_days_ministry,
        "rating_bands": [{"min": m, "rating": r} for m, r in policy.rating_bands],
    }


_INPUTS_KEYS: dict[int, tuple[Settings, str]] = {}


def inputs_key(settings: Settings) -> str:
    """What a card depends on besides the data: the policies and the calendar. A card computed under
    others (processes configured differently on one database) is recomputed when read."""
    kept = _INPUTS_KEYS.get(id(settings))
    if kept is not None and kept[0] is settings:
        return kept[1]
    settled = orjson.dumps([policies_in_force(settings), settings.calendar.model_dump(mode="json")],
                           option=orjson.OPT_SORT_KEYS)
    key = hashlib.blake2b(settled, digest_size=12).hexdigest()
    _INPUTS_KEYS[id(settings)] = (settings, key)
    return key


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def periods_reading(stored: str) -> tuple[str, ...]:
    """The periods whose value reads a stored counter row of ``stored`` (rules/counters.py:
    a quarter and a year are the sums of their months plus their own row)."""
    parsed = parse_period(stored)
    year = stored[:4]
    if parsed.kind == "month":
        return stored, f"{year}-Q{(int(stored[5:7]) - 1) // 3 + 1}", year
    if parsed.kind == "quarter":
        return stored, year
    return (stored,)


def with_ancestors(tree: UnitTree, codes: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for code in codes:
        current = code
        while current and current in tree.units and current not in out:
            out.add(current)
            current = tree.units[current].parent
    return out


def _root(tree: UnitTree, code: str) -> str:
    seen = set()
    while code not in seen:
        seen.add(code)
        parent = tree.units[code].parent
        if not parent or parent not in tree.units:
            return code
        code = parent
    return code


def _card_rows(runtime: Runtime, code: str, period: str, inputs, now: dt.datetime, key: str,
               policies: dict) -> list[tuple]:
    unit = runtime.units.units[code]
    counts = dict(inputs.counts)
    as_of = now.astimezone(VIETNAM).isoformat(timespec="seconds")
    rows = []
    for layout in LAYOUTS:
        card: ScoreCard = score_inputs(inputs, runtime.settings.policy,
                                       seconds_per_day=runtime.calendar.seconds_per_day, layout=layout)
        body = orjson.dumps({"unit": unit.as_dict(), "period": period, "as_of": as_of, **card.as_dict(),
                             "counters": CounterView(counts).as_dict(), "policies": policies})
        summary = orjson.dumps({"unit": unit.as_dict(), "total": card.total, "rating": card.rating,
                                "groups": {g["code"]: g["score"] for g in card.groups},
                                "received": counts.get("received", 0),
                                "directives": directive_counters(counts)})
        rows.append((code, period, layout, key, now, card.total, etag_of(body), body, summary, jsonb(counts),
                     card.rating, None, jsonb({g["code"]: g["score"] for g in card.groups})))
    return rows


async def compute_cards(apg: asyncpg.Connection, runtime: Runtime, targets: dict[str, set[str]],
                   now: dt.datetime) -> int:
    """Compute and store the cards of ``targets`` (period → unit codes), under the card lock."""
    await apg.execute("SELECT pg_advisory_xact_lock($1)", CARD_LOCK)
    tree = runtime.units
    key = inputs_key(runtime.settings)
    policies = policies_in_force(runtime.settings)
    rows: list[tuple] = []
    for period_key, codes in sorted(targets.items()):
        period = parse_period(period_key)
        by_root: dict[str, list[str]] = defaultdict(list)
        for code in sorted(codes):
            if code in tree.units:
                by_root[_root(tree, code)].append(code)
        for root, members in by_root.items():
            context = await load_context(apg, tree, root, period, now=now, policy=runtime.settings.policy,
                                         calendar=runtime.calendar)
            for code in members:
                rows.extend(_card_rows(runtime, code, period_key, context.inputs_for(code), now, key, policies))
    if not rows:
        return 0
    await apg.execute(f"NOTIFY {CARDS_MOVED}")  # delivered at the caller's commit
    columns = list(zip(*rows))
    await apg.execute(
        """INSERT INTO score_cards (unit_code, period, layout, inputs_key, computed_at, total, etag, body, summary,
                                    counts)
           SELECT u, p, l, k, now(), t, e, b, s, c
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::numeric[],
                       $7::text[], $8::bytea[], $9::bytea[], $10::jsonb[]) AS x(u, p, l, k, n, t, e, b, s, c)
           ON CONFLICT (unit_code, period, layout) DO UPDATE SET
               inputs_key = EXCLUDED.inputs_key, computed_at = EXCLUDED.computed_at, total = EXCLUDED.total,
               etag = EXCLUDED.etag, body = EXCLUDED.body, summary = EXCLUDED.summary, counts = EXCLUDED.counts""",
        *[list(column) for column in columns[:10]],
    )
    current = set(periods_of(now))
    await _write_days(apg, [(r[0], r[1], r[5], r[10], r[12]) for r in rows if r[2] == "portal" and r[1] in current],
                      now)
    return len(rows) // len(LAYOUTS)


async def _mark(runtime: Runtime, pairs: set[tuple[str, str]]) -> None:
    if not pairs:
        return
    units, periods = zip(*sorted(pairs))
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        await apg.execute(
            """INSERT INTO score_marks (unit_code, period, marked_at)
               SELECT u, p, clock_timestamp() FROM unnest($1::text[], $2::text[]) AS x(u, p)
               ON CONFLICT (unit_code, period) DO UPDATE SET marked_at = EXCLUDED.marked_at""",
            list(units), list(periods),
        )
        await apg.execute(f"NOTIFY {CARDS_MOVED}")
    cards_moved_here(runtime)


async def counters_moved(runtime: Runtime, touched: Iterable[tuple[str, str]]) -> None:
    """After a commit that moved the counters of ``touched`` (unit, stored period) pairs: the cards of
    those units and their ancestors, for every period that reads those rows, are out of date."""
    pairs = set()
    for unit, stored in touched:
        for period in periods_reading(stored):
            pairs.update((code, period) for code in with_ancestors(runtime.units, [unit]))
    await _mark(runtime, pairs)


async def feeds_moved(runtime: Runtime, units: Iterable[str] | None = None) -> None:
    """After a feed write about ``units`` (None: any unit, e.g. the unit tree changed): every existing card
    of those units and their ancestors is out of date."""
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        if units is None:
            rows = await apg.fetch("SELECT DISTINCT unit_code, period FROM score_cards")
        else:
            rows = await apg.fetch(
                "SELECT DISTINCT unit_code, period FROM score_cards WHERE unit_code = ANY($1::text[])",
                sorted(with_ancestors(runtime.units, units)))
    await _mark(runtime, {(r["unit_code"], r["period"]) for r in rows})


async def refresh_marked(runtime: Runtime, *, everything: bool = False, now: dt.datetime | None = None) -> int:
    """The indicators side's refresh: recompute every card out of date (``everything``: every card, for
    what moves with the clock alone). Returns the cards recomputed (per layout)."""
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        rows = await apg.fetch(
            f"""SELECT DISTINCT c.unit_code, c.period FROM score_cards c
                LEFT JOIN score_marks m ON m.unit_code = c.unit_code AND m.period = c.period
                WHERE $1 OR NOT ({answers_for_now('$2')})""",
            everything, inputs_key(runtime.settings),
        )
        targets: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            targets[r["period"]].add(r["unit_code"])
        computed = await compute_cards(apg, runtime, targets, now or utcnow()) if targets else 0
    if computed:
        cards_moved_here(runtime)
    return computed


def answers_for_now(inputs_key_parameter: str) -> str:
    """Whether a stored card ``c`` (with its mark ``m``, left-joined) answers for now, as SQL: computed
    under the policies in force (the inputs key, a statement parameter), after its last mark."""
    return (f"(c.inputs_key = {inputs_key_parameter}::text"
            " AND (m.marked_at IS NULL OR m.marked_at < c.computed_at))")


def card_of(row) -> Card:
    return Card(row["unit_code"], row["period"], row["layout"], row["computed_at"], row["etag"], row["body"],
                row["summary"], row["counts"])


async def read_cards(runtime: Runtime, codes: Iterable[str], period: str, layout: str = "portal") -> dict[str, Card]:
    """The cards of ``codes`` for a period and layout, by unit code (a primary-key lookup; a card not
    computed yet, or computed under other policies, is computed now)."""
    codes = [c for c in codes if c in runtime.units]
    key = inputs_key(runtime.settings)
    rows = await fetch_read(
        runtime,
        f"""SELECT c.* FROM score_cards c
            LEFT JOIN score_marks m ON m.unit_code = c.unit_code AND m.period = c.period
            WHERE c.unit_code = ANY($1::text[]) AND c.period = $2 AND c.layout = $3 AND {answers_for_now('$4')}""",
        codes, period, layout, key,
    )
    cards = {r["unit_code"]: card_of(r) for r in rows}
    missing = [c for c in codes if c not in cards]
    if missing:
        async with runtime.engine.begin() as conn:
            apg = await driver_connection(conn)
            await compute_cards(apg, runtime, {period: set(missing)}, utcnow())
            rows = await apg.fetch(
                "SELECT * FROM score_cards WHERE unit_code = ANY($1::text[]) AND period = $2 AND layout = $3",
                missing, period, layout,
            )
        cards.update({r["unit_code"]: card_of(r) for r in rows})
        cards_moved_here(runtime)
    return cards


async def read_summaries(runtime: Runtime, codes: Iterable[str], period: str) -> dict[str, bytes]:
    """The league-table rows (JSON) of ``codes`` for a period, by unit code: only the rows are read; cards
    out of date or missing are computed as :func:`read_cards` does."""
    codes = [c for c in codes if c in runtime.units]
    key = inputs_key(runtime.settings)
    cache: CardCache | None = runtime.card_cache
    kept_as = ("summaries", tuple(codes), period, key)
    if cache is not None and (kept := cache.get(kept_as)) is not None:
        return kept
    generation = cache.generation if cache is not None else 0
    rows = await fetch_read(
        runtime,
        f"""SELECT c.unit_code, c.summary FROM score_cards c
            LEFT JOIN score_marks m ON m.unit_code = c.unit_code AND m.period = c.period
            WHERE c.unit_code = ANY($1::text[]) AND c.period = $2 AND c.layout = 'portal'
              AND {answers_for_now('$3')}""",
        codes, period, key,
    )
    out = dict(rows)
    missing = [c for c in codes if c not in out]
    if missing:
        out.update({code: card.summary for code, card in (await read_cards(runtime, missing, period)).items()})
    if cache is not None:
        cache.put(kept_as, out, generation)
    return out


async def read_card(runtime: Runtime, code: str, period: str, layout: str = "portal") -> Card:
    """A unit's card for a period (``2026-08``, ``2026-Q3``, ``2026``) and layout (``portal``, ``decision``)."""
    cache: CardCache | None = runtime.card_cache
    kept_as = ("card", code, period, layout, inputs_key(runtime.settings))
    if cache is not None and (kept := cache.get(kept_as)) is not None:
        return kept
    generation = cache.generation if cache is not None else 0
    cards = await read_cards(runtime, [code], period, layout)
    if code not in cards:
        raise KeyError(code)
    if cache is not None:
        cache.put(kept_as, cards[code], generation)
    return cards[code]


class CardCache:
    """Cards and league-table rows this api process has read, reused for at most ``max_age`` seconds
    (``score_max_age_seconds``: the Cache-Control max-age the answers carry, so no more than any HTTP
    cache on the way may reuse them) and never past a write that moved a card. Writers NOTIFY
    :data:`CARDS_MOVED` inside their transaction: :class:`CardsMovedListener` empties the cache when the
    notification arrives (PostgreSQL sends it at the writer's commit); a writer in this process empties
    it at once, after its commit (:func:`cards_moved_here`). Nothing is reused while the listener is not
    connected, and a read begun before an emptying is not kept (``generation``)."""

    def __init__(self, max_age: float, size: int = 1024) -> None:
        self._entries: TTLCache = TTLCache(maxsize=size, ttl=max_age)
        self.generation = 0
        self.listening = False

    def get(self, key):
        return self._entries.get(key) if self.listening else None

    def put(self, key, value, generation: int) -> None:
        if self.listening and generation == self.generation:
            self._entries[key] = value

    def moved(self) -> None:
        self.generation += 1
        self._entries.clear()


def cards_moved_here(runtime: Runtime) -> None:
    if runtime.card_cache is not None:
        runtime.card_cache.moved()


class CardsMovedListener(Listener):
    """Keeps a :class:`CardCache` honest: emptied on each :data:`CARDS_MOVED`, and used only while listening."""

    channel = CARDS_MOVED

    def __init__(self, runtime: Runtime, cache: CardCache) -> None:
        super().__init__(runtime)
        self.cache = cache

    def notified(self) -> None:
        self.cache.moved()

    def connected(self) -> None:
        self.cache.moved()  # what moved while nobody listened
        self.cache.listening = True

    def lost(self) -> None:
        self.cache.listening = False
        self.cache.moved()


async def _write_days(apg: asyncpg.Connection, entries: list[tuple], now: dt.datetime) -> int:
    """Today's ``daily_scores`` rows: (unit, period, total, rating, groups as JSON) each; a row changes only
    when its score did."""
    if not entries:
        return 0
    unit, period, total, rating, groups = (list(column) for column in zip(*entries))
    status = await apg.execute(
        """INSERT INTO daily_scores (unit_code, period, day, total, rating, groups, recorded_at)
           SELECT u, p, $3, t, r, g, $4 FROM unnest($1::text[], $2::text[], $5::numeric[], $6::text[], $7::jsonb[])
               AS x(u, p, t, r, g)
           ON CONFLICT (unit_code, period, day) DO UPDATE SET total = EXCLUDED.total,
               rating = EXCLUDED.rating, groups = EXCLUDED.groups, recorded_at = EXCLUDED.recorded_at
           WHERE (daily_scores.total, daily_scores.rating, daily_scores.groups)
                 IS DISTINCT FROM (EXCLUDED.total, EXCLUDED.rating, EXCLUDED.groups)""",
        unit, period, now.astimezone(VIETNAM).date(), now, total, rating, groups,
    )
    return int(status.rsplit(" ", 1)[-1])


async def record_daily_scores(runtime: Runtime, now: dt.datetime | None = None) -> int:
    """Today's ``daily_scores`` row of every unit for the month, quarter and year holding ``now``, scored
    at ``now`` (the cards themselves are not touched); returns the rows that changed."""
    now = now or utcnow()
    tree = runtime.units
    entries = []
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        await apg.execute("SELECT pg_advisory_xact_lock($1)", CARD_LOCK)
        roots = sorted({_root(tree, code) for code in tree.units})
        for period_key in periods_of(now):
            period = parse_period(period_key)
            for root in roots:
                context = await load_context(apg, tree, root, period, now=now, policy=runtime.settings.policy,
                                             calendar=runtime.calendar)
                for code in tree.subtree(root):
                    card = score_inputs(context.inputs_for(code), runtime.settings.policy,
                                        seconds_per_day=runtime.calendar.seconds_per_day)
                    entries.append((code, period_key, card.total, card.rating,
                                    jsonb({g["code"]: g["score"] for g in card.groups})))
        return await _write_days(apg, entries, now)
