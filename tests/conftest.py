"""Fixtures for the harness's own tests."""

from __future__ import annotations

import functools
import os
import random
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from harness.emulator import CardConfig, CardState, EmulatedCard, MemoryStore, load_card_config
from harness.emulator.personalise import personalise
from harness.errors import ConfigError, TransportTimeout
from harness.lab.pcscd import Pcscd, port_sockets
from harness.links.vpcd import DEFAULT_PORT, PORT_VARIABLE, first_port
from tests.support import Host

pytest_plugins = ["tests.pcsc_lab"]

settings.register_profile("dev", max_examples=100)
settings.register_profile(
    "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


# Parallel runs (`./run test` passes `-n auto`). Most PC/SC tests wait for pcscd, so two
# workers per core. pcscd has one fixed place (/run/pcscd: its socket and pid file), so as
# root each worker runs in a mount namespace of its own with a private /run/pcscd, and its
# vpcd listens on ports of its own (PINLOOP_VPCD_PORT): every worker starts and stops its
# own pcscd beside the others, and beside a pcscd of the host's.
_PRIVATE_RUN = 'mkdir -p /run/pcscd && mount -t tmpfs pinloop-tests /run/pcscd && exec "$0" "$@"'


@functools.cache
def _isolation() -> str | None:
    """Why workers cannot have a private /run/pcscd, or None when they can."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "unshare (util-linux) is not installed"
    try:
        probe = subprocess.run(
            [unshare, "--mount", "--propagation", "private", "sh", "-c", _PRIVATE_RUN, "true"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare --mount failed: {exc}"
    if probe.returncode != 0:
        return f"unshare --mount failed: {probe.stderr.strip()[-200:]}"
    return None


def _pcscd_tests_run() -> bool:
    return sys.platform == "linux" and os.geteuid() == 0


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    if _pcscd_tests_run() and _isolation() is not None:
        return 0  # one process: the PC/SC tests would share the host's /run/pcscd
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


def pytest_xdist_setupnodes(config: pytest.Config, specs: Sequence[Any]) -> None:
    if not _pcscd_tests_run():
        return  # no PC/SC test runs (they need root): nothing to keep apart
    why = _isolation()
    if why is not None:
        raise pytest.UsageError(f"parallel PC/SC tests need a private /run/pcscd: {why}; use -n 0")
    taken: set[int] = set()
    for spec in specs:
        if not spec.popen:
            continue
        python = shlex.split(spec.python) if spec.python else [sys.executable]
        wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _PRIVATE_RUN]
        spec.python = shlex.join([*wrap, *python])
        spec.env[PORT_VARIABLE] = str(_free_ports(taken))
        taken.add(int(spec.env[PORT_VARIABLE]))


def _free_ports(taken: set[int]) -> int:
    """The first port of 16 free TCP ports, in a block chosen at random: two runs on one host
    (two checkouts, two labs) must not give their workers the same ports."""
    # below the kernel's ephemeral ports: a client socket (an emulator's, a test's) may be
    # given any of those, and a vpcd that then cannot listen on it leaves its reader out
    # of pcscd ("Unknown reader")
    blocks = list(range(10000, _ephemeral_start() - 16, 100)) or list(
        range(DEFAULT_PORT + 100, 65519 - 16, 100)
    )
    random.SystemRandom().shuffle(blocks)
    for base in blocks:
        if base not in taken and all(_bindable(base + k) for k in range(16)):
            return base
    raise pytest.UsageError("no block of 16 free TCP ports for the PC/SC test workers")


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))  # vpcd listens on every address
        except OSError:
            return False
    return True


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A PC/SC test that waited in vain for a card gets what explains it in its report: the
    TCP sockets of this worker's vpcd ports (who is connected, who waits in a backlog) and
    the tail of its pcscd's log. A rare wait of 15 s for a card that an emulator says it has
    connected has not been explained yet; this is what the next one will show."""
    report = yield
    exc = call.excinfo
    if exc is None or not exc.errisinstance(TransportTimeout) or "waited" not in str(exc.value):
        return report
    try:
        base = first_port()
    except ConfigError as bad:  # a broken PINLOOP_VPCD_PORT must not break the report
        report.sections.append(("vpcd ports", str(bad)))
    else:
        report.sections.append(("vpcd ports", port_sockets(base, 16)))
    for name, value in getattr(item, "funcargs", {}).items():
        if isinstance(value, Pcscd):
            report.sections.append((f"pcscd log ({name}), last 80 lines", value.log_tail(80)))
    return report
