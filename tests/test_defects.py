"""Each defect profile changes the card's behaviour in the way its name says, and only then."""

from __future__ import annotations

import statistics
import time

import pytest

from harness.apdu import commands as C
from harness.apdu import sw as SW
from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import PROFILES, CardConfig, CardState, EmulatedCard, MemoryStore
from harness.emulator.defects import UnknownDefectError, parse_profile
from tests.support import Host


def _host(state: CardState, config: CardConfig, profile: str) -> Host:
    card = EmulatedCard(MemoryStore(state), defects=parse_profile(profile))
    card.power_on()
    return Host(card, config)


def _block(host: Host, pin_id: str) -> None:
    host.select_pin(pin_id)
    for _ in range(host.card.pin_state(pin_id).max_tries):
        host.verify(pin_id, host.wrong(pin_id))


def test_faithful_is_the_default(card: EmulatedCard) -> None:
    assert card.defects.faithful and card.defects.name == "faithful"
    assert all(not p.faithful for name, p in PROFILES.items() if name != "faithful")


def test_no_decrement(fresh_state: CardState, card_config: CardConfig) -> None:
    host = _host(fresh_state, card_config, "no-decrement")
    host.select_pin("jpki-auth")
    assert [host.verify("jpki-auth", b"0000") for _ in range(5)] == [SW.retries(3)] * 5
    assert host.tries() == 3  # never blocks


def test_no_restore(fresh_state: CardState, card_config: CardConfig) -> None:
    host = _host(fresh_state, card_config, "no-restore")
    host.select_pin("jpki-auth")
    assert host.verify("jpki-auth", b"0000") == SW.retries(2)
    assert host.verify("jpki-auth") == SW.OK  # accepted, and verified
    assert "jpki-auth" in host.card.verified
    assert host.tries() == 2  # the defect: the counter stays where it was


def test_double_decrement(fresh_state: CardState, card_config: CardConfig) -> None:
    host = _host(fresh_state, card_config, "double-decrement")
    host.select_pin("jpki-sign")
    assert host.verify("jpki-sign", b"WRONG1") == SW.retries(3)
    assert host.verify("jpki-sign") == SW.OK and host.tries() == 5
    host.select_pin("jpki-auth")
    assert host.verify("jpki-auth", b"0000") == SW.retries(1)
    assert host.verify("jpki-auth", b"0000") == SW.retries(0)


def test_ok_when_blocked(fresh_state: CardState, card_config: CardConfig) -> None:
    host = _host(fresh_state, card_config, "ok-when-blocked")
    _block(host, "jpki-auth")
    assert host.tries() == 0
    assert host.verify("jpki-auth", b"0000") == SW.REFERENCE_DATA_BLOCKED
    assert host.verify("jpki-auth") == SW.OK  # the defect: the right PIN gets through
    assert "jpki-auth" in host.card.verified


def test_power_cycle_resets_counter(fresh_state: CardState, card_config: CardConfig) -> None:
    host = _host(fresh_state, card_config, "power-cycle-resets-counter")
    _block(host, "jpki-sign")
    host.select_pin("jpki-auth")
    host.verify("jpki-auth", b"0000")
    host.card.power_off()
    host.card.power_on()
    host.select_pin("jpki-auth")
    assert host.tries() == 3
    host.select_pin("jpki-sign")
    assert host.tries() == 5 and host.verify("jpki-sign") == SW.OK


def test_query_costs_a_try(fresh_state: CardState, card_config: CardConfig) -> None:
    host = _host(fresh_state, card_config, "query-costs-try")
    host.select_pin("jpki-auth")
    assert [host.sw(C.pin_status()) for _ in range(4)] == [0x63C2, 0x63C1, 0x63C0, 0x63C0]
    assert host.verify("jpki-auth") == SW.REFERENCE_DATA_BLOCKED


def test_decrement_after_compare_writes_after_the_comparison(
    fresh_state: CardState, card_config: CardConfig
) -> None:
    host = _host(fresh_state, card_config, "decrement-after-compare")
    order: list[str] = []
    real = host.card._matches

    def spy(secret: bytes, presented: bytes) -> bool:
        order.append("compare")
        return real(secret, presented)

    host.card._matches = spy  # type: ignore[method-assign]
    host.card.write_hook = lambda point, phase: order.append(f"{point}:{phase}")
    host.select_pin("jpki-auth")
    assert host.verify("jpki-auth", b"0000") == SW.retries(2)  # the SWs look the same...
    assert order == [  # ...the order does not: compared, then written
        "compare",
        "verify.compare:after",
        "verify.decrement:before",
        "verify.decrement:after",
    ]


def test_non_atomic_pin_write_splits_change_and_reset(
    fresh_state: CardState, card_config: CardConfig
) -> None:
    host = _host(fresh_state, card_config, "non-atomic-pin-write")
    writes: list[tuple[int, bytes]] = []
    store = host.card.store

    def spy(point: str, phase: str) -> None:
        if phase == "after":
            pin = store.state.pins["jpki-auth"]
            writes.append((pin.remaining, pin.value))

    host.card.write_hook = spy
    host.select_pin("jpki-auth")
    assert host.verify("jpki-auth") == SW.OK
    writes.clear()
    old = store.state.pins["jpki-auth"].value
    assert host.sw(C.change_reference_data(b"9876")) == SW.OK  # answers like a good card...
    # ...but in three writes: counter, a half-written PIN (neither old nor new), the new PIN
    assert [v for _, v in writes] == [old, b"98" + old[2:], b"9876"]
    writes.clear()
    code = fresh_state.reset_codes["window"]
    host.verify("jpki-auth", b"0000")
    writes.clear()
    assert host.sw(C.reset_retry_counter(code, b"1357")) == SW.OK
    assert writes[0] == (3, b"9876")  # the counter refilled while the old PIN is still set
    assert writes[-1] == (3, b"1357")


def _verify_time(host: Host, value: bytes, n: int = 15) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        host.verify("kenkaku-a", value)
        times.append(time.perf_counter() - t)
        host.verify("kenkaku-a")  # back to the maximum
    return statistics.median(times)


def test_early_exit_compare_leaks_the_matching_prefix(
    fresh_state: CardState, card_config: CardConfig
) -> None:
    host = _host(fresh_state, card_config, "early-exit-compare:per_byte_delay_us=200")
    host.select_pin("kenkaku-a")  # 12 digits: a long secret makes the effect plain
    right = host.secrets["kenkaku-a"]
    first_wrong = (b"0" if right[:1] != b"0" else b"1") + right[1:]
    last_wrong = right[:-1] + (b"0" if right[-1:] != b"0" else b"1")
    early, late = _verify_time(host, first_wrong), _verify_time(host, last_wrong)
    # 11 more compared bytes × 200 µs = 2.2 ms; demand at least half of it
    assert late - early > 0.0011, (early, late)


def test_faithful_compare_does_not_leak_the_prefix(
    card: EmulatedCard, card_config: CardConfig
) -> None:
    host = Host(card, card_config)
    host.select_pin("kenkaku-a")
    right = host.secrets["kenkaku-a"]
    first_wrong = (b"0" if right[:1] != b"0" else b"1") + right[1:]
    last_wrong = right[:-1] + (b"0" if right[-1:] != b"0" else b"1")
    early, late = _verify_time(host, first_wrong), _verify_time(host, last_wrong)
    assert abs(late - early) < 0.0005, (early, late)  # well under the defect's 2.2 ms


def test_fixed_delay(fresh_state: CardState, card_config: CardConfig) -> None:
    host = _host(fresh_state, card_config, "fixed-delay:fixed_delay_ms=20")
    t = time.perf_counter()
    host.select_app("jpki")
    assert time.perf_counter() - t >= 0.019


def test_parse_profile() -> None:
    assert parse_profile("faithful") is PROFILES["faithful"]
    p = parse_profile("early-exit-compare:per_byte_delay_us=7.5")
    assert p.early_exit_compare and p.per_byte_delay_us == 7.5
    assert "per_byte_delay_us=7.5" in p.describe()
    for bad, message in [
        ("nonsense", "unknown defect"),
        ("fixed-delay:speed=2", "tunable"),
        ("fixed-delay:fixed_delay_ms=x", "number"),
        ("fixed-delay:fixed_delay_ms=-1", "negative"),
        ("fixed-delay:fixed_delay_ms=nan", "finite"),
        ("fixed-delay:fixed_delay_ms=-inf", "finite"),
        ("early-exit-compare:per_byte_delay_us=inf", "finite"),
        ("early-exit-compare:per_byte_delay_us=1e12", r"at most 10000, got 1e\+12"),
        ("fixed-delay:fixed_delay_ms=60001", "at most 60000"),
    ]:
        with pytest.raises(UnknownDefectError, match=message):
            parse_profile(bad)


@pytest.mark.parametrize(
    "spec",
    [
        "early-exit-compare:per_byte_delay_us=nan",
        "early-exit-compare:per_byte_delay_us=inf",
        "early-exit-compare:per_byte_delay_us=1e12",
        "fixed-delay:fixed_delay_ms=nan",
        "fixed-delay:fixed_delay_ms=1e12",
    ],
)
def test_parameters_that_hung_or_raised(spec: str) -> None:
    """nan and inf were a traceback (int(nan) in the compare) or a card that never answered;
    1e12 µs a byte hung. Each is refused at once, by the CLI too (exit 2, one line)."""
    from tests.bounded import measure

    defect, cli = measure([("defect", spec), ("cli", "smoke", "--defect", spec)])
    defect.check("UnknownDefectError", lines=1)
    cli.check("exit 2", lines=1)
    assert cli.text.startswith("pinloop: ") and spec.split("=")[0].split(":")[1] in cli.text


def test_a_blocked_pin_that_lets_the_right_pin_through_is_reported_the_right_way_round() -> None:
    from pathlib import Path

    from harness.emulator import load_card_config, parse_profile
    from harness.run.expect import ExpectationFailed
    from harness.run.runner import Runner
    from harness.scenario import load_scenarios
    from harness.targets import InProcessTarget

    path = Path(__file__).resolve().parent.parent / "scenarios" / "blocked-answers-alike.pin.yaml"
    scenario = load_scenarios(path, JPKI)[0]
    target = InProcessTarget(load_card_config(), parse_profile("ok-when-blocked"))
    with pytest.raises(ExpectationFailed) as err:
        Runner(target, scenario).run()
    assert err.value.expected == "one and the same answer to every value"
    assert "right → 9000" in err.value.actual and "→ 6984" in err.value.actual
