"""A seeded province: procedure catalogue, dossiers and their event streams. Pure: no I/O.

Given a :class:`~services.simulator.profile.ProvinceProfile` (per-unit figures of a real month) and a
seed, :func:`simulate` yields canonical events (events.md §2) in delivery order:

- dossiers arrive uniformly over the working time of the month, ``received × scale`` per unit;
- each unit's on-time rate, mean processing time (working days), fee-bearing share, online payment,
  e-result, digitisation, reuse, data-store, population-data and sync ratios follow its profile; the
  channel mix follows the province's (the portal publishes it for the province only);
- procedures come from a catalogue (:func:`build_catalogue`) with legal days, fees and online level;
  commune procedures share codes across communes, as in the real national catalogue;
- a dossier's life: (1 Mới đăng ký if online) → 2 Được tiếp nhận → 4 Đang xử lý → [6 → 4 payment]
  → [5 → 4 supplement] → 9 Đã xử lý xong (closing the last processing step) → [10 Đã trả kết quả];
  some online submissions are refused before receipt (1 → 3, counted nowhere), a few dossiers are
  withdrawn (7);
- with a horizon, events after it are not emitted, so the dossiers still open then stay open (by
  default every dossier's whole life is emitted);
- delivery: a fraction of events (``out_of_order_rate``) is delivered after a later event of the same
  dossier, and a fraction (``duplicate_rate``) is delivered twice (same event_id, same body).

The same profile, options and seed give the same stream, byte for byte (only ``random.Random`` with a
string seed and integer arithmetic on the calendar are used).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from services.simulator.profile import ProvinceProfile, UnitProfile
from shared.calendar import WorkingCalendar
from shared.timeutil import VIETNAM, parse_period

# The fields (lĩnh vực) of the simulated catalogue: code, name.
FIELDS_VI = (
    ("HT", "Hộ tịch"),
    ("CT", "Chứng thực"),
    ("DD", "Đất đai"),
    ("XD", "Xây dựng"),
    ("HKD", "Thành lập và hoạt động của hộ kinh doanh"),
    ("BTXH", "Bảo trợ xã hội"),
    ("NCC", "Người có công"),
    ("GDDT", "Giáo dục và Đào tạo"),
    ("YT", "Y tế"),
    ("GTVT", "Giao thông vận tải"),
    ("TNMT", "Tài nguyên và Môi trường"),
    ("LDTL", "Lao động, Tiền lương"),
)
HANDLERS_VI = ("Chuyên viên thụ lý", "Lãnh đạo phòng", "Lãnh đạo đơn vị", "Văn thư")
LEGAL_DAYS = (1, 2, 3, 5, 7, 10, 12, 15, 20, 30)
LEGAL_DAY_WEIGHTS = (10, 8, 14, 16, 12, 14, 6, 10, 6, 4)


@dataclass(frozen=True)
class SimulationOptions:
    seed: int = 766
    scale: float = 1.0  # fraction of each unit's dossiers to generate (0.01: a 1% province)
    month: str | None = None  # default: the profile's month
    # Events later than this are not emitted (the dossiers then open stay open); default: none, every
    # dossier's whole life is emitted, so its outcome (on time or not) is the one drawn for it.
    horizon: dt.datetime | None = None
    duplicate_rate: float = 0.01  # share of events delivered a second time
    out_of_order_rate: float = 0.05  # share of events delivered after a later event of their dossier
    max_reorder_lag: int = 50  # extra events between the later event and the held-back one
    max_duplicate_lag: int = 2000  # events between an event and its duplicate
    # No published figures for these: our assumptions, stated here and in the tests.
    supplement_rate: float = 0.06  # dossiers with one supplement request (on-time ones keep time)
    two_supplements_rate: float = 0.05  # of the overdue dossiers, those with two requests
    refused_before_receipt_rate: float = 0.005  # of online submissions: 1 then 3, never received
    withdrawn_rate: float = 0.003
    result_returned_rate: float = 0.9  # a 10 follows the 9
    apology_rate: float = 0.6  # late dossiers with a phiếu xin lỗi
    late_mean_excess: float = 0.35  # an overdue dossier takes legal time × (1 + Exp(mean))
    source_prefix: str = "sim"


@dataclass(frozen=True)
class Procedure:
    code: str
    name: str
    field_code: str
    field_name: str
    legal_days: int
    fee_required: bool
    fee_data: bool  # integrated with online payment: its dossiers carry fee lines
    online_level: str  # none / partial / full
    for_individuals: bool

    def catalogue_entry(self, unit_code: str) -> dict:
        """The procedure as the catalogue feed carries it (events.md §5)."""
        return {
            "procedure_code": self.code,
            "unit_code": unit_code,
            "name": self.name,
            "field_code": self.field_code,
            "field_name": self.field_name,
            "online_level": self.online_level,
            "online_services": 0 if self.online_level == "none" else 1,
            "fee_required": self.fee_required,
            "for_individuals": self.for_individuals,
            "result_required": True,
            "legal_days": self.legal_days,
        }


@dataclass(frozen=True)
class UnitCatalogue:
    unit: UnitProfile
    fee: tuple[Procedure, ...]
    free: tuple[Procedure, ...]
    fee_cum: tuple[float, ...]  # cumulative popularity weights (Zipf)
    free_cum: tuple[float, ...]

    @property
    def procedures(self) -> tuple[Procedure, ...]:
        return self.fee + self.free


def _weighted_index(rng: random.Random, cumulative: tuple[float, ...]) -> int:
    import bisect

    return min(len(cumulative) - 1, bisect.bisect_right(cumulative, rng.random() * cumulative[-1]))


def _cumulative(n: int, exponent: float = 1.0) -> tuple[float, ...]:
    total, out = 0.0, []
    for rank in range(n):
        total += 1.0 / (rank + 1) ** exponent
        out.append(total)
    return tuple(out)


def _procedure(rng: random.Random, code: str, index: int, *, fee: bool, fee_data: bool, individuals: bool,
               legal_scale: float = 1.0) -> Procedure:
    field_code, field = FIELDS_VI[index % len(FIELDS_VI)]
    legal = LEGAL_DAYS[_weighted_index(rng, _cumulative_weights())]
    legal = max(1, round(legal * legal_scale))
    roll = rng.random()
    online = "full" if roll < 0.375 else "partial" if roll < 0.93 else "none"  # 21 / 31 / 4 of 56 (online file)
    return Procedure(
        code=code,
        name=f"Thủ tục {field.lower()} số {index + 1}",
        field_code=field_code,
        field_name=field,
        legal_days=legal,
        fee_required=fee,
        fee_data=fee_data,
        online_level=online,
        for_individuals=individuals,
    )


_LEGAL_CUM: tuple[float, ...] = ()


def _cumulative_weights() -> tuple[float, ...]:
    global _LEGAL_CUM
    if not _LEGAL_CUM:
        total, out = 0.0, []
        for w in LEGAL_DAY_WEIGHTS:
            total += w
            out.append(total)
        _LEGAL_CUM = tuple(out)
    return _LEGAL_CUM


def _mean_legal_days() -> float:
    return sum(d * w for d, w in zip(LEGAL_DAYS, LEGAL_DAY_WEIGHTS)) / sum(LEGAL_DAY_WEIGHTS)


def build_catalogue(profile: ProvinceProfile, seed: int) -> dict[str, UnitCatalogue]:
    """Each unit's procedures. Communes draw from one shared commune pool (same codes everywhere);
    departments have their own. Counts follow the profile (fee-bearing, with fee data, for individuals)."""
    rng = random.Random(f"{seed}:catalogue")
    communes = [u for u in profile.units if u.level == "COMMUNE"]
    pool_fee_n = max((u.fee_procedures for u in communes), default=0) + 6
    pool_free_n = max((u.individual_procedures for u in communes), default=0)
    commune_fee = [
        _procedure(rng, f"2.{1000 + i:06d}", i, fee=True, fee_data=False, individuals=True) for i in range(pool_fee_n)
    ]
    commune_free = [
        _procedure(rng, f"2.{3000 + i:06d}", i, fee=False, fee_data=False, individuals=True, legal_scale=0.8)
        for i in range(pool_free_n)
    ]
    out: dict[str, UnitCatalogue] = {}
    for position, unit in enumerate(profile.units):
        if unit.level == "PROVINCE" and unit.received == 0 and not unit.parent:
            continue
        urng = random.Random(f"{seed}:catalogue:{unit.code}")
        n_fee = unit.fee_procedures
        n_fee_data = min(unit.fee_data_procedures, n_fee)
        if unit.level == "COMMUNE":
            chosen = sorted(urng.sample(range(len(commune_fee)), min(n_fee, len(commune_fee))))
            fee = [dataclasses.replace(commune_fee[i], fee_data=rank < n_fee_data) for rank, i in enumerate(chosen)]
            free = list(commune_free)
        else:
            # Departments' legal times sized on their mean processing time (on-time dossiers use ~60%).
            legal_scale = max(0.5, unit.avg_processing_days / (_mean_legal_days() * 0.75))
            prefix = f"1.{position:03d}."
            fee = [
                _procedure(urng, f"{prefix}{i:04d}", i, fee=True, fee_data=i < n_fee_data, individuals=True,
                           legal_scale=legal_scale)
                for i in range(n_fee)
            ]
            n_free = max(3, unit.individual_procedures)
            free = [
                _procedure(urng, f"{prefix}{5000 + i:04d}", i, fee=False, fee_data=False,
                           individuals=urng.random() < 0.7, legal_scale=legal_scale)
                for i in range(n_free)
            ]
        urng.shuffle(fee)
        urng.shuffle(free)
        out[unit.code] = UnitCatalogue(unit, tuple(fee), tuple(free), _cumulative(len(fee)), _cumulative(len(free)))
    return out


class _Dossier:
    """A dossier in flight: shared by its events while they wait in the delivery heap."""

    __slots__ = ("code", "unit", "procedure", "channel", "remaining", "total")

    def __init__(self, code: str, unit: str, procedure: str, channel: int) -> None:
        self.code = code
        self.unit = unit
        self.procedure = procedure
        self.channel = channel
        self.remaining = 0
        self.total = 0


class _Clock:
    """Working-time arithmetic in integer working seconds since the calendar's first day."""

    def __init__(self, calendar: WorkingCalendar) -> None:
        self.calendar = calendar
        self.epoch = dt.datetime.combine(calendar.first_day, dt.time(), tzinfo=VIETNAM)
        self.day = calendar.seconds_per_day

    def at(self, working_seconds: int) -> dt.datetime:
        return self.calendar.instant_after(self.epoch, max(1, working_seconds))

    def of(self, instant: dt.datetime) -> int:
        return self.calendar.cumulative(instant)


def _unit_plan(unit: UnitProfile, catalogue: UnitCatalogue, options: SimulationOptions) -> dict:
    """Per-unit probabilities derived from the profile."""
    received = max(1, unit.received)
    on_time = unit.on_time / received if unit.received else 1.0
    # Mean legal days of the unit's dossier mix, to set on-time durations so that the mean
    # processing time matches the profile: mean = L̄ · (r · m_on + (1 − r) · m_late).
    fee_share = unit.share(unit.fee_dossiers, unit.received) if catalogue.fee else 0.0

    def mean_legal(procs: tuple[Procedure, ...], cum: tuple[float, ...]) -> float:
        if not procs:
            return 0.0
        weights = [cum[0]] + [cum[i] - cum[i - 1] for i in range(1, len(cum))]
        return sum(p.legal_days * w for p, w in zip(procs, weights)) / cum[-1]

    legal = fee_share * mean_legal(catalogue.fee, catalogue.fee_cum) + (1 - fee_share) * mean_legal(
        catalogue.free, catalogue.free_cum
    )
    m_late = 1.0 + options.late_mean_excess
    target = unit.avg_processing_days
    if legal > 0 and on_time > 0 and target > 0:
        m_on = (target / legal - (1 - on_time) * m_late) / on_time
    else:
        m_on = 0.5
    m_on = min(0.9, max(0.05, m_on))
    if legal > 0 and target > 0 and on_time < 1:
        # Where on-time durations alone cannot reach the mean, overdue dossiers run later.
        m_late = min(4.0, max(1.05, (target / legal - on_time * m_on) / (1 - on_time)))
    return {
        "on_time": on_time,
        "m_on": m_on,
        "late_excess": m_late - 1.0,
        "fee_share": fee_share,
        "paid_online": unit.share(unit.paid_online, unit.fee_dossiers),
        "e_result": unit.share(unit.e_result),
        "digitized": unit.share(unit.digitized),
        "reused": unit.share(unit.reused),
        "from_data_store": unit.share(unit.from_data_store),
        "population_data": unit.share(unit.population_data),
        "synced": unit.share(unit.synced, unit.synced_denominator) if unit.synced_denominator else 1.0,
    }


def _on_time_fraction(rng: random.Random, mean: float) -> float:
    """A fraction of the legal time in (0, 0.95] with the given mean (uniform on a sub-interval)."""
    if mean <= 0.475:
        low, high = 0.0, 2 * mean
    else:
        low, high = 2 * mean - 0.95, 0.95
    return low + (high - low) * rng.random()


def simulate(
    profile: ProvinceProfile,
    options: SimulationOptions = SimulationOptions(),
    calendar: WorkingCalendar | None = None,
) -> Iterator[dict]:
    """The province's events for the month, in delivery order (duplicates and late deliveries included)."""
    calendar = calendar or WorkingCalendar()
    rng = random.Random(f"{options.seed}:deliver")
    return _deliver(_in_time_order(profile, options, calendar), rng, options)


def _arrivals(profile: ProvinceProfile, options: SimulationOptions, clock: _Clock,
              start: int, end: int) -> list[tuple[int, int]]:
    """(receipt working second, unit index) of every dossier of the month, in time order."""
    arrivals: list[tuple[int, int]] = []
    for index, unit in enumerate(profile.units):
        if unit.received <= 0:
            continue
        urng = random.Random(f"{options.seed}:arrivals:{unit.code}")
        exact = unit.received * options.scale
        count = int(exact) + (1 if urng.random() < exact - int(exact) else 0)
        for _ in range(count):
            arrivals.append((start + int((end - start) * urng.random()), index))
    arrivals.sort()
    return arrivals


def _in_time_order(
    profile: ProvinceProfile, options: SimulationOptions, calendar: WorkingCalendar
) -> Iterator[tuple[float, int, _Dossier, int, dt.datetime, dict | None]]:
    """Every event up to the horizon, in ``occurred_at`` order: (timestamp, seq, dossier, status, at, extra)."""
    clock = _Clock(calendar)
    period = parse_period(options.month or profile.month)
    horizon_ts = options.horizon.timestamp() if options.horizon else math.inf
    month_start, month_end = clock.of(period.start), clock.of(period.end - dt.timedelta(seconds=1))
    catalogue = build_catalogue(profile, options.seed)
    plans = {u.code: _unit_plan(u, catalogue[u.code], options) for u in profile.units if u.code in catalogue}
    online_total = profile.channel_online + profile.channel_in_person + profile.channel_postal
    p_online = profile.channel_online / online_total if online_total else 0.5
    p_postal = profile.channel_postal / online_total if online_total else 0.0
    rng = random.Random(f"{options.seed}:dossiers")
    lead = 3 * 86400.0  # an online submission precedes its receipt by at most this (wall seconds)
    heap: list = []
    seq = 0
    serials: dict[tuple[str, str], int] = {}
    yymmdd_cache: dict[int, str] = {}

    for received_ws, unit_index in _arrivals(profile, options, clock, month_start, month_end):
        unit = profile.units[unit_index]
        received_at = clock.at(received_ws)
        received_ts = received_at.timestamp()
        while heap and heap[0][0] <= received_ts - lead:
            yield heapq.heappop(heap)
        plan = plans[unit.code]
        cat = catalogue[unit.code]
        fee = bool(cat.fee) and rng.random() < plan["fee_share"]
        if fee:
            procedure = cat.fee[_weighted_index(rng, cat.fee_cum)]
        else:
            procedure = cat.free[_weighted_index(rng, cat.free_cum)] if cat.free else cat.fee[0]
        roll = rng.random()
        channel = 2 if roll < p_online else 3 if roll < p_online + p_postal else 1
        day_key = received_at.toordinal()
        day_text = yymmdd_cache.get(day_key) or yymmdd_cache.setdefault(day_key, received_at.strftime("%y%m%d"))
        if channel == 2 and rng.random() < options.refused_before_receipt_rate:
            # An extra online submission refused before receipt (1 then 3): counted nowhere.
            serial = serials[(unit.code, day_text)] = serials.get((unit.code, day_text), 0) + 1
            refused = _Dossier(f"{unit.code}-{day_text}-{serial:04d}", unit.code, procedure.code, channel)
            submitted = received_at - dt.timedelta(seconds=int(min(lead - 60, 60 + rng.expovariate(1 / 36000.0))))
            seq = _push(heap, refused, [(submitted, 1, {"channel": 2}), (received_at, 3, None)], seq, horizon_ts)
        serial = serials[(unit.code, day_text)] = serials.get((unit.code, day_text), 0) + 1
        dossier = _Dossier(f"{unit.code}-{day_text}-{serial:04d}", unit.code, procedure.code, channel)

        events: list[tuple[dt.datetime, int, dict | None]] = []
        if channel == 2:
            submitted = received_at - dt.timedelta(seconds=int(min(lead - 60, 60 + rng.expovariate(1 / 36000.0))))
            events.append((submitted, 1, {"channel": 2}))

        legal_ws = procedure.legal_days * clock.day
        due_at = clock.at(received_ws + legal_ws)
        on_time = rng.random() < plan["on_time"]
        if on_time:
            duration = int(legal_ws * _on_time_fraction(rng, plan["m_on"]))
        else:
            duration = int(legal_ws * (1.0 + rng.expovariate(1 / plan["late_excess"]))) + clock.day // 8
        duration = max(duration, 1800)
        supplements = 0
        if not on_time and rng.random() < options.two_supplements_rate:
            supplements = 2
        elif on_time and rng.random() < options.supplement_rate:
            supplements = 1

        attributes = {
            "result_required": True,
            "fee_required": procedure.fee_required,
            "digitized": rng.random() < plan["digitized"],
            "reused_digitized": rng.random() < plan["reused"],
            "from_data_store": rng.random() < plan["from_data_store"],
            "population_data": rng.random() < plan["population_data"],
            "synced_to_portal": rng.random() < plan["synced"],
            "applicant_type": 1 if procedure.for_individuals else 2,
        }
        if procedure.fee_required:
            attributes["fee_data"] = procedure.fee_data
        receipt: dict = {"channel": channel, "due_at": due_at, "attributes": attributes}
        events.append((received_at, 2, receipt))

        # Interior of processing, in working seconds after receipt: start, payment, supplements.
        start = received_ws + min(duration // 10, 1800 + int(rng.random() * 7200)) + 1
        events.append((clock.at(start), 4, None))
        kinds = (["fee"] if fee else []) + ["supplement"] * supplements
        marks = sorted(rng.random() for _ in kinds)
        span = received_ws + duration - start
        shift = 0
        previous = start
        for kind, mark in zip(kinds, marks):
            position = max(previous + 1, start + int(span * (0.05 + 0.85 * mark))) + shift
            if kind == "fee":
                events.append((clock.at(position), 6, None))
                # Waiting for the payment is processing time (the rules do not subtract it).
                paid = position + 60 + int(rng.random() * min(clock.day, span * 0.05))
                paid_online = rng.random() < plan["paid_online"]
                events.append((clock.at(paid), 4, {"attributes": {"paid_online": paid_online}}))
                previous = paid - shift
            else:
                waiting = clock.day // 2 + int(rng.random() * 3 * clock.day)
                events.append((clock.at(position), 5, None))
                shift += waiting
                events.append((clock.at(position + waiting), 4, None))
                previous = position + waiting - shift + 1
        end_ws = max(received_ws + duration + shift, previous + shift + 1)
        step_due = clock.at(received_ws + int(legal_ws * 0.8) + shift)
        end_attributes: dict = {"e_result": rng.random() < plan["e_result"]}
        if not on_time:
            end_attributes["apology_letter"] = rng.random() < options.apology_rate
        end_status = 7 if rng.random() < options.withdrawn_rate else 9
        end_at = clock.at(end_ws)
        end: dict = {
            "attributes": end_attributes,
            "step": {
                "name": "Xử lý hồ sơ",
                "handler": HANDLERS_VI[int(rng.random() * len(HANDLERS_VI))],
                "due_at": step_due,
                "started_at": clock.at(start),
            },
        }
        events.append((end_at, end_status, end))
        if end_status == 9 and rng.random() < options.result_returned_rate:
            events.append((clock.at(end_ws + 300 + int(rng.random() * 2 * clock.day)), 10, None))
        seq = _push(heap, dossier, events, seq, horizon_ts)

    while heap:
        yield heapq.heappop(heap)


def _push(heap: list, dossier: _Dossier, events: list, seq: int, horizon_ts: float) -> int:
    kept = 0
    last_ts = -math.inf
    for at, status, extra in events:
        ts = at.timestamp()
        if ts > horizon_ts:
            break
        if ts <= last_ts:  # keep a dossier's events strictly ordered in time
            at = at + dt.timedelta(seconds=1 + last_ts - ts)
            ts = at.timestamp()
        last_ts = ts
        heapq.heappush(heap, (ts, seq, dossier, status, at, extra))
        seq += 1
        kept += 1
    dossier.remaining = dossier.total = kept
    return seq


def _iso(value: dt.datetime) -> str:
    return value.astimezone(VIETNAM).isoformat()


def _body(dossier: _Dossier, status: int, at: dt.datetime, extra: dict | None, event_id: str) -> dict:
    body: dict = {
        "event_id": event_id,
        "dossier_code": dossier.code,
        "unit_code": dossier.unit,
        "procedure_code": dossier.procedure,
        "status": status,
        "occurred_at": _iso(at),
    }
    if extra:
        for key, value in extra.items():
            if key == "due_at":
                body[key] = _iso(value)
            elif key == "step":
                body[key] = {k: (_iso(v) if isinstance(v, dt.datetime) else v) for k, v in value.items()}
            else:
                body[key] = value
    return body


def _deliver(stream, rng: random.Random, options: SimulationOptions) -> Iterator[dict]:
    """Delivery order: some events held back past a later event of their dossier, some sent twice."""
    held: dict[str, list[dict]] = {}  # dossier code -> events waiting for a later one of that dossier
    delayed: list[tuple[int, int, dict]] = []  # (release position, tie, event) of reordered events
    duplicates: list[tuple[int, int, dict]] = []  # (release position, tie, copy) of duplicated events
    emitted = 0
    tie = 0
    prefix = f"{options.source_prefix}-{options.seed}-"
    lag_reorder, lag_duplicate = options.max_reorder_lag, options.max_duplicate_lag

    for _, seq, dossier, status, at, extra in stream:
        body = _body(dossier, status, at, extra, f"{prefix}{seq}")
        dossier.remaining -= 1
        if dossier.remaining > 0 and rng.random() < options.out_of_order_rate * dossier.total / (dossier.total - 1):
            held.setdefault(dossier.code, []).append(body)  # goes out after this dossier's next event
            continue
        ready = [body]
        for early in held.pop(dossier.code, ()):
            tie += 1
            heapq.heappush(delayed, (emitted + 1 + int(rng.random() * lag_reorder), tie, early))
        while True:
            for event in ready:  # first deliveries: each may be sent again later
                yield event
                emitted += 1
                if rng.random() < options.duplicate_rate:
                    tie += 1
                    heapq.heappush(duplicates, (emitted + 1 + int(rng.random() * lag_duplicate), tie, event))
            while duplicates and duplicates[0][0] <= emitted:
                yield heapq.heappop(duplicates)[2]
                emitted += 1
            ready = []
            while delayed and delayed[0][0] <= emitted:
                ready.append(heapq.heappop(delayed)[2])
            if not ready:
                break
    ready = [event for _, _, event in sorted(delayed)]
    for events in held.values():  # not reached: a dossier's last event is never held
        ready.extend(events)
    for event in ready:
        yield event
        if rng.random() < options.duplicate_rate:
            tie += 1
            heapq.heappush(duplicates, (0, tie, event))
    while duplicates:
        yield heapq.heappop(duplicates)[2]
