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
