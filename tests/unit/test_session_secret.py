"""The secret that signs sessions: configured, else generated once in the data dir; required in production."""

from __future__ import annotations

import pytest

from shared.auth import session_secret
from shared.settings import Settings


def test_a_configured_secret_is_used_as_given(tmp_path):
    assert session_secret(Settings(data_dir=tmp_path, session_secret="from-config")) == b"from-config"
    assert not (tmp_path / "session-secret").exists()


def test_a_generated_secret_is_kept_so_every_process_on_the_data_dir_shares_it(tmp_path):
    first = session_secret(Settings(data_dir=tmp_path))
    assert len(first) >= 32
    assert session_secret(Settings(data_dir=tmp_path)) == first
    assert (tmp_path / "session-secret").stat().st_mode & 0o077 == 0


def test_production_refuses_to_start_without_one(tmp_path):
    with pytest.raises(SystemExit, match="DVC766_SESSION_SECRET"):
        session_secret(Settings(data_dir=tmp_path, environment="production"))
