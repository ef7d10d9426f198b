"""A pytest plugin for the fault-injection tests (``-p tests.fault_injection``).

``PINLOOP_INJECT="FAULT:SCENARIO:N"``: in the first item whose rule and PIN read
``SCENARIO`` (e.g. ``lock-at-exactly-n[jpki-auth]``), FAULT happens just before its N-th APDU
goes out (pinloop's ``pytest_pinloop_apdu`` hook), so the transport meets the fault on that
APDU. Faults (pcscd target):

- ``kill-emulator``: the emulator stops dead (its link closes, it never comes back);
- ``restart-pcscd``: pcscd is stopped and started again under the open connection;
- ``remove-card``: the card is pulled out of the reader (it comes back after 0.5 s);
- ``unplug-reader``: pcscd restarts without the target's reader (it vanishes).

``PINLOOP_INJECT_LOG``: a JSON file listing every APDU the emulated card received, with the
item it belonged to and whether it came after the fault, for the "never retried" check.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from harness.apdu.model import CommandAPDU
from harness.emulator import EmulatedCard
from harness.run.session import CardSession


def _digest(raw: bytes) -> str:
    """APDUs are logged by digest: they carry PIN values."""
    return hashlib.sha256(bytes(raw)).hexdigest()[:16]


def _inject(fault: str, target: Any) -> None:
    if fault == "kill-emulator":
        target.server.reconnect = False
        target.server.stop()
    elif fault == "restart-pcscd":
        target.lab.restart()  # stopped and started again under the open connection
    elif fault == "remove-card":
        target.server.drop()
    elif fault == "unplug-reader":
        target.lab.restart(unplug_pair=0)
    else:
        raise ValueError(f"unknown fault {fault}")
    time.sleep(0.05)  # let the daemon see it before the APDU goes out


_STATE: dict[str, Any] = {}


def pytest_configure(config: pytest.Config) -> None:
    spec = os.environ.get("PINLOOP_INJECT")
    if not spec:
        return
    fault, where, n = spec.rsplit(":", 2)
    state = _STATE
    state.update(fault=None, count=0, seen=[], item="", spec=(fault, where, int(n)))
    transmit = EmulatedCard.transmit

    def card_transmit(self: EmulatedCard, raw: bytes) -> bytes:
        state["seen"].append({"item": state["item"], "apdu": _digest(raw)})
        return transmit(self, raw)

    EmulatedCard.transmit = card_transmit  # type: ignore[method-assign]

    def write() -> None:
        log = os.environ.get("PINLOOP_INJECT_LOG")
        if log:
            Path(log).write_text(json.dumps({"fault": state["fault"], "seen": state["seen"]}))

    config.add_cleanup(write)


def pytest_pinloop_apdu(session: CardSession, command: CommandAPDU) -> None:
    """pinloop's hook: each APDU a step is about to send."""
    state = _STATE
    if not state:
        return
    fault, where, n = state["spec"]
    label = f"{session.scenario.rule}[{session.scenario.params.get('pin', '')}]"
    state["item"] = label
    if state["fault"] is None and label == where:
        state["count"] += 1
        if state["count"] == n:
            state["fault"] = {
                "item": label,
                "apdu": _digest(command.to_bytes()),
                "at": len(state["seen"]),
            }
            _inject(fault, session.target)
