"""Fixtures shared by the integration tests."""

import pytest

from tests.support.kafka import TansuBroker
from tests.support.processes import kill_started_since, running


@pytest.fixture(scope="module")
def broker():
    """A real Kafka-protocol broker (Tansu, in memory) on a free loopback port, for one test module."""
    b = TansuBroker().start()
    yield b
    b.stop()


@pytest.fixture(autouse=True)
def _processes_end_with_their_test():
    """A failed assertion must not leave a `dvc766` process applying to the next test's tables."""
    mark = running()
    yield
    kill_started_since(mark)
