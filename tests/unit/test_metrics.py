"""The bounded source label of the ingest counters."""

from shared import metrics


def test_sources_keep_their_names_up_to_the_bound_then_count_as_other(monkeypatch):
    monkeypatch.setattr(metrics, "_sources", set())
    monkeypatch.setattr(metrics, "MAX_SOURCES", 3)
    assert [metrics.source_label(s) for s in ("igate-h44", "vnpt-h45", "igate-h44")] == ["igate-h44", "vnpt-h45",
                                                                                         "igate-h44"]
    assert metrics.source_label("x" * 65) == "other"  # too long to be a configured source's name
    assert metrics.source_label("misa-h46") == "misa-h46"
    assert metrics.source_label("fourth") == "other" and metrics.source_label("vnpt-h45") == "vnpt-h45"
