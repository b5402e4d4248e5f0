"""Query latency measured by ``wrk`` (C, its own threads): ``dvc766 api`` under 200 connections.

    .venv/bin/python bench/query_wrk.py --database URL [--connections 200] [--seconds 10] [--workers N]

Same two URLs as bench/query_latency.py (the score of one unit, H44.03; the ranking of the communes
under H44), but the load generator is ``wrk -t2`` rather than Python, so less of the two cores goes to
the client. wrk keeps its connections open (keep-alive) and reports latency percentiles over every
request; the database is one kept by ``bench/replay.py --keep``. ``--workers``: the api's processes
(``DVC766_API_WORKERS``; default: the service's own default). Each row also has the service's CPU time
(all its processes) per request, steadier than wall-clock figures when others share the machine, and
the 1-minute load average before and after. Each measured run follows ``--warmup`` seconds of the same
load (default 2, not recorded).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess

from common import READER_KEY, Service, base_parser, mib, profiled, report

UNITS = {"ms": 1.0, "us": 0.001, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return round(float(number) * UNITS[unit], 2)


def run_wrk(url: str, connections: int, seconds: int, threads: int) -> dict:
    wrk = shutil.which("wrk") or "/usr/bin/wrk"
    out = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "-H", f"Authorization: Bearer {READER_KEY}", url],
                         capture_output=True, text=True, check=True).stdout
    lat = dict(re.findall(r"^\s+(50|75|90|99)(?:\.000)?%\s+(\S+)\s*$", out, re.M))
    if "99" not in lat:
        raise RuntimeError(out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {"req_per_s": round(rps), "p50_ms": _ms(lat["50"]), "p90_ms": _ms(lat["90"]), "p99_ms": _ms(lat["99"]),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else "",
            "raw": out}


def requests_of(raw: str) -> int:
    """How many requests a wrk run completed (its "N requests in" line)."""
    return int(re.search(r"(\d+) requests in", raw).group(1))


def service_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the service and its worker processes."""
    import psutil

    total = 0.0
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(pid)
        for p in [process, *process.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = p.cpu_times()
                total += times.user + times.system
    return total


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--database", required=True, help="a database with a province-month (bench/replay.py --keep)")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--period", default="2026-08")
    parser.add_argument("--workers", type=int, default=None, help="api processes (DVC766_API_WORKERS)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of the same load before each measured run, not recorded (0: none)")
    args = parser.parse_args()
    rows, raw = [], {}
    env = {"DVC766_API_WORKERS": str(args.workers)} if args.workers else None
    service = Service("api", args.database, env=env).start()
    try:
        targets = {
            "score of H44.03": f"/v1/scores/H44.03?period={args.period}",
            "ranking of the communes": f"/v1/scores?period={args.period}&parent=H44&level=COMMUNE&limit=200",
        }
        for name, path in targets.items():
            if args.warmup:  # first answers computed, start-up collections done: the steady state is measured
                run_wrk(service.base_url + path, args.connections, args.warmup, args.threads)
            load_before = os.getloadavg()[0]
            cpu_before = service_cpu(service.pid)
            with profiled(service.pid, f"query-wrk-{name.split()[0]}", args.profile):
                result = run_wrk(service.base_url + path, args.connections, args.seconds, args.threads)
            cpu = service_cpu(service.pid) - cpu_before
            raw[name] = result.pop("raw")
            requests = requests_of(raw[name])
            rows.append({"label": args.label, "query": name, "connections": args.connections,
                         "workers": args.workers or "default", "warmup_s": args.warmup, **result,
                         "service_cpu_us_per_req": round(cpu / max(requests, 1) * 1e6, 1),
                         "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)})
    finally:
        peak = service.stop()
    for row in rows:
        row["service_peak_rss_mib"] = mib(peak)
    report(f"query_wrk{'-' + args.label if args.label else ''}", rows, {"wrk_output": raw},
           title="Query latency under wrk")


if __name__ == "__main__":
    main()
