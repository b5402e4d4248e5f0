"""The floor of query latency on this machine: ``wrk`` against the least a Python server can do.

    .venv/bin/python bench/http_floor.py [--connections 200] [--seconds 10] [--body-bytes 1500]

Starts a server process that answers every GET on a kept-alive connection with the same bytes, on
uvloop (as ``dvc766 api`` runs under uvicorn): no routing, no auth, no database, no JSON. Then runs
``wrk`` exactly as bench/query_wrk.py does (same threads, connections, warm-up). Whatever latency this
shows is the machine's and the load generator's, not dvc766's: it is the physical limit the query
figures are read against (bench/README.md). Writes bench/results/http_floor.json.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

from common import base_parser, free_port, report
from query_wrk import requests_of, run_wrk, service_cpu


class _Answer(asyncio.Protocol):
    response = b""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        data = self.pending + data
        requests = data.count(b"\r\n\r\n")  # GETs only: a request ends at its blank line
        self.pending = data[data.rfind(b"\r\n\r\n") + 4:] if requests else data
        if requests:
            self.transport.write(self.response * requests)


def serve(port: int, body_bytes: int) -> None:
    import uvloop

    body = b"x" * body_bytes
    _Answer.response = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                        + str(len(body)).encode() + b"\r\n\r\n" + body)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Answer, "127.0.0.1", port, backlog=2048)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def _wait_for(port: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the floor server did not listen on {port}")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[200])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--body-bytes", type=int, default=1500, help="answer size (a unit's score is ~1.5 kB)")
    parser.add_argument("--repeat", type=int, default=1, help="measured runs per connection count")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(args.body_bytes)])
    rows, raw = [], {}
    try:
        _wait_for(port)
        url = f"http://127.0.0.1:{port}/"
        for connections in args.connections:
            if args.warmup:
                run_wrk(url, connections, args.warmup, args.threads)
            for run in range(args.repeat):
                load_before = os.getloadavg()[0]
                cpu_before = service_cpu(server.pid)
                result = run_wrk(url, connections, args.seconds, args.threads)
                cpu = service_cpu(server.pid) - cpu_before
                text = result.pop("raw")
                raw[f"{connections}-{run}"] = text
                requests = requests_of(text)
                rows.append({"label": args.label, "server": "floor (fixed bytes, uvloop)",
                             "connections": connections, "run": run + 1, **result,
                             "server_cpu_us_per_req": round(cpu / max(requests, 1) * 1e6, 1),
                             "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)})
    finally:
        server.terminate()
        server.wait(timeout=10)
    report(f"http_floor{'-' + args.label if args.label else ''}", rows, {"wrk_output": raw},
           title="Query latency floor under wrk")


if __name__ == "__main__":
    main()
