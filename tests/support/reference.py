"""Generators of minimal inputs that reproduce the portal's published counts (shared/spec/reference/).

Each generator returns plain data (canonical events, catalogue items, feedback events) built from the
CSVs, so a test can push them through the real ingest and indicators path. One status-2 event per
dossier carries every attribute the published counts need (events.md §2).

Procedure-based components count distinct procedures over the subtree (indicators.md §5), so the
catalogue draws each unit's procedures from shared pools sized on the parent row, rotating so the
children's union is exactly the parent's count.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from shared.timeutil import VIETNAM

REFERENCE_DIR = Path(__file__).resolve().parents[3] / "shared" / "spec" / "reference"
AUGUST = dt.datetime(2026, 8, 1, 8, 0, tzinfo=VIETNAM)


def read(name: str) -> list[dict]:
    with open(REFERENCE_DIR / f"portal-2026-08-{name}.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def metric_rows(name: str) -> dict[str, dict[str, dict]]:
    """unit code → metric code → row, for the files with one row per unit × metric."""
    ids = {r["departmentId"]: r["departmentCode"] for r in read("digitized")}
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in read(name):
        out[ids[r["departmentId"]]][r["metrics.code"]] = r
    return dict(out)


class Pool:
    """Procedure codes handed out in rotation: the union over units covers the pool once enough are taken."""

    def __init__(self, prefix: str, size: int) -> None:
        self.codes = [f"{prefix}{i:04d}" for i in range(size)]
        self.offset = 0

    def take(self, count: int) -> list[str]:
        assert count <= len(self.codes), (count, len(self.codes))
        out = [self.codes[(self.offset + i) % len(self.codes)] for i in range(count)]
        self.offset = (self.offset + count) % len(self.codes)
        return out


@dataclass
class Dataset:
    events: list[dict] = field(default_factory=list)
    catalogue: list[dict] = field(default_factory=list)
    feedback: list[dict] = field(default_factory=list)
    e_copy_units: list[str] = field(default_factory=list)


def _cycle(codes: list[str], i: int) -> str:
    return codes[i % len(codes)]


def digitized_payment_satisfaction(units_tree) -> Dataset:
    """August 2026 inputs reproducing the digitized, payment and satisfaction CSVs together.

    Per unit: its received dossiers (one status-2 event each) carry e_result, digitized, reused_digitized,
    from_data_store and population_data on the first n of them; fee_required on the last ``obligations``
    and paid_online on the last ``paid``; on time (due after the month) the first ``5.3 numerator``,
    the rest due the next day. Feedback items reproduce 5.1 and 5.2, the parent's own included.
    """
    digitized = metric_rows("digitized")
    satisfaction = metric_rows("satisfaction")
    payment = {r["departmentCode"]: r for r in read("payment")}
    parent_code = next(r["departmentCode"] for r in read("payment") if r["level"] == "PARENT")
    parent_pay = payment[parent_code]
    parent_individuals = digitized[parent_code]["CITIZEN_DATA_CONNECTED_FORMALITY"]
    paid_pool = Pool("FP", int(parent_pay["totalDossierOnlineFormalityPaymentSuccess"]))
    fee_data_pool = Pool("FD", int(parent_pay["totalFeeDossierFormality"]))
    other_fee_pool = Pool("FO", int(parent_pay["totalFeeDossierFormalityDistinct"]) - len(paid_pool.codes)
                          - len(fee_data_pool.codes))
    population_pool = Pool("IK", int(parent_individuals["metrics.numerator"]))
    individual_pool = Pool("IN", int(parent_individuals["metrics.denominator"]) - len(population_pool.codes))

    data = Dataset()
    data.e_copy_units = [code for code, unit in units_tree.units.items() if unit.level == "COMMUNE"]
    children = [code for code in payment if code != parent_code]
    for unit in children:
        d = {k: (int(v["metrics.numerator"] or 0), int(v["metrics.denominator"] or 0))
             for k, v in digitized[unit].items()}
        pay = payment[unit]
        received = d["ORIGINAL_RESULT_AVAILABLE"][1]
        paid, obligations = int(pay["totalDossierOnlinePaymentSuccess"]), int(pay["totalDossierFinancialObligation"])
        n_paid = int(pay["totalDossierOnlineFormalityPaymentSuccess"])
        n_fee_data = int(pay["totalFeeDossierFormality"])
        n_fee = int(pay["totalFeeDossierFormalityDistinct"])
        n_population, n_individual = d["CITIZEN_DATA_CONNECTED_FORMALITY"]
        population = d["CITIZEN_DATA_CONNECTED_DOSSIER"][0]
        on_time = int(satisfaction[unit]["DOSSIER_RECEIVING_SATISFACTION"]["metrics.numerator"])

        paid_procs = paid_pool.take(n_paid)
        fee_data_procs = fee_data_pool.take(n_fee_data)
        other_fee = other_fee_pool.take(n_fee - n_paid - n_fee_data)
        population_procs = population_pool.take(n_population)
        other_individual = individual_pool.take(n_individual - n_population)
        for code in paid_procs + fee_data_procs + other_fee:
            data.catalogue.append({"unit_code": unit, "procedure_code": code, "fee_required": True,
                                   "online_level": "full", "online_services": 1, "valid_from": "2026-01-01"})
        for code in population_procs + other_individual:
            data.catalogue.append({"unit_code": unit, "procedure_code": code, "for_individuals": True,
                                   "valid_from": "2026-01-01"})

        # Which dossiers serve which procedure: paid ones the paid procedures; population ones (not paid)
        # the population procedures; then one fee-data dossier per fee-data procedure.
        first_paid = received - paid
        first_fee = received - obligations
        k_served = 0
        fee_data_left = list(fee_data_procs)
        for i in range(received):
            attributes = {}
            for metric, attribute in (("ORIGINAL_RESULT_AVAILABLE", "e_result"),
                                      ("SO_HOA_GIAY_TO_GIAI_QUYET", "digitized"),
                                      ("REUSED_DIGITIZED_DATA", "reused_digitized"),
                                      ("SYNCED_WITH_DVCQG_PERSONAL_STORAGE", "from_data_store")):
                if i < d[metric][0]:
                    attributes[attribute] = True
            if i < population:
                attributes["population_data"] = True
            if i >= first_fee:
                attributes["fee_required"] = True
            procedure = "X"
            if i >= first_paid:
                attributes["paid_online"] = True
                procedure = _cycle(paid_procs, i)
            elif i < population and population_procs and k_served < len(population_procs):
                procedure = population_procs[k_served]
                k_served += 1
            elif fee_data_left and (i >= population or k_served >= len(population_procs)):
                procedure = fee_data_left.pop()
                attributes["fee_data"] = True
            elif i < population and population_procs:
                procedure = _cycle(population_procs, i)
            received_at = AUGUST + dt.timedelta(days=i % 28, minutes=i % 480)
            due = received_at + (dt.timedelta(days=40) if i < on_time else dt.timedelta(days=1))
            data.events.append({
                "event_id": f"ref-{unit}-{i:06d}", "dossier_code": f"REF-{unit}-{i:06d}", "unit_code": unit,
                "procedure_code": procedure, "status": 2, "occurred_at": received_at.isoformat(),
                "due_at": due.isoformat(), "channel": 1, "attributes": attributes,
            })
        assert k_served == len(population_procs), (unit, "population procedures left without a dossier")
        assert not fee_data_left, (unit, "fee-data procedures left without a dossier")

    # Feedback: the parent's own items are the parent's counts minus its children's.
    totals = {}
    for unit in [*children, parent_code]:
        s = satisfaction[unit]
        on_time_n, items = (int(s["PETITION_PROCESSING_ON_TIME"][k]) for k in ("metrics.numerator", "metrics.denominator"))
        satisfied = int(s["PETITION_HANDLING_SATISFACTION"]["metrics.numerator"])
        totals[unit] = (items, on_time_n, satisfied)
    sums = [sum(totals[u][j] for u in children) for j in range(3)]
    totals[parent_code] = tuple(p - c for p, c in zip(totals[parent_code], sums))
    for unit, (items, on_time_n, satisfied) in totals.items():
        assert 0 <= satisfied <= on_time_n <= items, (unit, totals[unit])
        for j in range(items):
            fid = f"PAKN-{unit}-{j:04d}"
            received_at = AUGUST + dt.timedelta(days=j % 20)
            due = received_at + dt.timedelta(days=5)
            handled = received_at + (dt.timedelta(days=2) if j < on_time_n else dt.timedelta(days=7))
            data.feedback.append({"feedback_id": fid, "unit_code": unit, "kind": "received",
                                  "occurred_at": received_at.isoformat(), "due_at": due.isoformat()})
            data.feedback.append({"feedback_id": fid, "unit_code": unit, "kind": "handled",
                                  "occurred_at": handled.isoformat()})
            if j < on_time_n:
                data.feedback.append({"feedback_id": fid, "unit_code": unit, "kind": "rated",
                                      "rating": "satisfied" if j < satisfied else "unsatisfied",
                                      "occurred_at": (handled + dt.timedelta(hours=1)).isoformat()})
    return data


# --- Transparency (1.1–1.4) -------------------------------------------------------------------------


@dataclass
class TransparencyData:
    events: list[dict] = field(default_factory=list)
    catalogue: list[dict] = field(default_factory=list)
    reported: list[dict] = field(default_factory=list)


CONTENT_PROCEDURES = 89  # PUBLIC_CONTENT_FULL is 87/89 for every unit, the parent included
CONTENT_COMPLETE = 87


def transparency() -> TransparencyData:
    """August 2026 inputs reproducing the transparency CSV (1.1–1.4) for every unit.

    - 1.1 and 1.2 are empty (no_data): no catalogue row carries a publication decision.
    - 1.3: every child lists the same 89 procedures, 87 of them with all parts public, so every unit and
      the parent (distinct procedures over the subtree) is 87/89.
    - 1.4: each child receives exactly its DOSSIER_SYNC numerator of dossiers, each synced
      (``synced_to_portal`` on its status-2 event), and the reported-totals feed gives the denominator
      (``TEMP_NATIONAL_REPORT_DENOMINATOR``); the two ``NO_NATIONAL_REPORT_DATA`` units get neither
      dossiers nor a total, so 0/0 is no_data. The parent's reported total is the sum of its members'.
    """
    rows = metric_rows("transparency")
    parent = next(r["departmentCode"] for r in read("payment") if r["level"] == "PARENT")
    # The dossiers are received online, except at the units whose published online-services score is 0,
    # so that the online CSV's inputs can be loaded on top of these (see ``online``).
    offline_units = {r["departmentCode"] for r in read("online") if float(r["totalScore"]) == 0}
    codes = [f"CK{i:04d}" for i in range(CONTENT_PROCEDURES)]
    data = TransparencyData()
    for unit, metrics in rows.items():
        if unit == parent:
            continue
        content = metrics["PUBLIC_CONTENT_FULL"]
        assert (content["metrics.numerator"], content["metrics.denominator"]) == (str(CONTENT_COMPLETE),
                                                                                  str(CONTENT_PROCEDURES))
        for i, code in enumerate(codes):
            data.catalogue.append({"unit_code": unit, "procedure_code": code, "complete_parts": i < CONTENT_COMPLETE,
                                   "valid_from": "2026-01-01"})
        sync = metrics["DOSSIER_SYNC"]
        synced, reported = int(sync["metrics.numerator"]), int(sync["metrics.denominator"])
        if sync["metrics.dataQualityStatus"] == "NO_NATIONAL_REPORT_DATA":
            assert synced == reported == 0, unit
            continue
        data.reported.append({"unit_code": unit, "period": "2026-08", "received": reported})
        for i in range(synced):
            received_at = AUGUST + dt.timedelta(days=i % 28, minutes=i % 480)
            data.events.append({
                "event_id": f"sync-{unit}-{i:06d}", "dossier_code": f"SYNC-{unit}-{i:06d}", "unit_code": unit,
                "procedure_code": codes[i % CONTENT_PROCEDURES], "status": 2, "occurred_at": received_at.isoformat(),
                "due_at": (received_at + dt.timedelta(days=40)).isoformat(),
                "channel": 1 if unit in offline_units else 2,
                "attributes": {"synced_to_portal": True},
            })
    return data


# --- Online public services (3.1–3.3) ---------------------------------------------------------------


def _cents(value) -> int:
    from services.indicators.rules.scoring import round_half_up

    return round(round_half_up(value) * 100)


@dataclass(frozen=True)
class OnlineSplit:
    """One child's CLGQ inputs: 3.1 = k online of n procedures; 3.2 = a used of a + b service weights."""

    k: int
    n: int
    a: int
    b: int

    def cents(self) -> tuple[int, int]:
        from fractions import Fraction as Fr

        s31 = _cents(min(Fr(2), 2 * Fr(self.k, self.n) / Fr(4, 5)))
        s32 = _cents(4 * Fr(self.a, self.a + self.b))
        return s31, s32


@lru_cache(maxsize=1)
def _online_splits() -> dict[int, OnlineSplit]:
    """Every reachable 3.1 + 3.2 total (cents) → its cheapest split (fewest service weights, then procedures)."""
    s31 = {(k, n): OnlineSplit(k, n, 0, 1).cents()[0] for k in range(1, 4) for n in range(k, 57)}
    s32 = {(a, b): OnlineSplit(1, 1, a, b).cents()[1] for a in range(0, 6) for b in range(1, 41)}
    best: dict[int, tuple[tuple[int, int], OnlineSplit]] = {}
    for (a, b), c32 in s32.items():
        for (k, n), c31 in s31.items():
            # Every online entry weighs ≥ 1: the used one weighs a, the other k − 1 (or k) share b.
            unused_entries = k - 1 if a else k
            if b < unused_entries or (a and unused_entries == 0):
                continue
            key, total = (a + b, n), c31 + c32
            if total not in best or key < best[total][0]:
                best[total] = (key, OnlineSplit(k, n, a, b))
    return {total: split for total, (_, split) in best.items()}


def online_split(remainder_cents: int) -> OnlineSplit:
    """The cheapest split whose rounded 3.1 and 3.2 scores add up to ``remainder_cents`` exactly."""
    split = _online_splits().get(remainder_cents)
    assert split is not None, remainder_cents
    return split


@dataclass
class OnlineData:
    events: list[dict] = field(default_factory=list)
    catalogue: list[dict] = field(default_factory=list)
    splits: dict[str, OnlineSplit] = field(default_factory=dict)


ONLINE_CATALOGUE_FROM = "2026-01-02"  # a full replace, after the transparency catalogue's version


def online(base_events: list[dict]) -> OnlineData:
    """August 2026 inputs that, loaded on top of ``base_events`` (the transparency dossiers), reproduce
    the online CSV: every child's CLGQ score and the parent's counts.

    The catalogue is a full replace (``ONLINE_CATALOGUE_FROM``): the transparency procedures are
    removed from then on, so the base dossiers count in 3.3 only. See
    tests/integration/test_reference_transparency_online.py for what is underdetermined and how it is
    chosen.
    """
    rows = read("online")
    parent = next(r for r in rows if r["level"] == "PARENT")
    base: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # unit → [online, in person]
    for e in base_events:
        base[e["unit_code"]][0 if e["channel"] == 2 else 1] += 1
    procedures, online_procs = int(parent["authorityCount"]), int(parent["partialCount"]) + int(parent["fullCount"])
    on = [f"ON{i:03d}" for i in range(online_procs)]
    off = [f"OFF{i:03d}" for i in range(procedures - online_procs)]
    data = OnlineData()
    ordered = on + off
    rotation = 0
    used_w = total_w = 0
    for row in rows:
        if row is parent:
            continue
        unit, score = row["departmentCode"], round(float(row["totalScore"]) * 100)
        if score == 0:
            # No online dossier, no catalogue: 3.1 and 3.2 no_data, 3.3 0/n, group 0.
            assert base[unit][0] == 0, unit
            continue
        assert score >= 600, (unit, score)
        split = online_split(score - 600)
        data.splits[unit] = split
        chosen = [on[(rotation + j) % len(on)] for j in range(split.k)]
        rotation += split.k
        others = [code for code in ordered if code not in chosen][: split.n - split.k]
        weights = ([split.a] if split.a else []) + [1] * (split.k - (1 if split.a else 0))
        if split.k - (1 if split.a else 0):
            weights[-1] += split.b - (split.k - (1 if split.a else 0))
        assert sum(weights) == split.a + split.b and min(weights) >= 1, (unit, split, weights)
        for code, weight in zip(chosen, weights):
            data.catalogue.append({"unit_code": unit, "procedure_code": code, "online_level": "full",
                                   "online_services": weight, "valid_from": ONLINE_CATALOGUE_FROM})
        for code in others:
            data.catalogue.append({"unit_code": unit, "procedure_code": code, "online_level": "none",
                                   "valid_from": ONLINE_CATALOGUE_FROM})
        used_w += split.a
        total_w += split.a + split.b
        # 3.3 = 6 needs ≥ 1 online dossier and at least half online: the base dossiers are all online
        # here. A used service (a > 0) needs one online dossier in its procedure.
        assert base[unit][1] == 0, unit
        if split.a or not base[unit][0]:
            data.events.append(_dossier(f"ONL-{unit}", unit, chosen[0] if split.a else "OUTSIDE",
                                        AUGUST + dt.timedelta(days=len(data.events) % 28), 2, True))
            base[unit][0] += 1

    # The parent's own rows make up its counts: all 56 procedures (31 partial, 21 full, 4 offline); its
    # first online procedure is used (weight: 406 minus the children's used weights) and the other 51
    # share the rest of the 1,968 service weights; its own dossiers make up 150,956 online of 152,595
    # received (1,639 in person, none by post).
    code = parent["departmentCode"]
    used_h = int(parent["onlineDossierCount"]) - used_w
    rest_h = int(parent["onlineServiceTotal"]) - total_w - used_h
    assert used_h >= 1 and rest_h >= len(on) - 1, (used_h, rest_h)
    weights = [used_h] + [1] * (len(on) - 1)
    weights[-1] += rest_h - (len(on) - 1)
    partial = int(parent["partialCount"])
    for i, proc in enumerate(on):
        data.catalogue.append({"unit_code": code, "procedure_code": proc,
                               "online_level": "partial" if i < partial else "full",
                               "online_services": weights[i], "valid_from": ONLINE_CATALOGUE_FROM})
    for proc in off:
        data.catalogue.append({"unit_code": code, "procedure_code": proc, "online_level": "none",
                               "valid_from": ONLINE_CATALOGUE_FROM})
    assert int(parent["channelPostalSum"]) == 0
    online_h = int(parent["channelOnlineSum"]) - sum(v[0] for v in base.values())
    direct_h = int(parent["channelDirectSum"]) - sum(v[1] for v in base.values())
    assert online_h >= 1 and direct_h >= 0, (online_h, direct_h)
    for i in range(online_h + direct_h):
        received_at = AUGUST + dt.timedelta(days=i % 28, minutes=i % 480)
        is_online = i < online_h
        data.events.append(_dossier(f"ONL-{code}-{i:06d}", code, on[0] if is_online else off[0], received_at,
                                    2 if is_online else 1, True))
    return data


def _dossier(dossier: str, unit: str, procedure: str, received_at: dt.datetime, channel: int,
             on_time: bool) -> dict:
    due = received_at + (dt.timedelta(days=40) if on_time else dt.timedelta(days=1))
    return {"event_id": dossier, "dossier_code": dossier, "unit_code": unit, "procedure_code": procedure,
            "status": 2, "occurred_at": received_at.isoformat(), "due_at": due.isoformat(), "channel": channel}


async def ingest_reference(runtime, events: list[dict], *, batch: int = 2000) -> None:
    """Push generated events through ingest's intake (as source "reference") and apply them all."""
    from services.events.checks import Item
    from services.ingest.intake import intake
    from tests.conftest import drain

    for start in range(0, len(events), batch):
        part = events[start:start + batch]
        items = [Item(i, e, "") for i, e in enumerate(part)]
        result = await intake(runtime, items, source="reference", transport="test", allowed_units=None, enqueue=True)
        assert result.accepted == len(part)
    await drain(runtime)


async def august_scores(client) -> dict[str, dict]:
    """Every reference unit's August 2026 scores, as GET /v1/scores serves them."""
    from tests.conftest import READER_KEY, auth

    out = {}
    for row in read("payment"):
        code = row["departmentCode"]
        r = await client.get(f"/v1/scores/{code}", params={"period": "2026-08"}, headers=auth(READER_KEY))
        assert r.status_code == 200, r.text
        out[code] = r.json()
    return out
