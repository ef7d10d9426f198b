"""A real client against the emulated card: Debian's OpenSC (its ``jpki`` driver, PKCS#15
emulation and PKCS#11 module) through pcscd and vpcd, as a user's software would see the card.

The card is served in a process of its own on a vpcd slot of the test's pcscd; the OpenSC
tools find it as reader 0. The PINs on the command lines are the default card config's test
values (never a real card's). ``./run`` installs ``opensc``, ``opensc-pkcs11`` and ``openssl``
with pcscd; with ``PINLOOP_REQUIRE_PCSC=1`` (CI as root) a missing tool fails, never skips.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.emulator import FileStore, load_card_config, personalise
from harness.lab.pcscd import Pcscd
from tests.emulator_process import EmulatorProcess
from tests.pcsc_lab import REQUIRED, pcscd  # noqa: F401 - the fixture

MODULE = Path("/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so")
TOOLS = ("opensc-tool", "pkcs15-tool", "pkcs11-tool", "openssl")
CONFIG = load_card_config()
AUTH, SIGN = CONFIG.pins["jpki-auth"], CONFIG.pins["jpki-sign"]


def _need_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not MODULE.exists():
        missing.append(str(MODULE))
    if missing:
        text = "OpenSC tools missing (apt-get install opensc opensc-pkcs11 openssl): "
        if REQUIRED:
            pytest.fail(text + ", ".join(missing))
        pytest.skip(text + ", ".join(missing))


@pytest.fixture
def card(pcscd: Pcscd, tmp_path: Path) -> Iterator[EmulatorProcess]:  # noqa: F811
    from harness.transport.pcsc import wait_for_card

    _need_tools()
    slot = pcscd.slots[0]
    emu = EmulatorProcess(personalise(CONFIG), tmp_path, slot.url)
    try:
        wait_for_card(slot.reader, 15)
        yield emu
    finally:
        emu.stop()


def _run(*cmd: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)
    return proc.stdout + proc.stderr


def _tries() -> list[int]:
    """Tries left of the auth PIN and the sign password, as pkcs15-tool lists them."""
    out = _run("pkcs15-tool", "-r", "0", "--list-pins")
    return [int(line.split(":")[1]) for line in out.splitlines() if "Tries left" in line]


def _left(emu: EmulatorProcess) -> dict[str, int]:
    """What the card holds, from its state file (the emulator stopped: the file is its)."""
    emu.stop()
    store = FileStore.open(emu.state_path)
    try:
        return {k: p.remaining for k, p in store.state.pins.items()}
    finally:
        store.close()


def test_opensc_recognises_the_card_and_counts_tries_as_the_card_does(
    card: EmulatorProcess,
) -> None:
    assert _run("opensc-tool", "-r", "0", "-n").strip() == "jpki"
    assert _tries() == [3, 5]
    for left in (2, 1):  # each wrong PIN moves the count by exactly one
        out = _run("pkcs15-tool", "-r", "0", "--verify-pin", "--auth-id", "01", "--pin", "0000")
        assert "incorrect" in out, out
        assert _tries() == [left, 5]
    _run("pkcs15-tool", "-r", "0", "--verify-pin", "--auth-id", "01", "--pin", AUTH)
    assert _tries() == [3, 5]  # and back to the maximum on the right one
    _run("pkcs15-tool", "-r", "0", "--verify-pin", "--auth-id", "02", "--pin", "WRONGPW1")
    assert _tries() == [3, 4]
    _run("pkcs15-tool", "-r", "0", "--verify-pin", "--auth-id", "02", "--pin", SIGN)
    assert _tries() == [3, 5]
    left = _left(card)
    assert left["jpki-auth"] == 3 and left["jpki-sign"] == 5  # what the card itself holds


def test_the_certificates_read_and_chain_the_sign_one_only_after_its_password(
    card: EmulatorProcess, tmp_path: Path
) -> None:
    def read(cert_id: str, *login: str) -> Path:
        path = tmp_path / f"cert-{cert_id}.pem"
        path.write_text(_run("pkcs15-tool", "-r", "0", *login, "--read-certificate", cert_id))
        return path

    auth, auth_ca, sign_ca = read("01"), read("03"), read("04")
    assert "BEGIN CERTIFICATE" not in read("02").read_text()  # 69 82 without the password
    sign = read("02", "--verify-pin", "--auth-id", "02", "--pin", SIGN)
    for cert, ca in ((auth, auth_ca), (sign, sign_ca)):
        assert "BEGIN CERTIFICATE" in cert.read_text(), cert.read_text()
        out = _run("openssl", "verify", "-CAfile", str(ca), str(cert))
        assert out.strip() == f"{cert}: OK", out


@pytest.mark.parametrize(
    ("slot", "key", "pin", "cert"), [("0", "01", AUTH, "01"), ("1", "02", SIGN, "02")]
)
def test_each_key_signs_through_pkcs11_and_openssl_verifies(
    card: EmulatorProcess, tmp_path: Path, slot: str, key: str, pin: str, cert: str
) -> None:
    data, sig = tmp_path / "data", tmp_path / "sig"
    data.write_bytes(b"pinloop signs this")
    out = _run(
        "pkcs11-tool", "--module", str(MODULE), "--slot-index", slot, "--login", "--pin", pin,
        "--sign", "--id", key, "-m", "SHA256-RSA-PKCS", "-i", str(data), "-o", str(sig),
    )  # fmt: skip
    assert sig.exists() and sig.stat().st_size == 256, out
    pem = tmp_path / "cert.pem"
    login = ("--verify-pin", "--auth-id", "02", "--pin", SIGN) if cert == "02" else ()
    pem.write_text(_run("pkcs15-tool", "-r", "0", *login, "--read-certificate", cert))
    pub = tmp_path / "pub.pem"
    pub.write_text(_run("openssl", "x509", "-in", str(pem), "-pubkey", "-noout"))
    out = _run("openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(sig), str(data))
    assert out.strip() == "Verified OK", out
    tampered = tmp_path / "tampered"
    tampered.write_bytes(b"pinloop signs that")
    out = _run(
        "openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(sig), str(tampered)
    )
    assert "Verification failure" in out, out  # the check itself can fail


def test_pkcs11_tool_self_test_has_no_errors(card: EmulatorProcess) -> None:
    out = _run("pkcs11-tool", "--module", str(MODULE), "--slot-index", "0", "--test", "--login",
               "--pin", AUTH)  # fmt: skip
    assert "No errors" in out, out[-3000:]
    left = _left(card)
    assert left["jpki-auth"] == 3 and left["jpki-sign"] == 5
