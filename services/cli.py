"""The ``dvc766`` command: serve (all in one), ingest, indicators, api, migrate."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from shared.logs import configure_logging
from shared.settings import get_settings


def _serve(roles: tuple[str, ...], host: str, port: int, *, reuse_port: bool = False) -> None:
    import uvicorn

    from services.app import create_app

    settings = get_settings()
    app = create_app(roles, settings=settings)
    # uvicorn turns SIGTERM/SIGINT into a graceful shutdown: in-flight requests finish, then the
    # lifespan stops the workers after their current batch.
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=30)
    server = uvicorn.Server(config)
    if reuse_port:  # one of `dvc766 api`'s worker processes: its own socket on the shared port
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(config.backlog)
        _exit_with_parent()
        server.run(sockets=[sock])
    else:
        server.run()
    if not server.started:
        sys.exit(3)  # as uvicorn.run: the application did not start


def api_workers(settings) -> int:
    """How many processes `dvc766 api` runs (``api_workers``, default 1)."""
    return settings.api_workers


def ingest_workers(settings) -> int:
    """How many processes `dvc766 ingest` runs (``ingest_workers``, default 1: on two cores shared with
    PostgreSQL a second one did not raise throughput and doubled the memory)."""
    return settings.ingest_workers


def _supervise(host: str, port: int, workers: int, command_name: str = "api") -> int:
    """`dvc766 api` (or `ingest`) with several workers: each a `dvc766 api --worker` (`ingest --worker`)
    process binding the port with SO_REUSEPORT. SIGTERM/SIGINT are passed on (each worker shuts down
    gracefully); if a worker dies, the others are stopped and the command fails (a supervisor such as
    systemd restarts it)."""
    import shutil
    import signal
    import subprocess
    import tempfile
    import time

    env = dict(os.environ)
    own_metrics_dir = None
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):  # /metrics sums the workers' counters from there
        own_metrics_dir = tempfile.mkdtemp(prefix="dvc766-metrics-")
        env["PROMETHEUS_MULTIPROC_DIR"] = own_metrics_dir
    command = [sys.executable, "-m", "services.cli", command_name, "--host", host, "--port", str(port), "--worker"]
    # Own sessions: a terminal's Ctrl-C reaches the workers once, through us, not twice (a second
    # signal would make uvicorn skip the graceful shutdown).
    children = [subprocess.Popen(command, env=env, start_new_session=True) for _ in range(workers)]
    stopping = asked = False

    def stop(signum=None, frame=None) -> None:
        nonlocal stopping, asked
        stopping = True
        asked = asked or signum is not None
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while any(child.poll() is None for child in children):
            if not stopping and any(child.poll() is not None for child in children):
                stop()  # a worker died: stop the others
            time.sleep(0.2)
    finally:
        stop()
        for child in children:
            child.wait()
        if own_metrics_dir:
            shutil.rmtree(own_metrics_dir, ignore_errors=True)
    # uvicorn re-raises the signal it shut down on: a worker stopped by our SIGTERM ends with -SIGTERM.
    clean = all(child.returncode in (0, -signal.SIGTERM) for child in children)
    return 0 if asked and clean else 1


def _exit_with_parent() -> None:
    """A worker whose supervisor is gone (killed outright) shuts itself down gracefully."""
    import signal
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


# Commands whose code lives with its service: each module offers ``add_arguments(parser)`` and
# ``run(args) -> int``, and its docstring's first line is the help text.
PLUGGED_COMMANDS = {
    "replay": "services.indicators.replay",
    "archive": "services.indicators.archive",
    "simulate": "services.simulator.cli",
    "keys": "services.keys",
}


def _plug(sub, name: str, module_name: str) -> None:
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return  # not built yet
        raise
    parser = sub.add_parser(name, help=(module.__doc__ or name).strip().splitlines()[0])
    module.add_arguments(parser)
    parser.set_defaults(run=module.run)


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="dvc766", description="QĐ 766 real-time indicators")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("serve", "ingest, indicators and api in one process (the embedded default)"),
        ("ingest", "the ingest service alone"),
        ("indicators", "the indicators worker alone"),
        ("api", "the query API alone"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--host", default=settings.host)
        p.add_argument("--port", type=int, default=settings.port)
        if name in ("api", "ingest"):  # one worker process of a multi-process `dvc766 api`/`ingest`
            p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    sub.add_parser("migrate", help="apply the database migrations (alembic upgrade head)")
    for name, module in PLUGGED_COMMANDS.items():
        _plug(sub, name, module)
    args = parser.parse_args(argv)
    configure_logging(settings.log_level, settings.log_json)

    if args.command == "migrate":
        from shared.db.engine import migrate_sync, resolve_database_url

        url = resolve_database_url(settings)
        migrate_sync(url)
        print("migrations applied")
        return 0
    if args.command in PLUGGED_COMMANDS:
        return int(args.run(args) or 0)
    roles = {"serve": ("ingest", "indicators", "api")}.get(args.command, (args.command,))
    if args.command in ("api", "ingest"):
        if args.worker:
            _serve(roles, args.host, args.port, reuse_port=True)
            return 0
        # Several processes need a shared store: the embedded default lives in one process's data dir.
        count = api_workers if args.command == "api" else ingest_workers
        workers = count(settings) if settings.database_url else 1
        if workers > 1:
            return _supervise(args.host, args.port, workers, args.command)
    _serve(roles, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
