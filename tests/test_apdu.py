"""The APDU model: every ISO case, short and extended, status words, masking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.apdu import CommandAPDU, ResponseAPDU, from_hex, render_command, render_raw_command
from harness.apdu import commands as C
from harness.apdu import sw as SW
from harness.errors import APDUFormatError


@pytest.mark.parametrize(
    ("hexstr", "case", "data_len", "le", "extended"),
    [
        ("00A4040C", 1, 0, None, False),
        ("00B0000000", 2, 0, 256, False),
        ("00B0000010", 2, 0, 16, False),
        ("00A4040C0AD392F000260100000001", 3, 10, None, False),
        ("802A0080033031320" + "0", 4, 3, 256, False),
        ("00B00000000000", 2, 0, 65536, True),
        ("00B00000000800", 2, 0, 2048, True),
        ("00200080000004" + "31323334", 3, 4, None, True),
        ("802A008000000331323300 00".replace(" ", ""), 4, 3, 65536, True),
        ("802A0080000003313233 0100".replace(" ", ""), 4, 3, 256, True),
    ],
)
def test_parse_every_case(
    hexstr: str, case: int, data_len: int, le: int | None, extended: bool
) -> None:
    cmd = CommandAPDU.from_hex(hexstr)
    assert (cmd.case, len(cmd.data), cmd.le, cmd.is_extended) == (case, data_len, le, extended)
    assert cmd.to_bytes() == from_hex(hexstr)


@pytest.mark.parametrize(
    "hexstr",
    [
        "",
        "00",
        "00A404",
        "00A4040C05D392",  # Lc 5, 2 data bytes
        "00A4040C02D392F0F0F0",  # Lc 2, 4 data bytes
        "00B0000000 00".replace(" ", ""),  # 6 bytes with B1 = 00
        "00A4040C0000",  # truncated extended length
        "00A4040C00000331",  # extended Lc 3, 1 data byte
        "00A4040C000003313233340000",  # extended Lc 3, 3 trailing bytes
        "00A4040C0000000000",  # extended Lc 0
    ],
)
def test_malformed_commands_raise(hexstr: str) -> None:
    with pytest.raises(APDUFormatError):
        CommandAPDU.from_hex(hexstr)


def test_seven_bytes_with_zero_b1_is_case_2e() -> None:
    assert CommandAPDU.from_hex("00A4040C000000").le == 65536


@pytest.mark.parametrize("text", ["0", "zz", "00 A4 0"])
def test_bad_hex_is_a_clear_error(text: str) -> None:
    with pytest.raises(APDUFormatError, match="hex"):
        from_hex(text)


def test_field_ranges_checked() -> None:
    with pytest.raises(APDUFormatError):
        CommandAPDU(0x100, 0, 0, 0)
    with pytest.raises(APDUFormatError):
        CommandAPDU(0, 0, 0, 0, le=0)
    with pytest.raises(APDUFormatError):
        CommandAPDU(0, 0, 0, 0, b"x" * 65536)
    with pytest.raises(APDUFormatError):
        ResponseAPDU.parse(b"\x90")


commands = st.builds(
    CommandAPDU,
    cla=st.integers(0, 255),
    ins=st.integers(0, 255),
    p1=st.integers(0, 255),
    p2=st.integers(0, 255),
    data=st.one_of(st.binary(max_size=300), st.binary(min_size=250, max_size=700)),
    le=st.one_of(st.none(), st.integers(1, 65536)),
    extended=st.booleans(),
)


@given(commands)
def test_encoding_round_trips(cmd: CommandAPDU) -> None:
    again = CommandAPDU.parse(cmd.to_bytes())
    assert (again.cla, again.ins, again.p1, again.p2, again.data, again.le) == (
        cmd.cla,
        cmd.ins,
        cmd.p1,
        cmd.p2,
        cmd.data,
        cmd.le,
    )
    assert again.is_extended == cmd.is_extended


@given(st.binary(max_size=600))
def test_parse_never_raises_anything_but_format_errors(raw: bytes) -> None:
    try:
        cmd = CommandAPDU.parse(raw)
    except APDUFormatError:
        return
    assert cmd.to_bytes() == raw


def test_response_fields() -> None:
    r = ResponseAPDU.parse(bytes.fromhex("0102 63C2"))
    assert (r.data, r.sw, r.sw1, r.sw2, r.ok) == (b"\x01\x02", 0x63C2, 0x63, 0xC2, False)
    assert r.to_bytes() == bytes.fromhex("010263C2")


def test_status_word_table() -> None:
    assert SW.retries(2) == 0x63C2 and SW.retries_left(0x63C2) == 2
    assert SW.retries_left(0x6984) is None
    assert SW.is_card_status_word(0x63C0) and SW.is_card_status_word(0x6984)
    assert not SW.is_card_status_word(0x6F00)
    assert "blocked" in SW.describe(0x6984)
    assert "2 tries left" in SW.describe(0x63C2)
    assert "not used" in SW.describe(0x6F00)
    assert SW.is_card_status_word(SW.MEMORY_FAILURE) and SW.MEMORY_FAILURE == 0x6581
    assert SW.describe(0x6581) == "6581 (memory failure (the card could not write its NVM))"
    assert SW.classify(0x63C1) is SW.SWClass.WARNING_NVM_CHANGED
    assert SW.classify(0x6700) is SW.SWClass.ERROR_NVM_UNCHANGED
    assert SW.classify(0x6110) is SW.SWClass.TRANSPORT
    for code in SW.CARD_STATUS_WORDS:
        info = SW.lookup(code)
        assert info is not None and info.name and info.meaning


@pytest.mark.parametrize(
    "cmd",
    [
        C.verify(b"1234"),
        C.change_reference_data(b"5678"),
        C.change_key(b"5678"),
        C.reset_retry_counter(b"RESETCODE", b"5678"),
        CommandAPDU(0x00, 0x20, 0x00, 0x80, b"1234" * 100),  # extended
    ],
)
def test_pin_material_is_masked(cmd: CommandAPDU) -> None:
    text = render_command(cmd)
    assert "31 32 33 34" not in text and "35 36 37 38" not in text
    assert "**" in text
    assert text.startswith(f"{cmd.cla:02X} {cmd.ins:02X} {cmd.p1:02X} {cmd.p2:02X}")
    assert render_command(cmd, reveal=True) == cmd.to_bytes().hex(" ").upper()


def test_non_secret_commands_are_shown() -> None:
    cmd = C.select_df(bytes.fromhex("D392F000260100000001"))
    assert render_command(cmd) == "00 A4 04 0C 0A D3 92 F0 00 26 01 00 00 00 01"
    assert render_command(C.pin_status()) == "00 20 00 80"


def test_malformed_verify_is_masked_too() -> None:
    raw = bytes.fromhex("0020008009 31323334")  # Lc 9 but 4 bytes: does not parse
    assert "31" not in render_raw_command(raw)
    assert render_raw_command(bytes.fromhex("00B0000005AA")) == "00 B0 00 00 05 AA"


def test_verify_builder_refuses_empty_pin() -> None:
    with pytest.raises(ValueError, match="status query"):
        C.verify(b"")
