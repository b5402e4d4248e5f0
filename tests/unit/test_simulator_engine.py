"""The engine's batched counter delta equals the per-dossier one, on a simulated province.

``batch_delta`` sums contributions that differ only by their counts before expanding them (the apply
hot path); this checks it against ``accumulate_delta`` dossier by dossier, with retractions of older
states and open dossiers, on realistic data. No database.
"""

from __future__ import annotations

import collections
import datetime as dt

from services.indicators.engine import IndicatorEngine, batch_delta, history_event
from services.indicators.rules.counters import accumulate_delta, nonzero
from services.simulator.generator import SimulationOptions, simulate
from services.simulator.profile import load_profile
from shared.calendar import WorkingCalendar
from shared.events import validate_event
from shared.settings import PolicySettings
from shared.timeutil import VIETNAM


def test_batch_delta_equals_per_dossier_delta():
    calendar = WorkingCalendar()
    engine = IndicatorEngine(calendar, PolicySettings())
    histories = collections.defaultdict(list)
    for seq, body in enumerate(simulate(load_profile(), SimulationOptions(scale=0.01), calendar)):
        event = validate_event(body, "sim")
        histories[event.dossier_code].append(history_event(seq, event.body()))
    # Mid-month: many dossiers are open, some past their deadline (open_undetermined contributions).
    now = dt.datetime(2026, 8, 20, 10, tzinfo=VIETNAM)
    changes = []
    for code, history in histories.items():
        history = [e for e in history if e.occurred_at <= now]  # the state known on the 20th
        if not history:
            continue
        ordered = sorted(history, key=lambda e: e.occurred_at)
        before = ordered[: len(ordered) // 2]
        old = engine.evaluate(code, before, now, {})[2] if before else None
        new = engine.evaluate(code, history, now, {})[2]
        changes.append((old, new))
    assert sum(1 for _, new in changes if new is not None and new.open_undetermined) > 100
    assert sum(1 for old, new in changes if old is not None and old != new) > 100

    expected = collections.defaultdict(int)
    for old, new in changes:
        accumulate_delta(expected, old, new)
    assert nonzero(batch_delta(changes)) == nonzero(expected)
    assert len(nonzero(expected)) > 1000
