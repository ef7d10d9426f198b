"""Fuzz targets: each takes a ``FuzzedDataProvider`` (atheris's, or :class:`Bytes` below for
runs without atheris) and raises AssertionError, or any unexpected exception, on a finding.

- :func:`card_walk`: a walk of APDUs and power events against a fresh emulated card, decoded
  from the input, every step checked by :mod:`tests.oracle`. Returns the APDUs sent.
- :func:`responses`: the harness's own parsing of what a card or link sends back: T=0
  ``61xx``/``6Cxx`` handling, response and command APDU parsing, the vpcd stream decoder,
  the status-word table.
- :func:`scenario_text`: a scenario file from the library, mutated; the loader must load it or
  raise ConfigError with a file:line, never anything else.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Protocol

from harness.apdu import commands as C
from harness.apdu import sw as SW
from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.cards.jpki import PROFILE as JPKI
from harness.cards.jpki.layout import APPLICATIONS, APPS_BY_ID, PINS
from harness.emulator import EmulatedCard, MemoryStore, load_card_config, parse_profile, personalise
from harness.errors import APDUFormatError, CardRemoved, ConfigError
from harness.links.vpcd import Decoder, FramingError
from harness.scenario import load_scenarios
from harness.transport.base import exchange
from tests.oracle import check_apdu, check_power

ROOT = Path(__file__).resolve().parents[2]


class Provider(Protocol):
    def ConsumeIntInRange(self, lo: int, hi: int) -> int: ...
    def ConsumeBytes(self, n: int) -> bytes: ...
    def remaining_bytes(self) -> int: ...


class Bytes:
    """The subset of atheris.FuzzedDataProvider the targets use, over plain bytes."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def ConsumeIntInRange(self, lo: int, hi: int) -> int:
        span = hi - lo
        width = (span.bit_length() + 7) // 8
        raw = self.ConsumeBytes(width)
        return lo + (int.from_bytes(raw, "little") % (span + 1) if span else 0)

    def ConsumeBytes(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def remaining_bytes(self) -> int:
        return len(self.data) - self.pos


# -- the card ------------------------------------------------------------------------------
TEMPLATE = personalise(load_card_config())
SECRETS = sorted({p.value for p in TEMPLATE.pins.values()})
CODES = sorted(TEMPLATE.reset_codes.values())
AIDS = [a.aid for a in APPLICATIONS]
CLAS = [0x00, 0x80, 0x01, 0x0C, 0x10, 0xA0, 0xFF]
INSS = [0x20, 0x24, 0x2C, 0x32, 0x2A, 0xA4, 0xB0, 0xB2, 0xCA, 0x84, 0xC0, 0xEE]


class Settings:
    defects = parse_profile("faithful")
    accept_any_pin = False


def _goto(pin_index: int) -> list[bytes]:
    p = PINS[pin_index % len(PINS)]
    return [C.select_df(APPS_BY_ID[p.app].aid).to_bytes(), C.select_ef(p.fid).to_bytes()]


def _value(fdp: Provider) -> bytes:
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:
        return SECRETS[fdp.ConsumeIntInRange(0, len(SECRETS) - 1)]
    if kind == 1:
        return b"0" * fdp.ConsumeIntInRange(1, 18)
    return fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 18)) or b"\x00"


def _apdus(fdp: Provider) -> list[bytes] | str:
    """One action: a list of raw APDUs, or "cold"/"warm" for a power event."""
    op = fdp.ConsumeIntInRange(0, 11)
    sfi = fdp.ConsumeIntInRange(0, 30) or None
    if op == 0:
        return [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))]
    if op in (1, 2):
        return [C.verify(_value(fdp), sfi=sfi if op == 2 else None).to_bytes()]
    if op == 3:
        return [C.pin_status(sfi=sfi if fdp.ConsumeIntInRange(0, 1) else None).to_bytes()]
    if op == 4:
        make = C.change_reference_data if fdp.ConsumeIntInRange(0, 1) else C.change_key
        return [make(_value(fdp)).to_bytes()]
    if op == 5:
        code = CODES[fdp.ConsumeIntInRange(0, len(CODES) - 1)]
        if fdp.ConsumeIntInRange(0, 3) == 0:
            code = b"X" * len(code)
        new = _value(fdp) if fdp.ConsumeIntInRange(0, 1) else b""
        return [CommandAPDU(0x00, 0x2C, fdp.ConsumeIntInRange(0, 3), 0x80, code + new).to_bytes()]
    if op == 6:
        data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
        le = fdp.ConsumeIntInRange(0, 300) or None
        return [
            CommandAPDU(
                CLAS[fdp.ConsumeIntInRange(0, len(CLAS) - 1)],
                INSS[fdp.ConsumeIntInRange(0, len(INSS) - 1)],
                fdp.ConsumeIntInRange(0, 255),
                fdp.ConsumeIntInRange(0, 255),
                data,
                le=le,
                extended=fdp.ConsumeIntInRange(0, 3) == 0,
            ).to_bytes()
        ]
    if op == 7:
        return _goto(fdp.ConsumeIntInRange(0, len(PINS) - 1))
    if op == 8:
        return "cold" if fdp.ConsumeIntInRange(0, 1) else "warm"
    if op == 9:
        return [C.verify(b"0" * fdp.ConsumeIntInRange(4, 16)).to_bytes()] * 10
    if op == 10:
        return [
            C.read_binary(
                fdp.ConsumeIntInRange(0, 0x7FFF),
                fdp.ConsumeIntInRange(1, 65536),
                extended=bool(fdp.ConsumeIntInRange(0, 1)),
            ).to_bytes()
        ]
    return [
        C.select_df(
            AIDS[fdp.ConsumeIntInRange(0, len(AIDS) - 1)][: fdp.ConsumeIntInRange(1, 16)]
        ).to_bytes()
    ]


def card_walk(fdp: Provider) -> int:
    card = EmulatedCard(MemoryStore(TEMPLATE.copy()), defects=Settings.defects)
    if Settings.accept_any_pin:
        card._matches = lambda secret, presented: True  # type: ignore[method-assign]
    card.power_on()
    sent = 0
    for raw in _goto(fdp.ConsumeIntInRange(0, len(PINS) - 1)):
        check_apdu(card, raw)
        sent += 1
    while fdp.remaining_bytes():
        action = _apdus(fdp)
        if isinstance(action, str):
            check_power(card, action == "cold")
            continue
        for raw in action:
            check_apdu(card, raw)
            sent += 1
    return sent


# -- the harness's response parsing ----------------------------------------------------------
def responses(fdp: Provider) -> int:
    answers = [
        fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 12)) for _ in range(fdp.ConsumeIntInRange(1, 80))
    ]
    if fdp.ConsumeIntInRange(0, 1):  # help the search into long 61xx chains
        chain = [b"\x61" + bytes([fdp.ConsumeIntInRange(0, 255)])] * fdp.ConsumeIntInRange(0, 80)
        answers = chain + answers
    pending = list(answers)

    def send(raw: bytes) -> bytes:
        CommandAPDU.parse(raw)  # what the harness sends is always well-formed
        if not pending:
            raise CardRemoved("no more answers")
        return pending.pop(0)

    le = fdp.ConsumeIntInRange(0, 256) or None
    cmd = CommandAPDU(0x00, 0xB0, 0x00, 0x00, le=le)
    try:
        resp = exchange(send, cmd)
    except (APDUFormatError, CardRemoved):
        pass
    else:
        assert 0 <= resp.sw <= 0xFFFF
        first = answers[0]
        if first[-2:-1] not in (b"\x61", b"\x6c"):
            assert resp == ResponseAPDU.parse(first), "a plain answer changed on the way"
        assert resp.sw1 != 0x61, "61xx handed to the caller"
        SW.describe(resp.sw)
        SW.retries_left(resp.sw)
        SW.is_card_status_word(resp.sw)
    # a command APDU that parses encodes back to itself
    raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 270))
    try:
        parsed = CommandAPDU.parse(raw)
    except APDUFormatError:
        pass
    else:
        assert CommandAPDU.parse(parsed.to_bytes()) == parsed, f"round trip of {raw.hex()}"
    # the vpcd stream decoder: messages or a FramingError, whatever the chunks
    decoder = Decoder()
    try:
        while fdp.remaining_bytes():
            for message in decoder.feed(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 40))):
                assert message
    except FramingError:
        pass
    return 1


# -- scenario files ----------------------------------------------------------------------------
LIBRARY = sorted((ROOT / "scenarios").glob("*.pin.yaml"))
TEXTS = [p.read_text(encoding="utf-8") for p in LIBRARY]
TOKENS = [
    "",
    " ",
    "  ",
    ":",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "'",
    '"',
    "#",
    "&a",
    "*a",
    "!!int",
    "pin",
    "value",
    "expect",
    "tries",
    "sw",
    "max-1",
    "9000",
    "63Cx",
    "{pin}",
    "\t",
    "verify",
    "for_each",
    "steps",
    "repeat",
    "-1",
    "1e9",
    "null",
    "~",
    "\\u0000",
    "é",
    "\n",
    "? ",
    "|",
    ">",
    "<<: *a",
    "%YAML 1.2\n---\n",
    "...",
    "0x10",
    # placeholders and numbers the loader refuses (format specs, floats for integers)
    "{pin:>9}",
    "{pin!r}",
    "{pin.x}",
    "{{",
    "2.0",
    ".nan",
    ".inf",
    "&b [*a, *a, *a]",
]
_SCRATCH: list[Path] = []  # made on first use: the card and response targets need none


def mutate(fdp: Provider) -> str:
    lines = TEXTS[fdp.ConsumeIntInRange(0, len(TEXTS) - 1)].splitlines()
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        if not lines:
            lines = [""]
        i = fdp.ConsumeIntInRange(0, len(lines) - 1)
        op = fdp.ConsumeIntInRange(0, 6)
        line = lines[i]
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[fdp.ConsumeIntInRange(0, len(lines) - 1)])
        elif op == 2:  # replace a character range with a token
            a = fdp.ConsumeIntInRange(0, len(line))
            b = fdp.ConsumeIntInRange(a, len(line))
            lines[i] = line[:a] + TOKENS[fdp.ConsumeIntInRange(0, len(TOKENS) - 1)] + line[b:]
        elif op == 3:  # re-indent
            lines[i] = " " * fdp.ConsumeIntInRange(0, 8) + line.lstrip()
        elif op == 4:  # raw bytes from the input
            lines[i] = line + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8)).decode("latin-1")
        elif op == 5:  # swap two lines
            j = fdp.ConsumeIntInRange(0, len(lines) - 1)
            lines[i], lines[j] = lines[j], line
        else:  # nest deeper
            lines[i] = "[" * fdp.ConsumeIntInRange(1, 200) + line
    return "\n".join(lines) + "\n"


def scenario_text(fdp: Provider) -> int:
    text = mutate(fdp)
    if not _SCRATCH:
        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="pinloop-fuzz-")))
    path = _SCRATCH[0] / "fuzzed.pin.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load_scenarios(path, JPKI)
    except ConfigError as exc:
        rendered = exc.render()
        loc = exc.location
        assert loc is not None and loc.line is not None and loc.line >= 1, f"no line: {exc}"
        assert "Traceback" not in rendered and len(rendered.splitlines()) <= 14, rendered
    return 1


TARGETS = {"card": card_walk, "responses": responses, "scenarios": scenario_text}
