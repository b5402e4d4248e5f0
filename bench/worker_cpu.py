"""The Python floor of a Kafka worker: the CPU one worker spends per event with no I/O at all.

    .venv/bin/python bench/worker_cpu.py --events 100000

Runs the production functions of the Kafka apply path on simulated events in 5,000-event batches,
in this process, with no broker and no database: decode each message (``decode_message``), validate
it and encode its stored body (``check_items``), hash it (``store_events``'s Python side), then per
dossier of the batch decode its contribution and every stored body of its history (held here in a dict,
as JSON, as ``dossiers.contribution`` and the events' bodies come from PostgreSQL: ``decode_event``)
into the rules' view (``history_event``), derive its facts and contribution (``IndicatorEngine.evaluate``), move the
counters and build its dossier row, and finally the batch's counter rows. Every dossier row and
counter row a real batch writes is built; only the SQL is left out.

Prints CPU µs per event of each stage (``time.process_time``, best of ``--repeat``) and the events/s
one worker could not exceed even if PostgreSQL, the broker and the event loop cost nothing. Writes
bench/results/worker_cpu.json.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import namedtuple

import orjson
from common import ROOT, UNITS_FILE, base_parser, report, simulated_events  # noqa: F401  (ROOT: sys.path)

from services.indicators.engine import DOSSIER_COLUMNS, IndicatorEngine, history_event
from services.indicators.kafka import decode_message
from services.indicators.rules.counters import Contribution, CounterDelta
from services.events.checks import check_items
from shared.calendar import WorkingCalendar
from shared.events import DossierEvent
from shared.process import tune_garbage_collector
from shared.settings import Settings
from shared.units import UnitTree, load_units_file

Record = namedtuple("Record", "topic partition offset key value headers")
CONTRIBUTION = DOSSIER_COLUMNS.index("contribution")
try:
    from shared.events import decode_event

    def stored_history_event(seq: int, body: bytes):
        return history_event(seq, decode_event(body))
except ImportError:  # an event model without decode_event (A/B runs): the jsonb codec's orjson, as before
    def stored_history_event(seq: int, body: bytes):
        return history_event(seq, orjson.loads(body))

STAGES = ("decode", "validate", "body_encode_hash", "stored_bodies", "state_decode", "evaluate",
          "counter_move_and_dossier_row", "counter_rows")


class _Runtime:
    """What ``check_items`` reads of a runtime: the settings and the unit tree."""

    def __init__(self, settings: Settings, units: UnitTree) -> None:
        self.settings = settings
        self.units = units


def run(lines: list[bytes], batch_size: int, engine: IndicatorEngine, runtime: _Runtime) -> dict[str, float]:
    settings = runtime.settings
    spent = dict.fromkeys(STAGES, 0.0)
    # dossier -> (stored bodies, contribution), as JSON as the columns hold them: a dict of live objects
    # would make every garbage collection walk them, which the real worker (state in PostgreSQL) never does
    kept: dict[str, tuple[list[tuple[int, bytes]], str | None]] = {}
    now = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    seq = 0
    clock = time.process_time
    for start in range(0, len(lines), batch_size):
        records = [Record("dossier-events", 0, start + i, None, line, ())
                   for i, line in enumerate(lines[start:start + batch_size])]
        t0 = clock()
        decoded = [decode_message(r, default_source="bench", max_bytes=settings.max_event_bytes) for r in records]
        t1 = clock()
        checks = check_items([d.item for d in decoded], source="bench", runtime=runtime, allowed_units=None)
        good = [c for c in checks if isinstance(c, DossierEvent)]
        t2 = clock()
        for event in good:
            event.body_hash()
        t3 = clock()
        arrived: dict = {}
        for event in good:
            seq += 1
            arrived.setdefault(event.dossier_code, []).append((seq, event.encoded_body()))
        t4 = clock()
        histories = {}
        old = {}
        bodies = {}
        for code, events in arrived.items():
            stored, contribution_json = kept.get(code, ([], None))
            old[code] = Contribution.from_json(orjson.loads(contribution_json)) if contribution_json else None
            bodies[code] = stored + events
            histories[code] = [stored_history_event(s, body) for s, body in bodies[code]]
        t5 = clock()
        evaluated = {code: engine.evaluate(code, history, now, {}) for code, history in histories.items()}
        t6 = clock()
        delta = CounterDelta()
        for code, (facts, timeliness, contribution) in evaluated.items():
            delta.move(old[code], contribution)
            row = engine._dossier_row(facts, timeliness, contribution)
            kept[code] = (bodies[code], row[CONTRIBUTION])
        t7 = clock()
        delta.rows()
        t8 = clock()
        for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6, t8 - t7)):
            spent[stage] += seconds
    return spent


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3, help="runs; each stage's best is reported")
    args = parser.parse_args()
    settings = Settings()
    lines = simulated_events(1.0, limit=args.events)
    runtime = _Runtime(settings, UnitTree(load_units_file(UNITS_FILE)))
    engine = IndicatorEngine(WorkingCalendar.from_settings(settings.calendar), settings.policy)
    tune_garbage_collector(settings.gc_young_threshold)  # as the services do once started
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        spent = run(lines, args.batch, engine, runtime)
        for stage, seconds in spent.items():
            best[stage] = min(best.get(stage, seconds), seconds)
    per_event = {stage: round(seconds / len(lines) * 1e6, 2) for stage, seconds in best.items()}
    total = sum(best.values()) / len(lines) * 1e6
    loop = time.process_time()
    s = 0
    for i in range(20_000_000):  # the machine's speed at plain Python, for comparing runs across machines
        s += i
    loop = time.process_time() - loop
    row = {"label": args.label, "events": len(lines), "batch": args.batch, **per_event,
           "total_us_per_event": round(total, 2), "max_events_per_s": round(1e6 / total),
           "python_loop_20m_in_function_s": round(loop, 2)}
    report(f"worker_cpu{'-' + args.label if args.label else ''}", [row],
           title="Kafka worker's Python with no I/O: CPU µs per event by stage (best of runs)")


if __name__ == "__main__":
    main()
