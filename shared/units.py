"""The unit tree (indicators.md §5): codes, levels, parents. Pure: loading parses text, nothing else."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

LEVELS = ("MINISTRY", "PROVINCE", "DEPARTMENT", "DISTRICT", "COMMUNE")


@dataclass(frozen=True)
class Unit:
    code: str
    name: str
    level: str
    parent: str | None = None
    e_certified_copy: bool | None = None
    identifier: str | None = None  # the portal's electronic identifier (mã định danh), e.g. 000.00.07.H44

    def as_dict(self) -> dict:
        return {"code": self.code, "name": self.name, "level": self.level, "parent": self.parent,
                "identifier": self.identifier}


class UnitTree:
    def __init__(self, units: Iterable[Unit] = ()) -> None:
        self.units: dict[str, Unit] = {u.code: u for u in units}
        self.children: dict[str, list[str]] = {}
        for unit in self.units.values():
            if unit.parent:
                self.children.setdefault(unit.parent, []).append(unit.code)
        for kids in self.children.values():
            kids.sort()
        self._subtrees: dict[str, tuple[str, ...]] = {}
        self.by_identifier: dict[str, str] = {u.identifier: u.code for u in self.units.values() if u.identifier}
        self._by_name: dict[str, list[str]] = {}
        for unit in self.units.values():
            self._by_name.setdefault(_name_key(unit.name), []).append(unit.code)

    def __contains__(self, code: str) -> bool:
        return code in self.units

    def __len__(self) -> int:
        return len(self.units)

    def get(self, code: str) -> Unit | None:
        return self.units.get(code)

    def resolve(self, code_or_identifier: str | None) -> str | None:
        """Our code for a unit named by our code or by its electronic identifier (mã định danh)."""
        if not code_or_identifier:
            return None
        if code_or_identifier in self.units:
            return code_or_identifier
        return self.by_identifier.get(code_or_identifier)

    def receiver_named_by(self, dossier_code: str) -> str | None:
        """The unit a dossier code names as its receiver: the portal's codes begin with the receiving
        unit's identifier (``000.00.07.H44-260803-0001``); None when the prefix names no known unit."""
        prefix, dash, _ = dossier_code.partition("-")
        return self.resolve(prefix) if dash else None

    def named_within(self, name: str, ancestors: Iterable[str]) -> str | None:
        """The one unit under ``ancestors`` whose name is ``name`` (case and spacing ignored), if exactly one."""
        found = [c for c in self._by_name.get(_name_key(name), ()) if self.is_within(c, ancestors)]
        return found[0] if len(found) == 1 else None

    def subtree(self, code: str) -> tuple[str, ...]:
        """The unit and all its descendants."""
        cached = self._subtrees.get(code)
        if cached is None:
            out, stack, seen = [], [code], set()
            while stack:
                current = stack.pop()
                if current in seen:  # a cycle in bad input must not hang us
                    continue
                seen.add(current)
                out.append(current)
                stack.extend(reversed(self.children.get(current, [])))
            cached = self._subtrees[code] = tuple(out)
        return cached

    def descendants(self, code: str, level: str | None = None) -> list[str]:
        codes = [c for c in self.subtree(code) if c != code]
        if level:
            codes = [c for c in codes if self.units.get(c) and self.units[c].level == level]
        return codes

    def is_within(self, code: str, ancestors: Iterable[str]) -> bool:
        """Whether ``code`` is one of ``ancestors`` or below one of them."""
        targets = set(ancestors)
        seen = set()
        current: str | None = code
        while current is not None and current not in seen:
            if current in targets:
                return True
            seen.add(current)
            unit = self.units.get(current)
            current = unit.parent if unit else None
        return False


def _name_key(name: str) -> str:
    return " ".join((name or "").split()).casefold()


def normalise_level(level: str, parent_level: str | None) -> str:
    level = (level or "").strip().upper()
    if level == "PARENT":
        return "PROVINCE"
    # In the portal's data a provincial agency (sở, ban, ngành) carries PROVINCE under the province.
    if level == "PROVINCE" and parent_level == "PROVINCE":
        return "DEPARTMENT"
    if level not in LEVELS:
        raise ValueError(f"unknown unit level {level!r}; expected one of {', '.join(LEVELS)}")
    return level


YES = ("1", "true", "yes", "y")
NO = ("0", "false", "no", "n")


def _truthy(value) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word in YES:
        return True
    if word in NO:
        return False
    raise ValueError(f"e_certified_copy must be true or false (CSV: yes/no, 1/0), not {value!r}")


IDENTIFIER_COLUMNS = ("identifier", "ma_dinh_danh", "maDinhDanh", "MaDinhDanh")
TEXT_COLUMNS = ("code", "departmentCode", "name", "departmentName", "level", "parent", "parent_code")


def _identifier(record: dict) -> str | None:
    for column in IDENTIFIER_COLUMNS:
        value = record.get(column)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{column} must be text, not {value!r}")
        if value:
            return value.strip() or None
    return None


def parse_units(records: Iterable[dict]) -> list[Unit]:
    """Build units from records with code, name, level, parent and optional identifier (mã định danh);
    portal CSV column names are accepted too."""
    raw = []
    for record in records:
        if not isinstance(record, dict):
            raise ValueError(f"each unit must be an object with code, name, level, parent: {record!r}")
        for name in TEXT_COLUMNS:
            if record.get(name) is not None and not isinstance(record[name], str):
                raise ValueError(f"{name} must be text, not {record[name]!r}")
        code = (record.get("code") or record.get("departmentCode") or "").strip()
        if not code:
            raise ValueError(f"unit without a code: {record!r}")
        raw.append(
            {
                "code": code,
                "name": (record.get("name") or record.get("departmentName") or code).strip(),
                "level": (record.get("level") or "").strip().upper(),
                "parent": (record.get("parent") or record.get("parent_code") or "").strip() or None,
                "e_certified_copy": _truthy(record.get("e_certified_copy")),
                "identifier": _identifier(record),
            }
        )
    by_code = {r["code"]: r for r in raw}
    # Portal files mark the province as PARENT and list the others under it without a parent column.
    root = next((r["code"] for r in raw if r["level"] == "PARENT"), None)
    units = []
    for r in raw:
        parent = r["parent"]
        if parent is None and root and r["code"] != root:
            parent = root
        parent_level = by_code[parent]["level"] if parent in by_code else None
        if parent_level == "PARENT":
            parent_level = "PROVINCE"
        units.append(Unit(r["code"], r["name"], normalise_level(r["level"], parent_level), parent, r["e_certified_copy"],
                          r["identifier"]))
    return units


def load_units_text(text: str, *, filename: str = "") -> list[Unit]:
    stripped = text.lstrip("\ufeff").lstrip()
    if filename.endswith(".json") or stripped.startswith(("[", "{")):
        data = json.loads(stripped)
        if isinstance(data, dict):
            data = data.get("units", [])
        if not isinstance(data, list):
            raise ValueError('units as JSON are an array of objects (or {"units": [...]})')
        return parse_units(data)
    return parse_units(csv.DictReader(io.StringIO(stripped)))


def load_units_file(path: Path) -> list[Unit]:
    return load_units_text(Path(path).read_text(encoding="utf-8"), filename=str(path))
