"""The JSON log formatter and request ids on log lines."""

import logging

import orjson

from shared.logs import REQUEST_ID, JsonFormatter, RequestIdFilter


def _record(**extra) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "dvc766.test", "levelname": "INFO", "msg": "partitions assigned"})
    record.__dict__.update(extra)
    return record


def test_extras_with_non_string_keys_are_kept():
    line = JsonFormatter().format(_record(partitions={0: 12, 3: 40}, member="w-1"))
    payload = orjson.loads(line)
    assert payload["msg"] == "partitions assigned" and payload["member"] == "w-1"
    assert payload["partitions"] == {"0": 12, "3": 40}


def test_objects_without_a_json_form_are_written_as_text():
    payload = orjson.loads(JsonFormatter().format(_record(where=object, partitions={(1, 2): "x"})))
    assert payload["where"] == "<class 'object'>" and len(payload["partitions"]) == 1


def test_a_line_logged_while_serving_a_request_carries_its_id():
    record = _record()
    token = REQUEST_ID.set("req-42")
    try:
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    assert orjson.loads(JsonFormatter().format(record))["request_id"] == "req-42"
    outside = _record()
    RequestIdFilter().filter(outside)
    assert "request_id" not in orjson.loads(JsonFormatter().format(outside))
