"""The newcomer's default: no DVC766_DATABASE_URL, so a real PostgreSQL starts from the embedded wheel."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
import sys

import pytest

pytestmark = pytest.mark.slow


def test_migrate_on_the_embedded_default():
    # A directory of our own: pytest's tmp_path may be pruned by another pytest run on the same machine.
    tmp_path = Path(tempfile.mkdtemp(prefix="dvc766-embedded-"))
    try:
        _migrate_and_restart(tmp_path)
    finally:
        subprocess.run(["pkill", "-f", f"{tmp_path}/data/pgdata"], check=False)
        shutil.rmtree(tmp_path, ignore_errors=True)


def _migrate_and_restart(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DVC766_DATABASE_URL"}
    env["DVC766_DATA_DIR"] = str(tmp_path / "data")
    script = (
        "from services.cli import main; import sys; code = main(['migrate']);"
        "from shared.db.engine import resolve_database_url; from shared.settings import get_settings;"
        "print('URL', resolve_database_url(get_settings())); sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "pgdata" / "PG_VERSION").exists()
    url = next(line for line in result.stdout.splitlines() if line.startswith("URL ")).split(" ", 1)[1]
    assert "host=" in url  # a unix socket in the data directory, no TCP port taken
    # The process stopped its server at exit; start it again as the next `dvc766 serve` would.
    code = (
        "import asyncio, asyncpg\n"
        "from pathlib import Path\n"
        "from shared.db.engine import start_embedded_postgres\n"
        f"url = start_embedded_postgres(Path({str(tmp_path / 'data')!r})).replace('+asyncpg', '')\n"
        "async def q():\n"
        "    c = await asyncpg.connect(url)\n"
        "    v = await c.fetchval('SELECT count(*) FROM alembic_version')\n"
        "    await c.close()\n"
        "    return v\n"
        "print('VERSIONS', asyncio.run(q()))\n"
    )
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "VERSIONS 1" in again.stdout


def test_serve_stopped_by_sigterm_stops_its_embedded_postgres():
    """`dvc766 serve` on the embedded default, stopped the way a supervisor stops it, leaves no database
    server behind (uvicorn re-raises SIGTERM after its graceful shutdown, so exit hooks never run)."""
    import signal
    import socket
    import time

    import httpx
    import psutil

    tmp_path = Path(tempfile.mkdtemp(prefix="dvc766-embedded-"))
    pgdata = str(tmp_path / "data" / "pgdata")

    def postmasters() -> list:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "postgres" in cmdline and pgdata in cmdline and " -D " in cmdline:
                found.append(proc)
        return found

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC766_")}
    env.update({"DVC766_DATA_DIR": str(tmp_path / "data"), "DVC766_LOG_LEVEL": "WARNING"})
    serve = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "--host", "127.0.0.1",
                              "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert serve.poll() is None, serve.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "dvc766 serve did not become ready"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert postmasters(), "the embedded PostgreSQL should be running while serve runs"
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
        deadline = time.monotonic() + 20
        while postmasters() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert postmasters() == [], "the embedded PostgreSQL outlived dvc766 serve"
    finally:
        if serve.poll() is None:
            serve.kill()
        subprocess.run(["pkill", "-f", pgdata], check=False)
        shutil.rmtree(tmp_path, ignore_errors=True)
