"""The hostile scenarios through pcscd, against a real-reader target.

The emulated card runs in a process of its own behind vpcd and is addressed as a real reader
(``--pinloop-target 'reader:^Virtual PCD 00 00$'``, PINs from the environment, no destructive
opt-in): every APDU goes through pyscard, pcscd and the real-card guard. After each run the
card's journal (every counter it ever wrote) and its state file are checked: no PIN went
below its start level minus what the scenario declared, none was blocked, none was left
changed or short.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import CardState, FileStore
from harness.lab.pcscd import Pcscd
from harness.scenario import load_scenarios
from harness.scenario.spend import declared_spend
from harness.targets import env_name
from tests.pcsc_lab import EmulatorProcess
from tests.support import run_pytest

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = Path(__file__).resolve().parent / "hostile"
LIB = ROOT / "scenarios"
PINS = {"jpki-auth": "1234", "jpki-sign": "PINLOOP1", "kenhojo-pin": "1234"}
PINS |= {"juki-pin": "1234", "common-pin": "1234"}
START = {"jpki-auth": 3, "jpki-sign": 5, "kenhojo-pin": 3, "juki-pin": 3, "common-pin": 3}


def _journal_lowest(path: Path, start: dict[str, int]) -> dict[str, int]:
    """The lowest counter of each PIN after a command, from the card's journal.

    A decrement followed at once by a higher value for the same PIN is a correct VERIFY
    (the card writes the decremented counter before it compares), not a try spent.
    """
    records = []
    for line in FileStore.journal_path(path).read_bytes().splitlines():
        body = line.rpartition(b"\t")[0]
        doc = json.loads(body)
        records.append((str(doc["p"]), int(doc["r"])))
    lowest = dict(start)
    for i, (pin, left) in enumerate(records):
        nxt = records[i + 1] if i + 1 < len(records) else None
        if nxt is not None and nxt[0] == pin and nxt[1] > left:
            continue
        lowest[pin] = min(lowest.get(pin, left), left)
    return lowest


def _outcomes(junit: Path) -> dict[str, str]:
    """Test name → passed / failed: message / skipped: message / error: message."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        verdict = "passed"
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                verdict = f"{'failed' if tag == 'failure' else tag}: {el.get('message', '')}"
        out[name.split("@")[0]] = verdict
    return out


def _run(
    pcscd: Pcscd, template: CardState, tmp: Path, defect: str | None, files: list[Path], *k: str
) -> tuple[dict[str, str], dict[str, int], CardState, str]:
    slot = pcscd.slots[0]
    emu = EmulatorProcess(template, tmp, slot.url, defect=defect)
    junit = tmp / "junit.xml"
    try:
        from harness.transport.pcsc import wait_for_card

        wait_for_card(slot.reader, 15)
        proc = run_pytest(
            "-p",
            "no:randomly",
            "-o",
            r"pinloop_file_pattern=.+\.(pin|hostile)\.yaml$",
            "--pinloop-target",
            f"reader:^{slot.reader}$",
            f"--junitxml={junit}",
            *k,
            *map(str, files),
            env={env_name(p, JPKI): v for p, v in PINS.items()},
            timeout=300,
        )
    finally:
        emu.stop()
    lowest = _journal_lowest(emu.state_path, START)
    store = FileStore.open(emu.state_path)
    try:
        state = store.state.copy()
    finally:
        store.close()
    return _outcomes(junit), lowest, state, proc.stdout + proc.stderr


def _all_back(state: CardState, template: CardState, except_for: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    for pin, p in state.pins.items():
        if pin in except_for:
            continue
        assert p.remaining == p.max_tries, (pin, p.remaining)
        assert p.value == template.pins[pin].value, pin


def test_hostile_files_through_pcscd(
    pcscd: Pcscd, template_state: CardState, tmp_path: Path
) -> None:
    files = sorted(HOSTILE.glob("*.hostile.yaml"))
    got, lowest, state, out = _run(pcscd, template_state, tmp_path, None, files)
    reader = pcscd.slots[0].reader
    passed = {n for n, v in got.items() if v == "passed"}
    assert passed == {
        "wrong twice and stop (first of two in a row)",
        "wrong twice and stop (second of two in a row)",
        "wrong tries with power cuts, cycles and resets between them",
        "three wrong values in one VERIFY step[pin=jpki-sign]",
        "three wrong values in one VERIFY step, by SFI[pin=jpki-sign]",
    }, out[-3000:]
    refused = {n: v for n, v in got.items() if n not in passed}
    assert all(v.startswith(f"skipped: refused on {reader}: ") for v in refused.values()), refused
    assert len(refused) == 14, refused
    # the declared floor held on every write: start - max declared over what ran, and one try
    # in reserve
    declared: dict[str, int] = {}
    for f in files:  # every scenario: a refused one may have spent its declared tries first
        for sc in load_scenarios(f, JPKI):
            for pin, n in declared_spend(sc).items():
                declared[pin] = max(declared.get(pin, 0), n)
    for pin, low in lowest.items():
        assert low >= max(2, START.get(pin, 10) - declared.get(pin, 0)), (pin, low, declared)
    assert lowest["jpki-auth"] == 3 and lowest["jpki-sign"] == 2  # what the passing ones spent
    _all_back(state, template_state)
    assert "1234" not in out and "PINLOOP1" not in out


@pytest.mark.parametrize(
    ("defect", "files", "first", "pin", "lowest", "final"),
    [
        (
            "no-restore",
            [LIB / "verify-latency.pin.yaml", LIB / "correct-restores-max.pin.yaml"],
            "did not restore jpki-auth",
            "jpki-auth",
            2,
            2,
        ),
        (
            "query-costs-try",
            [LIB / "status-query-is-free.pin.yaml", HOSTILE / "wrong-twice-a.hostile.yaml"],
            "the status query of jpki-auth costs a try",
            "jpki-auth",
            1,
            3,
        ),
        (
            "double-decrement",
            [HOSTILE / "wrong-twice-a.hostile.yaml", HOSTILE / "wrong-twice-b.hostile.yaml"],
            "cost 2 tries",
            "jpki-sign",
            3,
            5,
        ),
    ],
)
def test_a_misbehaving_card_through_pcscd_fails_once_and_is_left_alone(
    pcscd: Pcscd,
    template_state: CardState,
    tmp_path: Path,
    defect: str,
    files: list[Path],
    first: str,
    pin: str,
    lowest: int,
    final: int,
) -> None:
    got, low, state, _ = _run(
        pcscd, template_state, tmp_path, defect, files, "-k", "jpki-auth or twice"
    )
    verdicts = list(got.values())
    assert len(verdicts) == 2, got
    assert verdicts[0].startswith("failed: ") and first in verdicts[0], verdicts[0]
    assert verdicts[1].startswith("skipped: refused on ") and "were stopped" in verdicts[1]
    assert low[pin] == lowest and min(low.values()) >= 1  # never blocked
    assert state.pins[pin].remaining == final
    _all_back(state, template_state, except_for={pin})
