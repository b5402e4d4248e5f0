"""Archive months of events: export each to a file, then drop its partition (``dvc766 archive``).

A month is its partition of ``events`` (shared/db/partitions.py): the events of the dossiers whose first
event happened in it, whole histories. Months older than ``retention_months`` (before the current one)
may be archived; younger ones are refused. Each month becomes, in ``archive_dir``:

- ``events-YYYY-MM.ndjson.gz``: one JSON object per event (seq, source, event_id, transport,
  accepted_at, body_hash, body), in dossier then seq order;
- ``events-YYYY-MM.json``: its manifest (month, file, events, dossiers, first and last seq, sha256 of the
  file, format), written after the file is complete and read back.

Then, in one transaction, the month is recorded in ``archived_months``, its idempotency keys leave the
registry, and its partition is dropped; if events reached the partition after the export, or the month
has events still queued or parked dossiers, nothing is dropped and the command fails. From then on an
event for one of its dossiers is refused (``dossier_archived``, dead-lettered), the dossiers' rows and
the counters stay as they are (the clock no longer re-derives them for a step deadline), and ``dvc766
replay`` reads the month from its file (:func:`archived_histories`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gzip
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from services.indicators.engine import history_event
from services.indicators.rules.dossier import HistoryEvent
from shared.db.partitions import add_months, existing_partitions, forget, parse_month, partition_name
from shared.db.raw import driver_connection
from shared.events import decode_event
from shared.runtime import Runtime
from shared.timeutil import utcnow

FORMAT = "dvc766-events-ndjson-1"


class ArchiveError(RuntimeError):
    """An archive step refused or a month's file that cannot be read back as its manifest says."""


@dataclass(frozen=True)
class Archived:
    month: dt.date
    events: int
    dossiers: int
    file: Path


def archive_dir(settings) -> Path:
    return Path(settings.archive_dir) if settings.archive_dir else Path(settings.data_dir) / "archive"


def file_names(month: dt.date) -> tuple[str, str]:
    return f"events-{month:%Y-%m}.ndjson.gz", f"events-{month:%Y-%m}.json"


def retention_cutoff(today: dt.date, retention_months: int) -> dt.date:
    """The first month kept: months before it may be archived."""
    return add_months(dt.date(today.year, today.month, 1), -retention_months)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_EXPORT = """SELECT e.seq, e.source, e.event_id, e.dossier_code, e.transport, e.accepted_at,
                    encode(k.body_hash, 'hex') AS body_hash, e.body::text AS body
             FROM {partition} e LEFT JOIN event_keys k USING (source, event_id)
             ORDER BY e.dossier_code, e.seq"""


async def _export(apg, month: dt.date, directory: Path) -> dict:
    """Write the month's file (read back and checked) and return its manifest (not written yet)."""
    data_name, _ = file_names(month)
    path = directory / data_name
    partial = path.with_name(path.name + ".partial")
    events = dossiers = 0
    first_seq = last_seq = None
    previous = None
    async with apg.transaction(isolation="repeatable_read", readonly=True):
        with gzip.open(partial, "wb", compresslevel=6) as out:
            async for row in apg.cursor(_EXPORT.format(partition=partition_name(month)), prefetch=5000):
                seq = row["seq"]
                line = orjson.dumps({
                    "seq": seq, "source": row["source"], "event_id": row["event_id"], "transport": row["transport"],
                    "accepted_at": row["accepted_at"].isoformat(), "body_hash": row["body_hash"],
                    "body": orjson.Fragment(row["body"]),
                })
                out.write(line + b"\n")
                events += 1
                dossiers += row["dossier_code"] != previous
                previous = row["dossier_code"]
                first_seq = seq if first_seq is None else min(first_seq, seq)
                last_seq = seq if last_seq is None else max(last_seq, seq)
    with open(partial, "rb") as f:
        os.fsync(f.fileno())
    os.replace(partial, path)
    _fsync_dir(directory)
    manifest = {"format": FORMAT, "month": f"{month:%Y-%m}", "file": data_name, "events": events,
                "dossiers": dossiers, "first_seq": first_seq, "last_seq": last_seq, "sha256": _sha256(path),
                "archived_at": utcnow().isoformat()}
    read_back = sum(1 for _ in _lines(path))
    if read_back != events:
        raise ArchiveError(f"{path}: {read_back} events read back, {events} written")
    return manifest


def _lines(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield orjson.loads(line)


async def archive_month(runtime: Runtime, month: dt.date, directory: Path) -> Archived:
    """Export one month to ``directory`` and drop its partition (see the module's docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    partition = partition_name(month)
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        if await apg.fetchval("SELECT 1 FROM pending_events WHERE home_month = $1 LIMIT 1", month):
            raise ArchiveError(f"{month:%Y-%m}: events of this month are still queued; run it again once applied")
        manifest = await _export(apg, month, directory)
        _, manifest_name = file_names(month)
        async with apg.transaction():
            # No writer from here on; what the export saw must be the whole month.
            await apg.execute(f"LOCK TABLE {partition} IN ACCESS EXCLUSIVE MODE")
            count, first, last = await apg.fetchrow(f"SELECT count(*), min(seq), max(seq) FROM {partition}")
            if (count, first, last) != (manifest["events"], manifest["first_seq"], manifest["last_seq"]):
                raise ArchiveError(f"{month:%Y-%m}: events arrived during the export; nothing was dropped, "
                                   "run it again")
            if await apg.fetchval("SELECT 1 FROM pending_events WHERE home_month = $1 LIMIT 1", month):
                raise ArchiveError(f"{month:%Y-%m}: events of this month are still queued; run it again once applied")
            parked = [r[0] for r in await apg.fetch(
                """SELECT p.dossier_code FROM parked_dossiers p JOIN dossier_owners o USING (dossier_code)
                   WHERE o.home_month = $1 ORDER BY 1 LIMIT 5""", month)]
            if parked:  # their events are the only account of them: not into a file nobody applies
                raise ArchiveError(f"{month:%Y-%m}: parked dossiers of this month ({', '.join(parked)}…); apply "
                                   "them (dvc766 replay --parked) or leave the month in the database")
            await apg.execute(
                """INSERT INTO archived_months (month, events, dossiers, file, sha256)
                   VALUES ($1, $2, $3, $4, $5)""",
                month, manifest["events"], manifest["dossiers"], manifest["file"], manifest["sha256"])
            await apg.execute(f"DELETE FROM event_keys k USING {partition} e "
                              "WHERE k.source = e.source AND k.event_id = e.event_id")
            # The manifest is on disk before the partition goes: a crash between them leaves the month in
            # the database, its files rewritten by the next run.
            _write_atomically(directory / manifest_name, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
            _fsync_dir(directory)
            await apg.execute(f"DROP TABLE {partition}")
        forget(apg, month)
    return Archived(month, manifest["events"], manifest["dossiers"], directory / manifest["file"])


async def archivable_months(runtime: Runtime, before: dt.date) -> list[dt.date]:
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        return sorted(m for m in await existing_partitions(apg) if m < before)


def read_manifest(directory: Path, month: dt.date) -> dict:
    _, manifest_name = file_names(month)
    path = directory / manifest_name
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArchiveError(f"archived month {month:%Y-%m}: no manifest {path} (set archive_dir, or "
                           "--archive-dir, to where its files are)") from exc
    if manifest.get("format") != FORMAT or manifest.get("month") != f"{month:%Y-%m}":
        raise ArchiveError(f"{path}: not the manifest of {month:%Y-%m} in {FORMAT}")
    return manifest


async def archived_histories(apg, directory: Path, chunk_dossiers: int) -> AsyncIterator[dict[str, list[HistoryEvent]]]:
    """Every archived dossier's history, read from the files of ``archived_months``, a chunk of dossiers at
    a time; a file that is missing, or not the one its month recorded (sha256, event count), is an error."""
    for month, events, sha256 in await apg.fetch("SELECT month, events, sha256 FROM archived_months ORDER BY month"):
        manifest = read_manifest(directory, month)
        path = directory / manifest["file"]
        if not path.exists():
            raise ArchiveError(f"archived month {month:%Y-%m}: its file {path} is missing")
        actual = await asyncio.to_thread(_sha256, path)
        if actual != sha256 or manifest["sha256"] != sha256:
            raise ArchiveError(f"archived month {month:%Y-%m}: {path} is not the file archived (sha256 {actual})")
        chunk: dict[str, list[HistoryEvent]] = {}
        count = 0
        for line in _lines(path):
            body = line["body"]
            code = body["dossier_code"]
            history = chunk.get(code)
            if history is None:
                if len(chunk) >= chunk_dossiers:
                    yield chunk
                    chunk = {}
                history = chunk[code] = []
            history.append(history_event(line["seq"], decode_event(body)))
            count += 1
        if count != events:
            raise ArchiveError(f"archived month {month:%Y-%m}: {count} events in {path}, {events} archived")
        if chunk:
            yield chunk


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--before", metavar="YYYY-MM",
                        help="archive every month before this one (default: the retention's, retention_months "
                             "before the current month; a later one is refused)")
    parser.add_argument("--dir", type=Path, help="where the files go (default: archive_dir, else data_dir/archive)")
    parser.add_argument("--dry-run", action="store_true", help="list the months that would be archived")


async def _main(args) -> int:
    from shared.runtime import build_runtime
    from shared.settings import get_settings

    settings = get_settings()
    cutoff = retention_cutoff(utcnow().date(), settings.retention_months)
    try:
        before = parse_month(args.before) if args.before else cutoff
    except ValueError as exc:
        print(f"archive: {exc}", file=sys.stderr)
        return 2
    if before > cutoff:
        print(f"archive: {before:%Y-%m} is within the retention ({settings.retention_months} months: months "
              f"before {cutoff:%Y-%m} may be archived)", file=sys.stderr)
        return 2
    directory = args.dir or archive_dir(settings)
    runtime = await build_runtime(settings, run_migrations=settings.database_url is None)
    try:
        months = await archivable_months(runtime, before)
        if args.dry_run or not months:
            print(f"archive: {len(months)} months before {before:%Y-%m} to archive"
                  + (": " + ", ".join(f"{m:%Y-%m}" for m in months) if months else ""))
            return 0
        for month in months:
            try:
                done = await archive_month(runtime, month, directory)
            except ArchiveError as exc:
                print(f"archive: {exc}", file=sys.stderr)
                return 1
            print(f"archive: {done.month:%Y-%m}: {done.events} events of {done.dossiers} dossiers -> {done.file}")
        return 0
    finally:
        await runtime.engine.dispose()


def run(args) -> int:
    return asyncio.run(_main(args))
