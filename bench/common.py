"""Helpers shared by the benchmarks: machine facts, a table + JSON report, latency percentiles, peak RSS,
a fresh database on the local PostgreSQL, a ``dvc766`` service as a subprocess, simulated events, and
profiling with py-spy. Everything talks to 127.0.0.1 only and is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
UNITS_FILE = ROOT / "examples" / "units-h44.csv"
PYTHON = sys.executable
DVC766 = str(Path(PYTHON).with_name("dvc766"))
ADMIN_URL = os.environ.get("DVC766_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ADMIN_KEY = "bench-admin-key"
READER_KEY = "bench-reader-key"
SOURCE = "bench"
API_KEYS = {
    ADMIN_KEY: {"role": "admin", "source": SOURCE, "name": "bench"},
    READER_KEY: {"role": "reader", "name": "bench-reader"},
}

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --- machine and report -------------------------------------------------------------------------


def machine() -> dict:
    import psutil

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    pg = subprocess.run(["psql", "--version"], capture_output=True, text=True) if shutil.which("psql") else None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "postgresql": (pg.stdout.strip() if pg else "?"),
        "commit": commit.stdout.strip(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def percentiles(values: list[float], points=(50, 90, 95, 99, 99.9)) -> dict[str, float]:
    """Nearest-rank percentiles (values in any unit; empty -> {})."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {}
    for p in points:
        rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
        out[f"p{p:g}"] = ordered[rank - 1]
    out["max"] = ordered[-1]
    out["count"] = len(ordered)
    return out


def report(name: str, rows: list[dict], extra: dict | None = None, title: str | None = None) -> Path:
    """Print ``rows`` as a table and write ``bench/results/<name>.json`` (with the machine's facts)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return "" if value is None else str(value)

    table = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) if table else len(c) for i, c in enumerate(columns)]
    print()
    print(f"## {title or name}")
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in table:
        print("| " + " | ".join(v.rjust(w) for v, w in zip(r, widths)) + " |")
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"name": name, "machine": machine(), "rows": rows, **(extra or {})}, indent=2,
                               ensure_ascii=False, default=str))
    print(f"\n(written {path.relative_to(ROOT)})")
    return path


# --- resources ----------------------------------------------------------------------------------


class PeakRSS:
    """Samples a process's resident memory (with its children) in a thread; ``peak`` in bytes."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self.last = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        with contextlib.suppress(psutil.Error):
            total = self.process.memory_info().rss
            for child in self.process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.last = self._sample()
            self.peak = max(self.peak, self.last)
            self._stop.wait(self.every)

    def start(self) -> PeakRSS:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def mib(n: int) -> float:
    return round(n / 2**20, 1)


# --- database -----------------------------------------------------------------------------------


def _with_database(url: str, name: str) -> str:
    head, sep, query = url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}{sep}{query}"


@contextlib.contextmanager
def fresh_database(prefix: str = "dvc766_bench", *, migrate: bool = True, keep: bool = False):
    """A new database on the local PostgreSQL (migrated), dropped afterwards; yields its libpq URL."""
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = _with_database(ADMIN_URL, name)
    try:
        if migrate:
            env = dict(os.environ, DVC766_DATABASE_URL=url, DVC766_LOG_JSON="false")
            subprocess.run([DVC766, "migrate"], check=True, env=env, cwd=ROOT, capture_output=True)
        yield url
    finally:
        if not keep:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def table_counts(url: str, *tables: str) -> dict[str, int]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in tables}
    finally:
        await conn.close()


# --- the service --------------------------------------------------------------------------------


async def wait_applied(url: str, timeout: float = 1800) -> None:
    """Until the database path has applied every queued event (pending_events empty)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while await conn.fetchval("SELECT count(*) FROM pending_events"):
            if time.monotonic() > deadline:
                raise RuntimeError("events still queued")
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def backend_cpu(database: str) -> float:
    """CPU seconds (user + system) of the PostgreSQL backends connected to ``database`` (the service's)."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(proc.info["cmdline"] or [])
            if cmd.startswith("postgres:") and f" {database} " in cmd:
                times = proc.cpu_times()
                total += times.user + times.system
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """``dvc766 <command>`` as a subprocess on 127.0.0.1 against ``database_url``; peak RSS sampled."""

    def __init__(self, command: str, database_url: str, *, env: dict | None = None, port: int | None = None,
                 code: str | None = None) -> None:
        """``code``: run the service from another checkout (e.g. a ``git worktree`` of the commit before an
        optimisation), to compare both under the same load; default: this one (``DVC766_BENCH_CODE``)."""
        self.command = command
        self.code = code or os.environ.get("DVC766_BENCH_CODE") or None
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = dict(
            os.environ,
            DVC766_DATABASE_URL=database_url,
            DVC766_UNITS_FILE=str(UNITS_FILE),
            DVC766_API_KEYS=json.dumps(API_KEYS),
            DVC766_LOG_LEVEL="WARNING",
            DVC766_LOG_JSON="false",
            # The load generators are one client with one key: rate limits would measure themselves.
            DVC766_RATE_LIMIT_KEY_PER_SECOND="0",
            DVC766_RATE_LIMIT_ADDRESS_PER_SECOND="0",
            **(env or {}),
        )
        self.env.pop("DVC766_KAFKA_BOOTSTRAP_SERVERS", None) if not (env or {}).get(
            "DVC766_KAFKA_BOOTSTRAP_SERVERS") else None
        if self.code:
            self.env["PYTHONPATH"] = str(Path(self.code).resolve())
        self.process: subprocess.Popen | None = None
        self.rss: PeakRSS | None = None
        self.log = RESULTS / f"service-{command}-{self.port}.log"

    def start(self, timeout: float = 60.0) -> Service:
        import httpx

        RESULTS.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log, "wb")
        self.process = subprocess.Popen(
            [DVC766, self.command, "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, cwd=self.code or ROOT, stdout=self._log_file, stderr=subprocess.STDOUT,
        )
        self.rss = PeakRSS(self.process.pid).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dvc766 {self.command} exited: see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dvc766 {self.command} not ready after {timeout}s: see {self.log}")

    def cpu_now(self) -> float:
        import psutil

        with contextlib.suppress(psutil.Error, AttributeError):
            times = psutil.Process(self.pid).cpu_times()
            return times.user + times.system
        return getattr(self, "cpu_seconds", 0.0)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> int:
        """Stops the service (SIGTERM, then SIGKILL) and returns its peak RSS in bytes; ``cpu_seconds``
        keeps the CPU time (user + system) it used, a figure other load on the machine barely moves."""
        peak = self.rss.stop() if self.rss else 0
        self.cpu_seconds = self.cpu_now()
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(Exception):
            self._log_file.close()
        return peak

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- events -------------------------------------------------------------------------------------


def simulated_events(scale: float, seed: int = 766, limit: int | None = None) -> list[bytes]:
    """Simulated events as NDJSON lines (bytes), generated once per (scale, seed) and cached."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"events-s{scale:g}-seed{seed}.ndjson"
    if not path.exists():
        started = time.perf_counter()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # concurrent benches each write their own
        subprocess.run([DVC766, "simulate", "--scale", str(scale), "--seed", str(seed), "-o", str(tmp)],
                       check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
        tmp.rename(path)
        print(f"(simulated {path.name} in {time.perf_counter() - started:.1f}s)", file=sys.stderr)
    lines = []
    with open(path, "rb") as f:
        for line in f:
            lines.append(line.rstrip(b"\n"))
            if limit is not None and len(lines) >= limit:
                break
    return lines


def json_batches(lines: list[bytes], size: int = 1000) -> list[tuple[int, bytes]]:
    """Pre-serialised JSON array bodies of ``size`` events (serialising is not part of what we time)."""
    return [(len(lines[i:i + size]), b"[" + b",".join(lines[i:i + size]) + b"]") for i in range(0, len(lines), size)]


async def post_batches(base_url: str, bodies: list[tuple[int, bytes]], *, key: str = ADMIN_KEY,
                       concurrency: int = 4, timeout: float = 600) -> dict:
    """POST the bodies with ``concurrency`` requests in flight; per-request latencies in ms."""
    import httpx

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    outcome: Counter = Counter()
    queue = iter(bodies)
    deadline = time.monotonic() + timeout

    async def sender(client) -> None:
        for count, body in queue:
            if time.monotonic() > deadline:
                return
            started = time.perf_counter()
            response = await client.post("/v1/events", content=body, headers=headers)
            latencies.append((time.perf_counter() - started) * 1000)
            outcome[f"http_{response.status_code}"] += 1
            if response.status_code in (200, 422):
                answer = response.json()
                for k in ("accepted", "duplicates", "rejected"):
                    outcome[k] += answer.get(k, 0)
            outcome["events"] += count

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        await asyncio.gather(*(sender(client) for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "latencies_ms": latencies, **outcome}


# --- profiling ----------------------------------------------------------------------------------


@contextlib.contextmanager
def profiled(pid: int, name: str, enabled: bool, rate: int = 200):
    """py-spy (sampling, attached to ``pid``) while the block runs; writes collapsed stacks and prints
    the functions with the most samples (self and total)."""
    if not enabled:
        yield None
        return
    spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
    out = RESULTS / f"profile-{name}.txt"
    proc = subprocess.Popen([spy, "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(out),
                             "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        yield out
    finally:
        proc.send_signal(2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if out.exists():
            summarise_profile(out)


def summarise_profile(path: Path, top: int = 25) -> None:
    self_count: Counter = Counter()
    total_count: Counter = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [f.split(" (")[0] + " " + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
                  if " (" in f else f for f in stack.split(";")]
        if frames:
            self_count[frames[-1]] += n
        for frame in set(frames):
            total_count[frame] += n
    print(f"\n### profile {path.name}: {samples} samples")
    print("self%   function")
    for frame, n in self_count.most_common(top):
        print(f"{100 * n / samples:5.1f}  {frame}")
    print("total%  function (ours)")
    ours = [(f, n) for f, n in total_count.most_common() if any(k in f for k in (
        "intake", "store", "engine", "dossier", "counters", "events.py", "http.py", "worker", "queries",
        "calendar", "scoring", "raw.py"))]
    for frame, n in ours[:top]:
        print(f"{100 * n / samples:5.1f}  {frame}")


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--profile", action="store_true", help="profile the service with py-spy while it runs")
    parser.add_argument("--label", default="", help="a label for this run (e.g. before / after)")
    return parser
