"""Fixtures shared by the Kafka integration tests."""

import pytest

from tests.support.kafka import TansuBroker


@pytest.fixture(scope="module")
def broker():
    """A real Kafka-protocol broker (Tansu, in memory) on a free loopback port, for one test module."""
    b = TansuBroker().start()
    yield b
    b.stop()
