"""The same APDU sequence through every path gives identical responses.

Paths: in-process, loop:// (vpcd framing, pyserial), a pty pair (vpcd framing over a tty),
and the real PC/SC stack (pyscard → pcscd → vpcd → the emulator).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from harness.apdu import commands as C
from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.emulator import CardState, EmulatedCard, MemoryStore
from harness.lab.pcscd import Pcscd
from harness.transport.base import Transport
from harness.transport.inprocess import InProcessTransport
from tests.pcsc_lab import ServedCard
from tests.test_links import loop_transport, pty_transport

JPKI = bytes.fromhex("D392F000260100000001")
POWER = "power cycle"


def sequence(secret: bytes, sign_pw: bytes) -> list[CommandAPDU | str]:
    digest = C.sha256_digest_info(hashlib.sha256(b"same on every path").digest())
    return [
        C.select_df(JPKI),
        C.select_ef(0x0018),
        C.pin_status(),
        C.verify(b"0000"),
        C.verify(b"0000"),
        C.pin_status(),
        C.verify(secret),
        C.select_ef(0x0017),
        C.compute_signature(digest),
        C.read_binary(0, 4, sfi=0x0A),
        C.read_binary(0, 256, sfi=0x0A),
        C.read_binary(0, 65536, sfi=0x0A),  # extended Le: the whole certificate
        C.read_binary(0, 4, sfi=0x01),  # 6982 before the sign password
        C.select_ef(0x001B),
        C.verify(sign_pw.lower()),
        C.verify(sign_pw),
        C.read_binary(0x80, 64, sfi=0x01),
        C.select_ef(0x0018),
        C.verify(secret),
        C.change_reference_data(b"4321"),
        POWER,
        C.select_df(JPKI),
        C.select_ef(0x0018),
        C.verify(secret),
        C.verify(b"4321"),
        C.select_df(bytes.fromhex("D3921000310001010100")),
        C.read_record(1, sfi=1),
        CommandAPDU.from_hex("00CA004200"),
        CommandAPDU.from_hex("A0A4040C01D3"),
        CommandAPDU.from_hex("00B00000"),
        C.verify(b"12"),
    ]


def run(transport: Transport, steps: list[CommandAPDU | str]) -> list[tuple[bytes, int] | bytes]:
    out: list[tuple[bytes, int] | bytes] = [transport.atr]
    for step in steps:
        if step == POWER:
            out.append(transport.power_cycle())
            continue
        assert isinstance(step, CommandAPDU)
        resp: ResponseAPDU = transport.transmit(step)
        out.append((resp.data, resp.sw))
    return out


@pytest.fixture
def steps(card_config: object) -> list[CommandAPDU | str]:
    secrets = card_config.secrets()  # type: ignore[attr-defined]
    return sequence(secrets["jpki-auth"].encode(), secrets["jpki-sign"].encode())


@pytest.fixture
def reference(template_state: CardState, steps: list[CommandAPDU | str]) -> list[object]:
    card = EmulatedCard(MemoryStore(template_state.copy()))
    return run(InProcessTransport(card), steps)  # type: ignore[return-value]


def test_reference_run_exercises_the_card(reference: list[object]) -> None:
    sws = [r[1] for r in reference if isinstance(r, tuple)]
    assert {0x9000, 0x63C2, 0x63C1, 0x6982, 0x6700, 0x6D00, 0x6E00} <= set(sws)
    assert any(isinstance(r, tuple) and len(r[0]) > 256 for r in reference)  # extended read


def test_loop_url_agrees(
    template_state: CardState, steps: list[CommandAPDU | str], reference: list[object]
) -> None:
    host, _server = loop_transport(template_state)
    assert run(host, steps) == reference


def test_pty_agrees(
    template_state: CardState, steps: list[CommandAPDU | str], reference: list[object]
) -> None:
    host, server, thread = pty_transport(template_state)
    try:
        assert run(host, steps) == reference
    finally:
        server.stop()
        thread.join(2)


@pytest.fixture
def served(pcscd: Pcscd, template_state: CardState) -> Iterator[ServedCard]:
    slot = pcscd.slots[0]
    card = ServedCard(template_state, slot.url, slot.reader)
    yield card
    card.stop()


def test_pcscd_vpcd_agrees(
    served: ServedCard, steps: list[CommandAPDU | str], reference: list[object]
) -> None:
    from harness.transport.identity import require_emulator
    from harness.transport.pcsc import PcscTransport

    with PcscTransport(served.reader) as transport:
        require_emulator(transport, served.server.instance_id)
        assert transport.protocol == "T=1"
        assert run(transport, steps) == reference
