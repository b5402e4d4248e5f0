"""The event model's libraries compared: CPU µs per event to validate a decoded event and encode and hash
its stored body, on the simulator's events, same run, same events.

    .venv/bin/python bench/event_model.py --events 100000 --before-ref f099e52   # the model before msgspec

Models, each run on the same decoded events (``orjson.loads`` of each NDJSON line, as intake gets them):

- ``msgspec``: ``shared.events`` as it is (a msgspec Struct, ``validate_event`` + ``encoded_body`` + hash);
- ``pydantic``: the same definition as a pydantic v2 model (pydantic-core) with the same rules (lengths,
  ranges, aware times in the window, digit strings, attribute types, depth), dumped as JSON with sorted
  keys and hashed;
- ``before``: ``shared/events.py`` of ``--before-ref`` (f099e52: the hand-written validators; skipped if
  it is the same file), loaded from git into this process.

Rounds are interleaved (``--repeat`` rounds of every model); each model's best round is reported with
the accepted count (every model must accept the same events). Writes bench/results/event_model.json.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
from common import ROOT, base_parser, report, simulated_events

import shared.events as model


def _load_before(ref: str):
    """``shared/events.py`` as it is at ``ref``, imported as a module of its own (None: same as now)."""
    text = subprocess.run(["git", "show", f"{ref}:shared/events.py"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    if text == (ROOT / "shared" / "events.py").read_text():
        return None
    path = Path(tempfile.mkdtemp()) / "events_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("events_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["events_before"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _pydantic_model():
    """The canonical event as a pydantic v2 model, with the rules of ``shared.events``."""
    from pydantic import AwareDatetime, BaseModel, Field, StrictBool, StrictStr, field_validator

    def in_window(value: dt.datetime | None) -> dt.datetime | None:
        if value is None:
            return None
        if not model.EARLIEST_TIME <= value < model.LATEST_TIME:
            raise ValueError("out_of_range_time")
        return value.astimezone(dt.timezone.utc)

    def digits(value: Any, high: int) -> Any:
        if isinstance(value, bool):
            raise ValueError("not an integer")
        if isinstance(value, str):
            if not model.is_ascii_digits(value.strip()):
                raise ValueError("not an integer")
            value = int(value.strip())
        if not isinstance(value, int) or not 1 <= value <= high:
            raise ValueError("out of range")
        return value

    class Step(BaseModel):
        due_at: AwareDatetime | None = None
        handler: StrictStr | None = None
        id: Annotated[StrictStr, Field(max_length=model.MAX_STEP_ID)] | None = None
        name: StrictStr | None = None
        open: StrictBool = False
        started_at: AwareDatetime | None = None

        _window = field_validator("due_at", "started_at", mode="after")(lambda v: in_window(v))
        _open = field_validator("open", mode="before")(lambda v: False if v is None else v)

    # Lax mode for the times only (RFC 3339 strings); every other field is strict, as in shared.events.
    Code = Annotated[StrictStr, Field(min_length=1, max_length=model.MAX_CODE)]

    class Event(BaseModel):
        # Fields in alphabetical order: the dump is then the stored form's key order.
        attributes: dict[str, Any] = {}
        channel: Any = None
        dossier_code: Code
        due_at: AwareDatetime | None = None
        event_id: Annotated[StrictStr, Field(min_length=1, max_length=model.MAX_EVENT_ID)]
        occurred_at: AwareDatetime
        procedure_code: Code
        status: Any
        step: Step | None = None
        unit_code: Code

        @field_validator("occurred_at", "due_at", mode="after")
        @classmethod
        def _window(cls, value):
            return in_window(value)

        @field_validator("status", mode="after")
        @classmethod
        def _status(cls, value):
            return digits(value, 10)

        @field_validator("channel", mode="after")
        @classmethod
        def _channel(cls, value):
            return None if value is None else digits(value, 3)

        @field_validator("attributes", mode="after")
        @classmethod
        def _attributes(cls, value):
            out = {}
            for key in sorted(value):
                item = value[key]
                if item is None:
                    continue
                if key in model.BOOLEAN_ATTRIBUTES and type(item) is not bool:
                    raise ValueError(f"attributes.{key}")
                if key in model.INT_ATTRIBUTES and type(item) is not int:
                    raise ValueError(f"attributes.{key}")
                out[key] = item
            return out

    return Event


def run_msgspec(values: list) -> int:
    accepted = 0
    for raw in values:
        event = model.validate_event(raw, "bench")
        if type(event) is model.DossierEvent:
            event.body_hash()
            accepted += 1
    return accepted


def make_run_before(before):
    def run(values: list) -> int:
        accepted = 0
        for raw in values:
            event = before.validate_event(raw, "bench")
            if type(event) is before.DossierEvent:
                event.body_hash()
                accepted += 1
        return accepted
    return run


def make_run_pydantic(Event):
    from pydantic import ValidationError

    validate = Event.model_validate

    def run(values: list) -> int:
        accepted = 0
        for raw in values:
            if type(raw) is not dict or (model._may_nest(raw) and model.nested_deeper_than(raw, model.MAX_DEPTH)):
                continue
            try:
                event = validate(raw)
            except ValidationError:
                continue
            body = event.model_dump_json(exclude_defaults=True).encode()
            hashlib.sha256(body).hexdigest()[:32]
            accepted += 1
        return accepted
    return run


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds; each model's best is reported")
    parser.add_argument("--before-ref", default="main")
    args = parser.parse_args()
    lines = simulated_events(1.0, limit=args.events)
    values = [orjson.loads(line) for line in lines]
    runs = {"msgspec": run_msgspec, "pydantic": make_run_pydantic(_pydantic_model())}
    before = _load_before(args.before_ref)
    if before is not None:
        runs = {"before": make_run_before(before), **runs}
    best: dict[str, float] = {}
    accepted: dict[str, int] = {}
    gc.collect()
    for _ in range(args.repeat):
        for name, run in runs.items():
            started = time.process_time()
            accepted[name] = run(values)
            spent = time.process_time() - started
            best[name] = min(best.get(name, spent), spent)
    rows = [{"model": name, "events": len(values), "accepted": accepted[name],
             "cpu_us_per_event": round(best[name] / len(values) * 1e6, 2)} for name in runs]
    report("event_model", rows, {"before_ref": args.before_ref},
           title="Validate + encode + hash the stored body: CPU µs per event (best of interleaved rounds)")


if __name__ == "__main__":
    main()
