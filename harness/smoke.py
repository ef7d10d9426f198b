"""The smoke run: a short fixed PIN sequence with expectations, on the emulated card.

The main job until the scenario suite exists. It runs in-process, or through the real PC/SC
stack: pcscd (started here) → vpcd → the emulator served on slot 0, reached with pyscard, after
checking that the card in the reader is the emulator this run started.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.apdu import commands as C
from harness.apdu import render_command
from harness.apdu import sw as SW
from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.cards.jpki.layout import APPS_BY_ID, PINS_BY_ID
from harness.emulator import EmulatedCard, FileStore, parse_profile, personalise
from harness.emulator.config import CardConfig
from harness.transport.base import Transport


@dataclass
class SmokeResult:
    checks: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return self.checks - len(self.failures)


class Smoke:
    def __init__(
        self, transport: Transport, secrets: dict[str, bytes], *, reveal: bool = False
    ) -> None:
        self.transport = transport
        self.secrets = secrets
        self.reveal = reveal
        self.result = SmokeResult()

    def send(self, cmd: CommandAPDU, expect: int | None = None) -> ResponseAPDU:
        resp = self.transport.transmit(cmd)
        verdict = ""
        if expect is not None:
            self.result.checks += 1
            if resp.sw == expect:
                verdict = "ok"
            else:
                verdict = f"FAIL: expected {SW.describe(expect)}"
                self.result.failures.append(
                    f"{render_command(cmd)} → {SW.describe(resp.sw)}; "
                    f"expected {SW.describe(expect)}"
                )
        shown = render_command(cmd, reveal=self.reveal)
        if len(shown) > 46:
            shown = shown[:36] + f"… ({len(cmd.to_bytes())} B)"
        print(f"  >> {shown:46} << {resp.sw:04X}  {verdict}")
        return resp

    def check(self, ok: bool, failure: str) -> None:
        self.result.checks += 1
        if not ok:
            self.result.failures.append(failure)

    def goto(self, pin_id: str) -> None:
        spec = PINS_BY_ID[pin_id]
        self.send(C.select_df(APPS_BY_ID[spec.app].aid), SW.OK)
        self.send(C.select_ef(spec.fid), SW.OK)

    def run(self) -> SmokeResult:
        auth = self.secrets["jpki-auth"]
        wrong = b"0000" if auth != b"0000" else b"1111"
        print("JPKI auth PIN: wrong x2, right, status query, sign")
        self.goto("jpki-auth")
        self.send(C.pin_status(), SW.retries(3))
        self.send(C.verify(wrong), SW.retries(2))
        self.send(C.verify(wrong), SW.retries(1))
        self.send(C.pin_status(), SW.retries(1))
        self.send(C.verify(auth), SW.OK)
        self.send(C.pin_status(), SW.retries(3))
        self.send(C.select_ef(0x0017), SW.OK)
        digest = hashlib.sha256(b"pinloop smoke").digest()
        sig = self.send(C.compute_signature(C.sha256_digest_info(digest)), SW.OK)
        self.check(len(sig.data) == 256, f"signature of {len(sig.data)} bytes, expected 256")
        print("JPKI auth PIN: wrong x3 locks; a power cycle keeps the lock")
        self.goto("jpki-auth")
        for left in (2, 1, 0):
            self.send(C.verify(wrong), SW.retries(left))
        self.send(C.verify(auth), SW.REFERENCE_DATA_BLOCKED)
        atr = self.transport.power_cycle()
        print(f"  -- power cycle, ATR {atr.hex(' ').upper()}")
        self.goto("jpki-auth")
        self.send(C.pin_status(), SW.retries(0))
        print("sign password untouched; its certificate needs it")
        self.goto("jpki-sign")
        self.send(C.pin_status(), SW.retries(5))
        self.send(C.read_binary(0, 4, sfi=0x01), SW.SECURITY_STATUS_NOT_SATISFIED)
        return self.result


def run_smoke(
    config: CardConfig,
    *,
    defect: str | None = None,
    via: str = "in-process",
    reveal: bool = False,
    workdir: Path | None = None,
) -> SmokeResult:
    """Personalise a fresh card from ``config`` and run the smoke sequence on it."""
    profile = parse_profile(defect or "faithful")
    secrets = {k: v.encode() for k, v in config.secrets().items()}
    with contextlib.ExitStack() as stack:
        tmp = workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="pinloop-smoke-"))
        )
        path = tmp / "card.json"
        FileStore.create(path, personalise(config), overwrite=True)
        card = EmulatedCard(FileStore.open(path), defects=profile)
        stack.callback(card.store.close)
        transport: Transport
        if via == "in-process":
            from harness.transport.inprocess import InProcessTransport

            transport = InProcessTransport(card)
        elif via == "pcscd":
            transport = _through_pcscd(card, tmp, stack)
        else:
            raise ValueError(f"unknown path {via!r}")
        stack.callback(transport.close)
        print(
            f"smoke run on emulated card {config.name!r} ({card.model.name}), defects: "
            f"{profile.describe()}, via {transport.name}"
        )
        return Smoke(transport, secrets, reveal=reveal).run()
    raise AssertionError("unreachable")  # pragma: no cover


def _through_pcscd(card: EmulatedCard, tmp: Path, stack: contextlib.ExitStack) -> Transport:
    from harness.lab.pcscd import Pcscd
    from harness.links.vicc import EmulatorServer, serve_in_thread
    from harness.transport.identity import require_emulator
    from harness.transport.pcsc import PcscTransport, wait_for_card

    lab = Pcscd(tmp / "pcscd.log", slots=2)
    lab.start()
    stack.callback(lab.stop)
    slot = lab.slots[0]
    server = EmulatorServer(card, slot.url)
    thread = serve_in_thread(server)
    stack.callback(thread.join, 2)
    stack.callback(server.stop)
    wait_for_card(slot.reader, 15.0)  # as the emulated targets: a loaded host is slow
    transport = PcscTransport(slot.reader)
    require_emulator(transport, server.instance_id)
    print(
        f"pcscd pid {lab.pid} (log {lab.log_path}); emulator instance "
        f"{server.instance_id.hex()} on {slot.url}"
    )
    return transport
