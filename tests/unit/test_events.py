import pytest

from shared.events import Reason, Rejection, validate_event

GOOD = {
    "event_id": "e-1",
    "dossier_code": "H44.03-260801-0001",
    "unit_code": "H44.03",
    "procedure_code": "1.001234",
    "status": 2,
    "occurred_at": "2026-08-03T08:00:00+07:00",
    "channel": 2,
    "due_at": "2026-08-10T17:00:00+07:00",
    "step": {"name": "Thẩm định", "handler": "cb01", "due_at": "2026-08-05T17:00:00+07:00"},
    "attributes": {"digitized": True, "applicant_type": 1},
}


def test_a_good_event_validates_and_normalises_times_to_utc():
    event = validate_event(GOOD, "igate")
    assert not isinstance(event, Rejection)
    assert event.source == "igate"
    assert event.body()["occurred_at"] == "2026-08-03T01:00:00Z"
    assert event.step is not None and event.step.name == "Thẩm định"


def test_same_content_hashes_equal_and_changed_content_does_not():
    a = validate_event(GOOD, "s")
    b = validate_event({**GOOD, "occurred_at": "2026-08-03T01:00:00Z"}, "s")  # same instant
    c = validate_event({**GOOD, "status": 4}, "s")
    assert a.body_hash() == b.body_hash() != c.body_hash()


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        ({"event_id": None}, Reason.MISSING_FIELD, "event_id"),
        ({"dossier_code": ""}, Reason.MISSING_FIELD, "dossier_code"),
        ({"unit_code": 7}, Reason.BAD_FIELD, "unit_code"),
        ({"event_id": "x" * 129}, Reason.BAD_FIELD, "event_id"),
        ({"status": None}, Reason.MISSING_FIELD, "status"),
        ({"status": 11}, Reason.BAD_STATUS, "status"),
        ({"status": "nine"}, Reason.BAD_STATUS, "status"),
        ({"status": True}, Reason.BAD_STATUS, "status"),
        ({"occurred_at": "2026-08-03T08:00:00"}, Reason.NAIVE_TIMESTAMP, "occurred_at"),
        ({"occurred_at": "3/8/2026"}, Reason.BAD_TIMESTAMP, "occurred_at"),
        ({"due_at": "2026-08-10 17:00"}, Reason.NAIVE_TIMESTAMP, "due_at"),
        ({"occurred_at": "2026-08-03T08:00+07:00"}, Reason.BAD_TIMESTAMP, "occurred_at"),  # RFC 3339 has seconds
        ({"occurred_at": 1785718800}, Reason.BAD_TIMESTAMP, "occurred_at"),
        ({"due_at": "20260810T170000+0700"}, Reason.BAD_TIMESTAMP, "due_at"),
        ({"channel": 4}, Reason.BAD_CHANNEL, "channel"),
        ({"step": "review"}, Reason.BAD_FIELD, "step"),
        ({"step": {"due_at": "2026-08-05"}}, Reason.NAIVE_TIMESTAMP, "step.due_at"),
        ({"attributes": {"digitized": "yes"}}, Reason.BAD_FIELD, "attributes.digitized"),
        ({"attributes": []}, Reason.BAD_FIELD, "attributes"),
    ],
)
def test_each_bad_field_has_its_reason(change, reason, field):
    result = validate_event({**GOOD, **change}, "s")
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == (reason, field)


def test_not_an_object():
    result = validate_event(["a"], "s")
    assert isinstance(result, Rejection) and result.reason == Reason.NOT_AN_OBJECT


def test_status_given_as_digits_is_accepted():
    event = validate_event({**GOOD, "status": "9"}, "s")
    assert not isinstance(event, Rejection) and event.status == 9


def test_an_empty_optional_time_is_absent_and_lower_case_t_and_z_are_rfc_3339():
    event = validate_event({**GOOD, "due_at": "", "occurred_at": "2026-08-03t01:00:00z",
                            "step": {"name": "Thẩm định", "due_at": "", "started_at": None}}, "s")
    assert not isinstance(event, Rejection)
    assert event.due_at is None and event.step.due_at is None
    assert event.body()["occurred_at"] == "2026-08-03T01:00:00Z"


def test_the_source_is_the_edge_s_not_the_body_s():
    event = validate_event({**GOOD, "source": "someone-else"}, "igate")
    assert event.source == "igate" and "source" not in event.body()


@pytest.mark.parametrize(("faults", "expected"), [
    ({"event_id": None, "status": 99}, ("missing_field", "event_id")),  # a missing field before a bad one
    ({"occurred_at": None, "status": 99}, ("missing_field", "occurred_at")),
    ({"status": 99, "channel": 7}, ("bad_status", "status")),  # then the contract's order of fields
    ({"channel": 7, "due_at": "soon"}, ("bad_channel", "channel")),
    ({"due_at": "soon", "step": "x"}, ("bad_timestamp", "due_at")),
])
def test_the_first_fault_is_the_same_whatever_the_order_of_the_keys(faults, expected):
    broken = {k: v for k, v in {**GOOD, **faults}.items() if v is not None}
    for keys in (list(broken), list(reversed(broken))):
        rejection = validate_event({k: broken[k] for k in keys}, "s")
        assert (rejection.reason, rejection.field) == expected, keys
