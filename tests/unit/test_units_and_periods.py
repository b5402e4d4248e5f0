import datetime as dt

import pytest

from shared.timeutil import VIETNAM, BadPeriod, parse_period, periods_of
from shared.units import UnitTree, load_units_file, load_units_text
from tests.conftest import REFERENCE_DIR, UNITS_FILE


def test_example_unit_tree_is_the_reference_province():
    tree = UnitTree(load_units_file(UNITS_FILE))
    assert len(tree) == 164
    assert tree.get("H44").level == "PROVINCE"
    assert tree.get("H44.03").level == "DEPARTMENT" and tree.get("H44.03").parent == "H44"
    assert len(tree.descendants("H44", "COMMUNE")) == 148
    assert len(tree.descendants("H44", "DEPARTMENT")) == 15


def test_portal_csv_loads_as_it_is():
    # The portal marks the province PARENT and its agencies PROVINCE: ours are PROVINCE and DEPARTMENT.
    tree = UnitTree(load_units_file(REFERENCE_DIR / "portal-2026-08-progress.csv"))
    assert tree.get("H44").level == "PROVINCE"
    assert tree.get("H44.07").level == "DEPARTMENT" and tree.get("H44.07").parent == "H44"


def test_json_units_and_scope_checks():
    tree = UnitTree(load_units_text(
        '[{"code":"H44","name":"Tỉnh","level":"PROVINCE"},'
        '{"code":"H44.100","name":"Phường Việt Trì","level":"COMMUNE","parent":"H44"},'
        '{"code":"H45","name":"Tỉnh khác","level":"PROVINCE"}]'
    ))
    assert tree.subtree("H44") == ("H44", "H44.100")
    assert tree.is_within("H44.100", ["H44"]) and not tree.is_within("H45", ["H44"])


def test_bad_levels_are_refused():
    with pytest.raises(ValueError):
        load_units_text("code,name,level,parent\nX,Y,GALAXY,\n")


def test_periods_in_vietnam_time():
    august = parse_period("2026-08")
    assert august.start == dt.datetime(2026, 8, 1, tzinfo=VIETNAM)
    assert august.end == dt.datetime(2026, 9, 1, tzinfo=VIETNAM)
    assert parse_period("2026-Q3").months() == ["2026-07", "2026-08", "2026-09"]
    assert len(parse_period("2026").months()) == 12
    assert parse_period("2026-Q4").end == dt.datetime(2027, 1, 1, tzinfo=VIETNAM)
    assert periods_of(dt.datetime(2026, 9, 30, 17, 30, tzinfo=dt.timezone.utc)) == ("2026-10", "2026-Q4", "2026")
    for bad in ("2026-13", "2026-Q5", "26-08", "2026-8", ""):
        with pytest.raises(BadPeriod):
            parse_period(bad)
