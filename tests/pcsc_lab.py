"""Fixtures that bring up the real PC/SC path: pcscd (started here) and emulated cards."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from harness.emulator import EmulatedCard, MemoryStore
from harness.emulator.state import CardState
from harness.lab.pcscd import LabError, Pcscd, missing_packages
from harness.links.vicc import EmulatorServer, serve_in_thread
from harness.transport.pcsc import wait_for_card
from tests.emulator_process import EmulatorProcess

REQUIRED = os.environ.get("PINLOOP_REQUIRE_PCSC") == "1"


def _unavailable() -> str | None:
    try:
        import smartcard.scard  # noqa: F401
    except ImportError:
        return "pyscard is not installed"
    if missing_packages():
        return "missing Debian packages: " + " ".join(missing_packages())
    if os.geteuid() != 0:
        return "pcscd must run as root"
    return None


def require_pcsc() -> None:
    reason = _unavailable()
    if reason is None:
        return
    if REQUIRED:
        pytest.fail(f"PINLOOP_REQUIRE_PCSC=1 but the PC/SC path cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture
def pcscd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pcscd]:
    """A pcscd of the test's own (~0.2 s to start). Not one per module: a test that starts
    its own pcscd (a run with ``--pinloop-target pcscd``) would find it still running when
    a test of the same module that used it ran before (in any order: random, or a worker's
    share of a parallel run)."""
    require_pcsc()
    daemon = Pcscd(tmp_path_factory.mktemp("pcscd") / "pcscd.log", slots=2)
    try:
        daemon.start()
    except LabError as exc:
        pytest.fail(str(exc))
    yield daemon
    daemon.stop()


class ServedCard:
    """An emulated card served in a thread of the test process on a vpcd slot."""

    def __init__(self, state: CardState, url: str, reader: str, **card_kwargs: object) -> None:
        self.card = EmulatedCard(MemoryStore(state.copy()), **card_kwargs)  # type: ignore[arg-type]
        self.server = EmulatorServer(self.card, url)
        self.reader = reader
        self.thread = serve_in_thread(self.server)
        wait_for_card(reader, 15)

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(2)
        wait_for_card(self.reader, 5.0, present=False)


__all__ = ["EmulatorProcess", "ServedCard", "require_pcsc"]
