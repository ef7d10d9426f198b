"""The real-card guard against card firmware and readers that misbehave in ways no defect
profile names: answers that lie, a SELECT that does not select, two PIN objects sharing one
counter, a restore whose write fails, a reader that delivers a VERIFY twice, a different card
after a reconnect, a transport that loops or drops. Each is simulated by wrapping the emulated
card's byte interface or its NVM; in every case the PIN is never blocked, and the harness
stops or refuses instead of spending the try."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.apdu.model import CommandAPDU
from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import CardConfig, EmulatedCard, MemoryStore, load_card_config, personalise
from harness.errors import CardRemoved, CardStateError
from harness.scenario import Scenario, load_scenarios
from harness.transport.base import exchange
from harness.transport.inprocess import InProcessTransport
from tests.test_guard import RecordingStore, _real, _run

Wrap = Callable[[Callable[[bytes], bytes], bytes], bytes]


@pytest.fixture
def config() -> CardConfig:
    return load_card_config()


def _scenario(tmp_path, text: str) -> Scenario:  # type: ignore[no-untyped-def]
    path = tmp_path / "s.hostile.yaml"
    path.write_text("name: firmware case\nrule: firmware\nsteps:\n" + text)
    (scenario,) = load_scenarios(path, JPKI)
    return scenario


def _wrapped(config: CardConfig, wrap: Wrap, defect: str = "faithful"):  # type: ignore[no-untyped-def]
    target, store = _real(config, defect)
    recorded = target.card.transmit
    target.card.transmit = lambda raw: wrap(recorded, raw)  # type: ignore[method-assign]
    return target, store


def _is_wrong_verify(raw: bytes, config: CardConfig) -> bool:
    if raw[1] != 0x20 or len(raw) <= 5:
        return False
    return raw[5:] not in {v.encode() for v in config.secrets().values()}


def _lost_at_wrong_verify(config: CardConfig, nth: int) -> Wrap:
    """The connection fails at the ``nth`` wrong VERIFY (which never reaches the card)."""
    seen = 0

    def drop(inner: Callable[[bytes], bytes], raw: bytes) -> bytes:
        nonlocal seen
        if _is_wrong_verify(raw, config):
            seen += 1
            if seen == nth:
                raise CardRemoved("the card left the reader")
        return inner(raw)

    return drop


def test_a_reader_that_delivers_a_verify_twice(config: CardConfig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    wrong = 0

    def twice(inner: Callable[[bytes], bytes], raw: bytes) -> bytes:
        nonlocal wrong
        if _is_wrong_verify(raw, config):
            wrong += 1
            if wrong == 2:
                inner(raw)
        return inner(raw)

    target, store = _wrapped(config, twice)
    got = _run(target, _scenario(tmp_path, "  - verify: {pin: jpki-sign, value: wrong, repeat: 2}"))
    assert got.startswith("defect: ") and "cost 2 tries" in got, got
    assert store.lowest["jpki-sign"] == 2  # the reserve try held
    assert store.state.pins["jpki-sign"].remaining == 5  # given back with the accepted PIN


def test_an_answer_that_says_one_more_than_the_card_kept(config: CardConfig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    def high(inner: Callable[[bytes], bytes], raw: bytes) -> bytes:
        out = inner(raw)
        if _is_wrong_verify(raw, config) and out[0] == 0x63:
            return bytes((0x63, 0xC0 | min(15, (out[1] & 0x0F) + 1)))
        return out

    target, store = _wrapped(config, high)
    got = _run(target, _scenario(tmp_path, "  - verify: {pin: jpki-sign, value: wrong, repeat: 2}"))
    assert got.startswith("defect: ") and "is 4, where pinloop counted 5" in got, got
    assert store.lowest["jpki-sign"] == 4  # stopped before the second try


def test_a_select_that_answers_9000_and_does_not_select(config: CardConfig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    def stay(inner: Callable[[bytes], bytes], raw: bytes) -> bytes:
        if raw == bytes.fromhex("00A4020C02001B") and target.card._ef == 0x0018:
            return bytes.fromhex("9000")  # EF 001B (sign) "selected"; EF 0018 (auth) stays
        return inner(raw)

    target, store = _wrapped(config, stay)
    got = _run(
        target,
        _scenario(
            tmp_path,
            "  - verify: {pin: jpki-auth, value: wrong}\n"
            "  - verify: {pin: jpki-sign, value: wrong}\n",
        ),
    )
    assert got.startswith("defect: ") and "where pinloop counted" in got, got
    assert store.lowest["jpki-auth"] == 2 and store.lowest["jpki-sign"] == 5


def test_two_pin_objects_that_share_one_counter(config: CardConfig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """住基AP and 共通AP each have an EF 001C; whether the card keeps one counter or two is not
    public. If it keeps one, the second PIN's count is not what the guard counted."""
    target, store = _real(config)

    class Shared(RecordingStore):
        def write_pin(self, pin_id: str, *, remaining: int, value: bytes | None = None) -> None:
            super().write_pin(pin_id, remaining=remaining, value=value)
            other = {"juki-pin": "common-pin", "common-pin": "juki-pin"}.get(pin_id)
            if other:
                self.state.pins[other].remaining = remaining

    shared = Shared(store.state)
    target.card.store = shared
    target.begin = lambda *a, **k: (  # type: ignore[method-assign]
        setattr(target.card, "store", shared),
        type(target).begin(target, *a, **k),
    )[1]
    got = _run(
        target,
        _scenario(
            tmp_path,
            "  - verify: {pin: juki-pin, value: wrong}\n"
            "  - verify: {pin: common-pin, value: wrong}\n",
        ),
    )
    assert got.startswith("defect: ") and "common-pin is 2, where pinloop counted 3" in got, got
    assert shared.state.pins["common-pin"].remaining == 2


def test_a_restore_whose_write_fails(config: CardConfig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The card writes the decremented counter, compares, and fails to write the maximum back
    (it answers 65 81): every start would spend a try that way, so the card is stopped."""
    target, store = _real(config)

    class Failing(RecordingStore):
        def write_pin(self, pin_id: str, *, remaining: int, value: bytes | None = None) -> None:
            if remaining == self.state.pins[pin_id].max_tries:
                raise CardStateError("no space left on device")
            super().write_pin(pin_id, remaining=remaining, value=value)

    failing = Failing(store.state)
    target.begin = lambda *a, **k: (  # type: ignore[method-assign]
        setattr(target.card, "store", failing),
        type(target).begin(target, *a, **k),
    )[1]
    scenario = _scenario(tmp_path, "  - verify: {pin: jpki-auth, value: right, repeat: 5}")
    first = _run(target, scenario)
    assert first.startswith("error: the card in ") and "6581 (memory failure" in first, first
    assert _run(target, scenario).startswith("refused: ")
    assert failing.state.pins["jpki-auth"].remaining == 2  # one try, once


def test_a_reconnect_that_reaches_another_card(config: CardConfig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """After a reinsert the card may be another one: what the first accepted proves nothing,
    so its 1 try left is not spent on the first card's PIN."""
    import dataclasses

    other = EmulatedCard(
        MemoryStore(
            personalise(dataclasses.replace(config, pins={**config.pins, "jpki-auth": "9999"}))
        )
    )
    other.store.write_pin("jpki-auth", remaining=1)
    target, _ = _real(config)
    target.reinsert = lambda: target.guard.attach(InProcessTransport(other, name=target.name))  # type: ignore[method-assign]
    got = _run(
        target,
        _scenario(
            tmp_path,
            "  - select: {pin: jpki-auth}\n  - power: reinsert\n  - verify: {value: right}\n",
        ),
    )
    assert got.startswith("refused: jpki-auth has 1 try left"), got
    assert other.store.state.pins["jpki-auth"].remaining == 1


def test_a_card_that_starts_short_and_does_not_restore(config: CardConfig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    target, store = _real(config, "no-restore")
    store.state.pins["jpki-auth"].remaining = 2
    got = _run(target, _scenario(tmp_path, "  - verify: {pin: jpki-auth, value: wrong}"))
    assert got.startswith("defect: ") and "its maximum is 3" in got, got
    assert store.state.pins["jpki-auth"].remaining == 2


def test_a_transport_that_loops_on_61xx_leaves_nothing_short(config: CardConfig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A wrong VERIFY answered with 61 01 for ever: the transport gives up (a lab fault, not a
    lost connection), the guard counts the try as unknown, and the end puts it back."""

    def loop(inner: Callable[[bytes], bytes], raw: bytes) -> bytes:
        if _is_wrong_verify(raw, config):
            inner(raw)
            return bytes.fromhex("6101")
        if raw[:2] == b"\x00\xc0":
            return bytes.fromhex("6101")
        return inner(raw)

    target, store = _wrapped(config, loop)
    got = _run(target, _scenario(tmp_path, "  - verify: {pin: jpki-sign, value: wrong}"))
    assert got.startswith("error: the card answered 61xx"), got
    assert store.lowest["jpki-sign"] == 4
    assert store.state.pins["jpki-sign"].remaining == 5


def test_a_connection_lost_mid_scenario_is_put_back_by_the_next_start(
    config: CardConfig, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    target, store = _wrapped(config, _lost_at_wrong_verify(config, 3))
    got = _run(target, _scenario(tmp_path, "  - verify: {pin: jpki-sign, value: wrong, repeat: 3}"))
    assert got.startswith("error: the card left the reader"), got
    assert store.state.pins["jpki-sign"].remaining == 3
    # the next scenario uses another PIN; its start puts jpki-sign back first
    _run(target, _scenario(tmp_path, "  - status: {pin: jpki-auth}"))
    assert store.state.pins["jpki-sign"].remaining == 5


def test_6cxx_never_sends_a_command_with_data_twice() -> None:
    sent: list[bytes] = []

    def card(raw: bytes) -> bytes:
        sent.append(raw)
        return bytes.fromhex("6C00") if len(sent) == 1 else bytes.fromhex("9000")

    resp = exchange(card, CommandAPDU(0x00, 0x20, 0x00, 0x80, b"0000", le=256))
    assert resp.sw == 0x6C00 and len(sent) == 1
    sent.clear()
    resp = exchange(card, CommandAPDU(0x00, 0xB0, 0x00, 0x00, le=256))
    assert resp.sw == 0x9000 and len(sent) == 2  # a read (case 2) is sent again


def test_what_a_lost_connection_left_short_is_put_back_when_the_target_closes(
    config: CardConfig, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    target, store = _wrapped(config, _lost_at_wrong_verify(config, 2))
    _run(target, _scenario(tmp_path, "  - verify: {pin: jpki-sign, value: wrong, repeat: 2}"))
    assert store.state.pins["jpki-sign"].remaining == 4
    target.guard.finish()  # what RealReaderTarget.close does first
    assert store.state.pins["jpki-sign"].remaining == 5
