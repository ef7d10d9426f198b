"""Fixtures for the harness's own tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from harness.emulator import CardConfig, CardState, EmulatedCard, MemoryStore, load_card_config
from harness.emulator.personalise import personalise
from tests.support import Host

pytest_plugins = ["tests.pcsc_lab"]

settings.register_profile("dev", max_examples=100)
settings.register_profile(
    "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def card_config() -> CardConfig:
    return load_card_config()


@pytest.fixture(scope="session")
def template_state(card_config: CardConfig) -> CardState:
    return personalise(card_config)


@pytest.fixture
def fresh_state(template_state: CardState) -> CardState:
    return template_state.copy()


@pytest.fixture
def card(fresh_state: CardState) -> Iterator[EmulatedCard]:
    c = EmulatedCard(MemoryStore(fresh_state))
    c.power_on()
    yield c


@pytest.fixture
def host(card: EmulatedCard, card_config: CardConfig) -> Host:
    return Host(card, card_config)
