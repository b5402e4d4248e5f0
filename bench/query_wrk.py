"""Query latency measured by ``wrk`` (C, its own threads): ``dvc766 api`` under 200 connections.

    .venv/bin/python bench/query_wrk.py --database URL [--connections 200] [--seconds 10]

Same two URLs as bench/query_latency.py (the score of one unit, H44.03; the ranking of the communes
under H44), but the load generator is ``wrk -t2`` rather than Python, so less of the two cores goes to
the client. wrk keeps its connections open (keep-alive) and reports latency percentiles over every
request; the database is one kept by ``bench/replay.py --keep``.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from common import READER_KEY, Service, base_parser, mib, report

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


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--database", required=True, help="a database with a province-month (bench/replay.py --keep)")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--period", default="2026-08")
    args = parser.parse_args()
    rows, raw = [], {}
    service = Service("api", args.database).start()
    try:
        targets = {
            "score of H44.03": f"/v1/scores/H44.03?period={args.period}",
            "ranking of the communes": f"/v1/scores?period={args.period}&parent=H44&level=COMMUNE&limit=200",
        }
        for name, path in targets.items():
            result = run_wrk(service.base_url + path, args.connections, args.seconds, args.threads)
            raw[name] = result.pop("raw")
            rows.append({"label": args.label, "query": name, "connections": args.connections, **result})
    finally:
        peak = service.stop()
    for row in rows:
        row["service_peak_rss_mib"] = mib(peak)
    report(f"query_wrk{'-' + args.label if args.label else ''}", rows, {"wrk_output": raw},
           title="Query latency under wrk")


if __name__ == "__main__":
    main()
