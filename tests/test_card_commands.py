"""Every status-word path of the emulated card, command by command."""

from __future__ import annotations

import pytest

from harness.apdu import commands as C
from harness.apdu import sw as SW
from harness.apdu.model import CommandAPDU
from harness.cards.jpki.layout import APPLICATIONS, LAYOUT, PINS
from harness.emulator import EmulatedCard, MemoryStore
from harness.errors import CardNotPowered
from tests.support import Host

JPKI = "D392F000260100000001"

# -- dispatch: CLA, INS, length ------------------------------------------------------------


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("00 CA 00 42 00", SW.INS_NOT_SUPPORTED),  # GET DATA not emulated
        ("00 88 00 80 04 01020304 00", SW.INS_NOT_SUPPORTED),  # INTERNAL AUTHENTICATE
        ("80 20 00 80", SW.INS_NOT_SUPPORTED),  # VERIFY exists only with CLA 00
        ("00 2A 00 80 03 010203 00", SW.INS_NOT_SUPPORTED),  # signing exists only with CLA 80
        ("A0 A4 04 0C 02 D392", SW.CLA_NOT_SUPPORTED),
        ("FF A4 04 0C 02 D392", SW.CLA_NOT_SUPPORTED),
        ("84 A4 04 0C 02 D392", SW.CLA_NOT_SUPPORTED),
        ("01 A4 04 0C 02 D392", SW.LOGICAL_CHANNEL_NOT_SUPPORTED),
        ("0C A4 04 0C 02 D392", SW.SM_NOT_SUPPORTED),
        ("10 A4 04 0C 02 D392", SW.CHAINING_NOT_SUPPORTED),
        ("00 A4 04 0C 05 D392", SW.WRONG_LENGTH),  # Lc does not match: unparseable
        ("00 A4", SW.WRONG_LENGTH),
    ],
)
def test_dispatch(host: Host, apdu: str, sw: int) -> None:
    raw = bytes.fromhex(apdu.replace(" ", ""))
    assert host.card.transmit(raw) == sw.to_bytes(2, "big")


def test_commands_need_power(card: EmulatedCard) -> None:
    card.power_off()
    with pytest.raises(CardNotPowered):
        card.transmit(bytes.fromhex("00A4040C0AD392F000260100000001"))


# -- SELECT ---------------------------------------------------------------------------------


@pytest.mark.parametrize("app", APPLICATIONS, ids=lambda a: a.id)
def test_select_each_application_by_full_name(host: Host, app: object) -> None:
    assert host.sw(C.select_df(app.aid)) == SW.OK  # type: ignore[attr-defined]
    assert host.card.selected_app == app.id  # type: ignore[attr-defined]


def test_select_by_partial_name_takes_the_first_match(host: Host) -> None:
    assert host.sw(C.select_df(bytes.fromhex("D392F0"))) == SW.OK
    assert host.card.selected_app == "jpki"
    assert host.sw(C.select_df(bytes.fromhex("D39210003100010104"))) == SW.OK
    assert host.card.selected_app == "kenhojo"  # ...0408 is the first of 0408/0402/0401


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("00 A4 04 0C 0A D392F000260100000002", SW.FILE_NOT_FOUND),
        ("00 A4 04 0C 03 A00000", SW.FILE_NOT_FOUND),
        ("00 A4 04 0C 11 D392F000260100000001 00000000000000", SW.WRONG_LENGTH),
        ("00 A4 04 0C", SW.WRONG_LENGTH),
        ("00 A4 04 00 0A D392F000260100000001", SW.INCORRECT_P1P2),  # FCI not supported
        ("00 A4 04 0C 0A D392F000260100000001 00", SW.WRONG_LENGTH),  # Le with P2 0C
        ("00 A4 09 0C 02 0018", SW.INCORRECT_P1P2),  # path from current DF: not on this card
        ("00 A4 08 0C 02 0018", SW.INCORRECT_P1P2),
        ("00 A4 02 0C 02 0018", SW.FILE_NOT_FOUND),  # no DF selected yet
        ("00 A4 00 0C", SW.INCORRECT_P1P2),  # MF right after a cold reset
    ],
)
def test_select_errors(host: Host, apdu: str, sw: int) -> None:
    assert host.sw(apdu) == sw


def test_select_ef(host: Host) -> None:
    host.select_app("jpki")
    assert host.sw("00 A4 02 0C 02 0018") == SW.OK
    assert host.sw("00 A4 02 0C 02 0011") == SW.FILE_NOT_FOUND  # 0011 is 入力補助's, not JPKI's
    assert host.sw("00 A4 02 0C 02 3F00") == SW.FILE_NOT_FOUND
    assert host.sw("00 A4 02 0C 01 00") == SW.WRONG_LENGTH
    assert host.sw("00 A4 02 0C 03 001800") == SW.WRONG_LENGTH
    assert host.sw("00 A4 00 0C") == SW.OK  # MF with an application selected: stays
    assert host.card.selected_app == "jpki"


@pytest.mark.parametrize("app_id", sorted(LAYOUT))
def test_every_ef_of_the_layout_is_selectable(host: Host, app_id: str) -> None:
    layout = LAYOUT[app_id]
    for fid in list(layout.pins) + list(layout.files):
        host.select_file(app_id, fid)


# -- VERIFY ---------------------------------------------------------------------------------


def test_verify_paths(host: Host) -> None:
    host.select_pin("jpki-auth")
    assert host.sw(C.pin_status()) == SW.retries(3)
    assert host.verify("jpki-auth", b"0000") == SW.retries(2)
    assert host.verify("jpki-auth") == SW.OK
    # the query answers 63 Cx even right after a correct VERIFY (hamano's trace, PR #959)
    assert host.sw(C.pin_status()) == SW.retries(3)
    assert host.card.verified == {"jpki-auth"}


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("00 20 01 80 04 31323334", SW.INCORRECT_P1P2),
        ("00 20 00 00 04 31323334", SW.INCORRECT_P1P2),  # global reference
        ("00 20 00 81 04 31323334", SW.FILE_NOT_FOUND),  # SFI 1 is no PIN... 0001 is a cert
        ("00 20 00 C0 04 31323334", SW.INCORRECT_P1P2),
        ("00 20 00 80 04 31323334 00", SW.WRONG_LENGTH),  # case 4
        ("00 20 00 80 00", SW.WRONG_LENGTH),  # case 2
        ("00 20 00 80 03 313233", SW.WRONG_LENGTH),  # too short for a 4-digit PIN
        ("00 20 00 80 05 3132333435", SW.WRONG_LENGTH),
        ("00 20 00 9E 04 31323334", SW.FILE_NOT_FOUND),  # SFI 1E: no such EF
    ],
)
def test_verify_errors_cost_no_try(host: Host, apdu: str, sw: int) -> None:
    host.select_pin("jpki-auth")
    if apdu.startswith("00 20 00 81"):
        sw = SW.INCOMPATIBLE_FILE_STRUCTURE  # EF 0001 exists in JPKI: a certificate
    assert host.sw(apdu) == sw
    assert host.tries() == 3


def test_verify_without_a_current_ef(host: Host) -> None:
    assert host.sw(C.verify(b"1234")) == SW.FILE_NOT_FOUND  # no application
    host.select_app("jpki")
    assert host.sw(C.verify(b"1234")) == SW.NO_CURRENT_EF
    host.select_file("jpki", 0x000A)
    assert host.sw(C.verify(b"1234")) == SW.INCOMPATIBLE_FILE_STRUCTURE


def test_verify_by_sfi_needs_no_select(host: Host) -> None:
    host.select_app("jpki")
    assert host.sw(C.pin_status(sfi=0x18)) == SW.retries(3)
    assert host.sw(C.verify(b"9999", sfi=0x18)) == SW.retries(2)
    assert host.sw(C.pin_status(sfi=0x1B)) == SW.retries(5)
    assert host.sw(C.verify(host.secrets["jpki-auth"], sfi=0x18)) == SW.OK
    assert host.sw(C.pin_status(sfi=0x18)) == SW.retries(3)


def test_blocked_pin_answers_6984_to_right_and_wrong_and_63c0_to_the_query(host: Host) -> None:
    host.select_pin("jpki-auth")
    assert [host.verify("jpki-auth", b"0000") for _ in range(3)] == [0x63C2, 0x63C1, 0x63C0]
    assert host.verify("jpki-auth") == SW.REFERENCE_DATA_BLOCKED
    assert host.verify("jpki-auth", b"0000") == SW.REFERENCE_DATA_BLOCKED
    assert host.sw(C.pin_status()) == SW.retries(0)
    assert host.card.verified == frozenset()


def test_lower_case_sign_password_costs_a_try(host: Host) -> None:
    host.select_pin("jpki-sign")
    right = host.secrets["jpki-sign"]
    assert host.verify("jpki-sign", right.lower()) == SW.retries(4)
    assert host.verify("jpki-sign", right) == SW.OK


@pytest.mark.parametrize("length", [0, 5, 17])
def test_sign_password_lengths_outside_6_16_cost_no_try(host: Host, length: int) -> None:
    host.select_pin("jpki-sign")
    if length == 0:
        assert host.sw(C.pin_status()) == SW.retries(5)
    else:
        assert host.verify("jpki-sign", b"A" * length) == SW.WRONG_LENGTH
    assert host.tries() == 5


def test_reselection_clears_the_verified_state(host: Host) -> None:
    host.select_pin("jpki-auth")
    assert host.verify("jpki-auth") == SW.OK
    assert host.sw(C.select_ef(0x0017)) == SW.OK  # another EF of the same DF keeps it
    assert host.card.verified == {"jpki-auth"}
    host.select_app("jpki")  # the same DF again: logged out (OpenSC's jpki_logout)
    assert host.card.verified == frozenset()
    host.select_pin("jpki-auth")
    assert host.verify("jpki-auth") == SW.OK
    host.select_app("kenhojo")
    assert host.card.verified == frozenset()


def test_power_cycle_clears_the_verified_state(host: Host) -> None:
    host.select_pin("jpki-sign")
    assert host.verify("jpki-sign") == SW.OK
    host.card.power_off()
    host.card.power_on()
    assert host.card.verified == frozenset() and host.card.selected_app is None


# -- CHANGE ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pin_id", "builder"),
    [
        ("jpki-auth", C.change_reference_data),
        ("jpki-sign", C.change_reference_data),
        ("kenhojo-pin", C.change_reference_data),
        ("juki-pin", C.change_key),
        ("common-pin", C.change_key),
    ],
)
def test_change_paths(host: Host, pin_id: str, builder: object) -> None:
    make = builder  # type: ignore[assignment]
    new = b"NEWPASS9" if pin_id == "jpki-sign" else b"9876"
    other = C.change_key if make is C.change_reference_data else C.change_reference_data
    host.select_pin(pin_id)
    assert host.sw(make(new)) == SW.SECURITY_STATUS_NOT_SATISFIED  # type: ignore[operator]
    assert host.verify(pin_id) == SW.OK
    assert host.sw(other(new)) == SW.INCOMPATIBLE_FILE_STRUCTURE  # the other command family
    assert host.sw(make(b"12")) == SW.WRONG_LENGTH  # type: ignore[operator]
    bad_charset = b"abcdef" if pin_id == "jpki-sign" else b"12a4"
    assert host.sw(make(bad_charset)) == SW.INCORRECT_DATA  # type: ignore[operator]
    assert host.sw(make(new)) == SW.OK  # type: ignore[operator]
    host.select_pin(pin_id)
    assert host.verify(pin_id) == SW.retries(host.card.pin_state(pin_id).max_tries - 1)
    assert host.verify(pin_id, new) == SW.OK


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("00 24 00 80 08 3132333435363738", SW.INCORRECT_P1P2),  # old ‖ new: not supported
        ("00 24 01 00 04 35363738", SW.INCORRECT_P1P2),
        ("00 24 01 80", SW.WRONG_LENGTH),
        ("00 24 01 80 04 35363738 00", SW.WRONG_LENGTH),
        ("80 32 01 80 04 35363738", SW.INCORRECT_P1P2),
    ],
)
def test_change_errors(host: Host, apdu: str, sw: int) -> None:
    host.select_pin("jpki-auth")
    assert host.verify("jpki-auth") == SW.OK
    assert host.sw(apdu) == sw
    assert host.card.pin_state("jpki-auth").value == host.secrets["jpki-auth"]


@pytest.mark.parametrize(
    "pin_id", ["kenhojo-a", "kenhojo-b", "kenkaku-a", "kenkaku-b", "kenkaku-birth"]
)
def test_card_face_codes_cannot_be_changed(host: Host, pin_id: str) -> None:
    host.select_pin(pin_id)
    assert host.verify(pin_id) == SW.OK
    value = host.secrets[pin_id]
    assert host.sw(C.change_reference_data(value)) == SW.INCOMPATIBLE_FILE_STRUCTURE
    assert host.sw(C.change_key(value)) == SW.INCOMPATIBLE_FILE_STRUCTURE


def test_a_locked_pin_cannot_be_changed(host: Host) -> None:
    host.select_pin("kenhojo-pin")
    for _ in range(3):
        host.verify("kenhojo-pin", b"0000")
    assert host.sw(C.change_reference_data(b"5555")) == SW.REFERENCE_DATA_BLOCKED


# -- READ BINARY / READ RECORD -------------------------------------------------------------


def test_read_binary_short_chunks_and_extended(host: Host) -> None:
    host.select_file("jpki", 0x000A)
    cert = host.card.store.state.contents["jpki/auth-cert"]
    assert len(cert) > 256
    chunks = b""
    offset = 0
    while True:
        r = host.send(C.read_binary(offset, 256))
        if r.sw == SW.OFFSET_OUT_OF_RANGE:
            break
        assert r.sw == SW.OK
        chunks += r.data
        offset += len(r.data)
    assert chunks == cert
    whole = host.send(C.read_binary(0, 65536))
    assert whole.sw == SW.OK and whole.data == cert
    assert host.send(C.read_binary(0, 4)).data == cert[:4]
    assert host.send(C.read_binary(len(cert) - 3, 256)).data == cert[-3:]  # past the end


def test_read_binary_paths(host: Host) -> None:
    host.select_app("jpki")
    assert host.sw(C.read_binary(0, 4)) == SW.NO_CURRENT_EF
    r = host.send(C.read_binary(0, 32, sfi=0x06))  # token info by SFI
    assert r.sw == SW.OK and r.data.startswith(b"JPKIAPICCTOKEN2 ")
    assert host.send(C.read_binary(0, 3)).data == bytes.fromhex("8F8F00")[:0] + r.data[:3]
    assert host.sw(C.read_binary(0x7FFF, 1)) == SW.OFFSET_OUT_OF_RANGE
    assert host.sw("00 B0 00 00") == SW.WRONG_LENGTH  # no Le
    assert host.sw("00 B0 00 00 01 00 00") == SW.WRONG_LENGTH  # data field
    assert host.sw("00 B0 A6 00 10") == SW.INCORRECT_P1P2  # SFI with bits 6-7 set
    assert host.sw("00 B0 80 00 10") == SW.INCORRECT_P1P2  # SFI 0
    assert host.sw("00 B0 9E 00 10") == SW.FILE_NOT_FOUND
    assert host.sw(C.read_binary(0, 4, sfi=0x18)) == SW.INCOMPATIBLE_FILE_STRUCTURE  # a PIN
    assert host.sw(C.read_binary(0, 4, sfi=0x17)) == SW.INCOMPATIBLE_FILE_STRUCTURE  # a key


def test_sign_certificate_needs_the_sign_password(host: Host) -> None:
    host.select_file("jpki", 0x0001)
    assert host.sw(C.read_binary(0, 4)) == SW.SECURITY_STATUS_NOT_SATISFIED  # OpenSC #3169
    assert host.sw(C.select_ef(0x001B)) == SW.OK
    assert host.verify("jpki-sign") == SW.OK
    r = host.send(C.read_binary(0, 4, sfi=0x01))
    assert r.sw == SW.OK and r.data[:2] == b"\x30\x82"
    host.select_file("jpki", 0x0001)  # re-selecting the DF logged out
    assert host.sw(C.read_binary(0, 4)) == SW.SECURITY_STATUS_NOT_SATISFIED


@pytest.mark.parametrize(
    ("fid", "opens", "closed"),
    [
        (0x0001, ["kenhojo-pin", "kenhojo-a"], ["kenhojo-b"]),
        (0x0002, ["kenhojo-pin", "kenhojo-b"], ["kenhojo-a"]),
        (0x0003, ["kenhojo-pin", "kenhojo-a", "kenhojo-b"], []),
    ],
)
def test_kenhojo_access_split(host: Host, fid: int, opens: list[str], closed: list[str]) -> None:
    for pin_id in opens + closed:
        host.select_pin(pin_id)
        assert host.verify(pin_id) == SW.OK
        expected = SW.OK if pin_id in opens else SW.SECURITY_STATUS_NOT_SATISFIED
        assert host.sw(C.read_binary(0, 17, sfi=fid)) == expected, pin_id


def test_kenhojo_files_have_their_documented_shapes(host: Host) -> None:
    host.select_pin("kenhojo-pin")
    assert host.verify("kenhojo-pin") == SW.OK
    number = host.send(C.read_binary(0, 256, sfi=0x01)).data
    assert len(number) == 17 and number[:3] == b"\xff\x10\x0c"
    assert number[3:15] == host.config.identity.my_number.encode()
    assert len(host.send(C.read_binary(0, 65536, sfi=0x03)).data) == 336
    assert len(host.send(C.read_binary(0, 65536, sfi=0x04)).data) == 568
    assert len(host.send(C.read_binary(0, 65536, sfi=0x05)).data) == 256


def test_read_record(host: Host) -> None:
    host.select_app("common")
    r = host.send(C.read_record(1, sfi=1))
    assert r.sw == SW.OK and r.data[:2] == b"\x01\x1c" and len(r.data) == 30
    assert host.sw(C.read_record(2, sfi=1)) == SW.RECORD_NOT_FOUND
    assert host.sw(C.read_record(0, sfi=1)) == SW.INCORRECT_P1P2
    assert host.sw("00 B2 01 0C") == SW.WRONG_LENGTH
    assert host.sw("00 B2 01 0D 00") == SW.INCORRECT_P1P2
    assert host.sw(C.read_record(1, sfi=0x1C)) == SW.INCOMPATIBLE_FILE_STRUCTURE
    host.select_app("jpki")
    assert host.sw(C.read_record(1, sfi=0x0A)) == SW.INCOMPATIBLE_FILE_STRUCTURE


# -- GET CHALLENGE ----------------------------------------------------------------------------


def test_get_challenge(host: Host) -> None:
    a, b = host.send(C.get_challenge(8)), host.send(C.get_challenge(8))
    assert a.sw == b.sw == SW.OK and len(a.data) == 8 and a.data != b.data
    assert len(host.send("00 84 00 00 00").data) == 256
    assert host.sw("00 84 00 00") == SW.WRONG_LENGTH
    assert host.sw("00 84 01 00 08") == SW.INCORRECT_P1P2
    assert host.sw("00 84 00 00 00 00 08") == SW.CONDITIONS_NOT_SATISFIED  # extended


# -- models ----------------------------------------------------------------------------------


def test_models_and_extended_length(fresh_state: object) -> None:
    from harness.emulator.models import MODELS

    short = EmulatedCard(MemoryStore(fresh_state), model="jpki-short")  # type: ignore[arg-type]
    assert short.power_on() == MODELS["jpki-short"].atr
    host_cmd = CommandAPDU(0x00, 0xA4, 0x04, 0x0C, bytes.fromhex(JPKI), extended=True)
    assert short.transmit(host_cmd.to_bytes()) == b"\x67\x00"
    assert short.transmit(C.select_df(bytes.fromhex(JPKI)).to_bytes()) == b"\x90\x00"
    default = EmulatedCard(MemoryStore(fresh_state))  # type: ignore[arg-type]
    assert default.power_on() == bytes.fromhex("3BE000FF8131FE4514")
    assert default.transmit(host_cmd.to_bytes()) == b"\x90\x00"
    assert EmulatedCard(MemoryStore(fresh_state), model="jpki-extended").power_on() == (  # type: ignore[arg-type]
        bytes.fromhex("3BDA13FF8131FB468012392F31C173C601C03B")
    )
    assert MODELS["jpki-contactless"].atr[:4] == bytes.fromhex("3B888001")


def test_layout_is_consistent() -> None:
    assert len(PINS) == 10
    for layout in LAYOUT.values():
        assert not set(layout.pins) & set(layout.files)
        assert all(1 <= fid <= 0x1E for fid in list(layout.pins) + list(layout.files))
