"""The province a simulation imitates: per-unit figures taken from the national portal's reference data.

``load_reference(dir)`` reads the six portal CSVs (``/work/shared/spec/reference``, month 8/2026 of
UBND tỉnh Phú Thọ) and keeps, per unit, only what the generator needs. The same figures are shipped
with the package (``profile_h44_2026_08.csv``) so ``dvc766 simulate`` runs anywhere; a test checks that
the shipped file still equals what the reference gives.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SHIPPED_PROFILE = Path(__file__).with_name("profile_h44_2026_08.csv")

# The portal's level names -> ours (indicators.md §5): a provincial agency is a DEPARTMENT.
_LEVELS = {"PARENT": "PROVINCE", "PROVINCE": "DEPARTMENT", "COMMUNE": "COMMUNE"}


@dataclass(frozen=True)
class UnitProfile:
    """One unit's month, as the portal published it (counts of dossiers unless said otherwise)."""

    code: str
    name: str
    level: str  # PROVINCE / DEPARTMENT / COMMUNE
    parent: str
    received: int  # 2.1 denominator (progress.totalReceived)
    on_time: int  # 2.1 numerator
    avg_processing_days: float  # 2.2, days from receipt to end of the dossiers finished
    fee_dossiers: int  # 3.6 denominator: dossiers with a financial obligation
    paid_online: int  # 3.6 numerator
    fee_procedures: int  # fee-bearing procedures of the unit (payment.totalFeeFormality)
    fee_data_procedures: int  # of those, procedures whose dossiers carry fee data (totalFeeDossierFormality)
    individual_procedures: int  # procedures for individuals (CITIZEN_DATA_CONNECTED_FORMALITY denominator)
    e_result: int  # 4.1 numerator (ORIGINAL_RESULT_AVAILABLE)
    digitized: int  # 4.2 numerator (SO_HOA_GIAY_TO_GIAI_QUYET)
    reused: int  # 4.4 numerator (REUSED_DIGITIZED_DATA)
    from_data_store: int  # 4.5 numerator (SYNCED_WITH_DVCQG_PERSONAL_STORAGE)
    population_data: int  # 4.7 numerator (CITIZEN_DATA_CONNECTED_DOSSIER)
    digitized_denominator: int  # the denominator of the 4.x dossier ratios
    synced: int  # 1.4 numerator (DOSSIER_SYNC)
    synced_denominator: int

    def share(self, numerator: int, denominator: int | None = None) -> float:
        """A ratio of this unit's published counts, in [0, 1] (0 when there is no denominator)."""
        den = self.digitized_denominator if denominator is None else denominator
        return min(1.0, numerator / den) if den > 0 else 0.0


@dataclass(frozen=True)
class ProvinceProfile:
    code: str
    name: str
    month: str
    units: tuple[UnitProfile, ...]
    # Channel mix (the portal publishes it for the province only: online file, parent row).
    channel_in_person: int
    channel_online: int
    channel_postal: int

    @property
    def received(self) -> int:
        return sum(u.received for u in self.units)

    def unit(self, code: str) -> UnitProfile:
        return next(u for u in self.units if u.code == code)


_FIELDS = [f.name for f in dataclasses.fields(UnitProfile)]


def _int(value: str | None) -> int:
    return int(value) if value not in (None, "") else 0


def _float(value: str | None) -> float:
    return float(value) if value not in (None, "") else 0.0


def load_reference(directory: Path, month: str = "2026-08") -> ProvinceProfile:
    """Build the profile from the portal's reference CSVs (``portal-<month>-*.csv``)."""

    def rows(name: str) -> list[dict]:
        with open(directory / f"portal-{month}-{name}.csv", encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))

    progress = rows("progress")
    payment = {r["departmentCode"]: r for r in rows("payment")}
    online = rows("online")
    id_to_code = {r["departmentId"]: r["departmentCode"] for r in progress}
    metrics: dict[tuple[str, str], tuple[int, int]] = {}
    for r in rows("digitized"):
        metrics[(r["departmentCode"], r["metrics.code"])] = (_int(r["metrics.numerator"]), _int(r["metrics.denominator"]))
    for r in rows("transparency"):
        code = id_to_code[r["departmentId"]]
        metrics[(code, r["metrics.code"])] = (_int(r["metrics.numerator"]), _int(r["metrics.denominator"]))

    parent_row = next(r for r in progress if r["level"] == "PARENT")
    province = parent_row["departmentCode"]
    units = []
    for r in progress:
        code = r["departmentCode"]
        pay = payment[code]
        is_parent = r["level"] == "PARENT"

        def num(metric: str) -> int:
            return 0 if is_parent else metrics.get((code, metric), (0, 0))[0]

        def den(metric: str) -> int:
            return 0 if is_parent else metrics.get((code, metric), (0, 0))[1]

        units.append(
            UnitProfile(
                code=code,
                name=r["departmentName"],
                level=_LEVELS[r["level"]],
                parent="" if is_parent else province,
                # The parent row is the sum of its children: the province itself receives nothing.
                received=0 if is_parent else _int(r["totalReceived"]),
                on_time=0 if is_parent else _int(r["totalOnTime"]),
                avg_processing_days=0.0 if is_parent else _float(r["avgProcessingDays"]),
                fee_dossiers=0 if is_parent else _int(pay["totalDossierFinancialObligation"]),
                paid_online=0 if is_parent else _int(pay["totalDossierOnlinePaymentSuccess"]),
                fee_procedures=_int(pay["totalFeeFormality"]),
                fee_data_procedures=_int(pay["totalFeeDossierFormality"]),
                individual_procedures=metrics.get((code, "CITIZEN_DATA_CONNECTED_FORMALITY"), (0, 0))[1],
                e_result=num("ORIGINAL_RESULT_AVAILABLE"),
                digitized=num("SO_HOA_GIAY_TO_GIAI_QUYET"),
                reused=num("REUSED_DIGITIZED_DATA"),
                from_data_store=num("SYNCED_WITH_DVCQG_PERSONAL_STORAGE"),
                population_data=num("CITIZEN_DATA_CONNECTED_DOSSIER"),
                digitized_denominator=den("ORIGINAL_RESULT_AVAILABLE"),
                synced=num("DOSSIER_SYNC"),
                synced_denominator=den("DOSSIER_SYNC"),
            )
        )
    top = next(r for r in online if r["level"] == "PARENT")
    return ProvinceProfile(
        code=province,
        name=parent_row["departmentName"],
        month=month,
        units=tuple(units),
        channel_in_person=_int(top["channelDirectSum"]),
        channel_online=_int(top["channelOnlineSum"]),
        channel_postal=_int(top["channelPostalSum"]),
    )


def dump_profile(profile: ProvinceProfile) -> str:
    """The profile as CSV text: a ``#`` header line with the province facts, then one row per unit."""
    out = io.StringIO()
    out.write(
        f"# province={profile.code};name={profile.name};month={profile.month};"
        f"channel_in_person={profile.channel_in_person};channel_online={profile.channel_online};"
        f"channel_postal={profile.channel_postal}\n"
    )
    writer = csv.DictWriter(out, fieldnames=_FIELDS, lineterminator="\n")
    writer.writeheader()
    for unit in profile.units:
        writer.writerow(dataclasses.asdict(unit))
    return out.getvalue()


def parse_profile(text: str) -> ProvinceProfile:
    head, _, body = text.partition("\n")
    facts = dict(item.split("=", 1) for item in head.lstrip("# ").split(";"))
    units = []
    types = {f.name: f.type for f in dataclasses.fields(UnitProfile)}
    for row in csv.DictReader(io.StringIO(body)):
        values = {}
        for name, raw in row.items():
            kind = types[name]
            values[name] = int(raw) if kind == "int" else float(raw) if kind == "float" else raw
        units.append(UnitProfile(**values))
    return ProvinceProfile(
        code=facts["province"],
        name=facts["name"],
        month=facts["month"],
        units=tuple(units),
        channel_in_person=int(facts["channel_in_person"]),
        channel_online=int(facts["channel_online"]),
        channel_postal=int(facts["channel_postal"]),
    )


def load_profile(path: Path | None = None) -> ProvinceProfile:
    """The shipped Phú Thọ profile, a profile file, or a directory of portal reference CSVs."""
    if path is None:
        path = SHIPPED_PROFILE
    if path.is_dir():
        return load_reference(path)
    return parse_profile(path.read_text(encoding="utf-8"))


def units_csv(units: Iterable[UnitProfile]) -> str:
    """The unit tree in the format ``DVC766_UNITS_FILE`` reads (code, name, level, parent)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["code", "name", "level", "parent"])
    for unit in units:
        writer.writerow([unit.code, unit.name, unit.level, unit.parent])
    return out.getvalue()
