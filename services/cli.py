"""The ``dvc766`` command: serve (all in one), ingest, indicators, api, migrate."""

from __future__ import annotations

import argparse
import sys

from shared.logs import configure_logging
from shared.settings import get_settings


def _serve(roles: tuple[str, ...], host: str, port: int) -> None:
    import uvicorn

    from services.app import create_app

    settings = get_settings()
    app = create_app(roles, settings=settings)
    # uvicorn turns SIGTERM/SIGINT into a graceful shutdown: in-flight requests finish, then the
    # lifespan stops the workers after their current batch.
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=30)


# Commands whose code lives with its service: each module offers ``add_arguments(parser)`` and
# ``run(args) -> int``, and its docstring's first line is the help text.
PLUGGED_COMMANDS = {
    "replay": "services.indicators.replay",
    "simulate": "services.simulator.cli",
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
    _serve(roles, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
