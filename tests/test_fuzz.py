"""The fuzzers run (short budgets here; ``./run fuzz`` runs the full campaign) and find what
they are meant to find: a planted bug in the card, and each counter defect profile."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from harness.apdu.model import CommandAPDU
from harness.errors import APDUFormatError
from harness.transport.base import exchange
from tests.fuzz.targets import TARGETS, Bytes

ROOT = Path(__file__).resolve().parent.parent


def fuzz(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.fuzz", *args, "--artifacts", f"{tmp_path}/"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("card", "--apdus", "30000"),
        ("responses", "--inputs", "10000"),
        ("scenarios", "--inputs", "300"),
    ],
    ids=lambda a: a[0],
)
def test_a_short_campaign_finds_nothing(tmp_path: Path, args: tuple[str, ...]) -> None:
    proc = fuzz(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no finding" in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--accept-any-pin",), "9000 without the secret"),
        (("--defect", "no-decrement"), "without spending exactly one try"),
        (("--defect", "ok-when-blocked"), "9000 from a blocked PIN"),
        (("--defect", "query-costs-try"), "status query changed a counter"),
        (("--defect", "power-cycle-resets-counter"), "NVM changed across a power cycle"),
    ],
    ids=lambda a: a[-1] if isinstance(a, tuple) else None,
)
def test_the_card_fuzzer_finds_planted_bugs(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    proc = fuzz(tmp_path, "card", "--apdus", "500000", *args)
    out = proc.stdout + proc.stderr  # atheris prints the finding on stdout when piped
    assert proc.returncode != 0, out[-3000:]
    assert message in out, out[-3000:]
    assert list(tmp_path.glob("crash-*")), "the finding's input is kept"


def test_targets_take_any_bytes_without_atheris() -> None:
    """The same targets over plain random bytes (no coverage guidance): a quick smoke."""
    rng = random.Random(7)
    for target in TARGETS.values():
        for _ in range(40):
            target(Bytes(rng.randbytes(rng.randrange(0, 600))))


def test_a_card_that_never_ends_its_61xx_chain_is_refused() -> None:
    """Found by the responses fuzzer: after 64 rounds of 61xx the harness used to hand 61xx
    to the caller as if it were the card's status word."""
    answers = [b"\x61\x10"] * 70 + [b"\x90\x00"]
    with pytest.raises(APDUFormatError, match="61xx more than 64 times"):
        exchange(lambda raw: answers.pop(0), CommandAPDU(0x00, 0xB0, 0x00, 0x00, le=16))
