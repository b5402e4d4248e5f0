"""Times outside the window the rules compute with are refused at intake, on every path, with a reason."""

import datetime as dt

import pytest

from services.ingest.portal_mapping import map_payload, read_envelope
from shared.events import EARLIEST_TIME, LATEST_TIME, DossierEvent, Reason, Rejection, validate_event
from tests.support.events import event, vn
from shared.units import Unit, UnitTree
from tests.support.portal import Story, Supplement, snapshot_call

OUT_OF_WINDOW = [
    "0001-01-01T00:00:00+14:00",  # a UTC conversion would overflow
    "9999-12-31T23:59:59-12:00",
    "9999-12-31T23:59:59Z",
    "1999-12-31T23:59:59Z",
    "2100-01-01T00:00:00Z",
    "2100-01-01T07:00:00+07:00",
]


@pytest.mark.parametrize("value", OUT_OF_WINDOW)
@pytest.mark.parametrize("where", ["occurred_at", "due_at", "step.due_at", "step.started_at"])
def test_an_event_time_outside_the_window_is_refused_with_its_field(value, where):
    body = event("D1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10), step={"name": "Thụ lý"})
    if where.startswith("step."):
        body["step"][where[5:]] = value
    else:
        body[where] = value
    checked = validate_event(body, "src")
    assert isinstance(checked, Rejection)
    assert (checked.reason, checked.field) == (Reason.OUT_OF_RANGE_TIME, where)
    assert value in checked.detail


@pytest.mark.parametrize("value", ["2000-01-01T00:00:00Z", "2000-01-01T07:00:00+07:00", "2099-12-31T23:59:59Z",
                                   "2100-01-01T06:59:59+07:00", "2012-03-01T08:00:00+07:00",
                                   "2045-03-01T08:00:00+07:00"])
def test_times_inside_the_window_are_accepted(value):
    checked = validate_event(event("D1", 2, vn(2026, 8, 3), occurred_at=value), "src")
    assert isinstance(checked, DossierEvent)
    assert EARLIEST_TIME <= checked.occurred_at < LATEST_TIME


def _story(code: str, **changes) -> dict:
    snapshot = Story(code, "1.001", vn(2026, 8, 3), vn(2026, 8, 10),
                     supplements=[Supplement(vn(2026, 8, 4), vn(2026, 8, 5), vn(2026, 8, 10), vn(2026, 8, 12))]
                     ).snapshot_at(vn(2026, 8, 31))
    for name, value in changes.items():
        if name == "NgayBoSung":
            snapshot["DanhSachHoSoBoSung"][0][name] = value
        else:
            snapshot[name] = value
    return snapshot


@pytest.mark.parametrize("value", ["99991231235959", "00010101000000", "19991231235959"])
def test_a_portal_receipt_time_outside_the_window_refuses_its_record_only(value):
    call = snapshot_call("H44.03", [_story("HS-BAD", NgayTiepNhan=value), _story("HS-GOOD")])
    mapped = map_payload(read_envelope(call), UnitTree([Unit("H44.03", "Ban quản lý", "DEPARTMENT")]))
    bad, good = mapped.items
    assert bad.rejection is not None and bad.events == ()
    assert (bad.rejection.reason, bad.rejection.field) == (Reason.OUT_OF_RANGE_TIME, "NgayTiepNhan")
    assert good.rejection is None and good.events
    assert all(isinstance(validate_event(e, "src"), DossierEvent) for e in good.events)


@pytest.mark.parametrize("name, flag", [("NgayHenTra", "due_time_unreadable"),
                                        ("NgayBoSung", "supplement_time_unreadable")])
@pytest.mark.parametrize("value", ["99991231235959", "00010101000000", "19991231235959"])
def test_an_optional_portal_time_outside_the_window_is_dropped_and_flagged(name, flag, value):
    call = snapshot_call("H44.03", [_story("HS-ODD", **{name: value})])
    [odd] = map_payload(read_envelope(call), UnitTree([Unit("H44.03", "Ban quản lý", "DEPARTMENT")])).items
    assert odd.rejection is None
    assert all(isinstance(validate_event(e, "src"), DossierEvent) for e in odd.events)
    assert odd.events[-1]["attributes"][flag] is True


def test_the_window_is_named_in_the_detail():
    checked = validate_event(event("D1", 2, dt.datetime(1990, 1, 1, tzinfo=dt.timezone.utc)), "src")
    assert "2000-01-01T00:00:00Z" in checked.detail and "2100-01-01T00:00:00Z" in checked.detail
