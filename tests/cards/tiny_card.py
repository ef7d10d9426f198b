"""An emulator of the tiny test card (:mod:`tests.cards.tiny`), built from the generic parts
only: the card profile, APDUs and status words. It is what ``--pinloop-card-profile
tests.cards.tiny:PROFILE`` runs the emulated targets on (the profile names :func:`emulation`).

ISO 7816-4 behaviour of its one PIN: SELECT of the application by AID (``00 A4 04 0C``), of
the PIN's EF by FID (``00 A4 02 0C 0001``); the empty VERIFY answers ``63 Cx`` and spends
nothing; a wrong VERIFY spends a try and answers ``63 C(n-1)``; a VERIFY of a blocked PIN
answers ``69 83``; a correct one restores the maximum; CHANGE REFERENCE DATA (``00 24 00
80``) needs the PIN verified and restores the maximum too. A wrong VERIFY writes the counter
before the comparison (a cut there cannot save the try).

Defects (``--pinloop-defect``): ``never-decrements`` (a wrong VERIFY answers the counter
unchanged and spends nothing).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import reduce

from harness.apdu import sw as SW
from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.cards.emulated import WriteHook
from harness.cards.profile import CardProfile
from harness.errors import APDUFormatError, CardNotPowered, ConfigError
from tests.cards.tiny import PROFILE

_HISTORICAL = b"\x80TINYCRD"
_BODY = bytes((0x88, 0x80, 0x01)) + _HISTORICAL  # T0 (TD1, 8 bytes), TD1 (T=0), TD2 (T=1)
#: the tiny card's ATR (T=0 and T=1, eight historical bytes, its check byte)
ATR = b"\x3b" + _BODY + bytes((reduce(lambda a, b: a ^ b, _BODY),))

BLOCKED = 0x6983  # ISO 7816-4: authentication method blocked
DEFECTS = ("faithful", "never-decrements")

_SPEC = PROFILE.pins[0]
_AID = PROFILE.applications[0].aid


@dataclasses.dataclass
class PinState:
    """The card's NVM: the PIN and its retry counter."""

    value: bytes
    remaining: int
    max_tries: int


class TinyCard:
    """One tiny card. Not thread-safe: one host talks to it at a time, like a real card."""

    card_profile: CardProfile = PROFILE
    label = "tiny"
    description = "tiny test card (emulated)"

    def __init__(self, state: PinState, *, decrements: bool = True) -> None:
        self.state = state
        self.decrements = decrements
        self.write_hook: WriteHook | None = None
        self.powered = False
        self.apdus = 0
        self._app = False
        self._ef = False
        self._verified: set[str] = set()

    # -- power ------------------------------------------------------------------------
    @property
    def atr(self) -> bytes:
        return ATR

    def power_on(self) -> bytes:
        self._clear_ram()
        self.powered = True
        return ATR

    def reset(self) -> bytes:
        return self.power_on()

    def power_off(self) -> None:
        self._clear_ram()
        self.powered = False

    def _clear_ram(self) -> None:
        self._app = self._ef = False
        self._verified.clear()

    @property
    def verified(self) -> frozenset[str]:
        return frozenset(self._verified)

    # -- APDUs ------------------------------------------------------------------------
    def transmit(self, raw: bytes) -> bytes:
        self.apdus += 1
        if not self.powered:
            raise CardNotPowered("the card is not powered (power_on first)")
        try:
            cmd = CommandAPDU.parse(raw)
        except APDUFormatError:
            return SW.WRONG_LENGTH.to_bytes(2, "big")
        return self.process(cmd).to_bytes()

    def process(self, cmd: CommandAPDU) -> ResponseAPDU:
        if cmd.cla != 0x00:
            return ResponseAPDU(b"", SW.CLA_NOT_SUPPORTED)
        if cmd.ins == 0xA4:
            return self._select(cmd)
        if cmd.ins in (0x20, 0x24):
            where = self._pin_addressed(cmd)
            if where is not None:
                return ResponseAPDU(b"", where)
            return self._verify(cmd) if cmd.ins == 0x20 else self._change(cmd)
        return ResponseAPDU(b"", SW.INS_NOT_SUPPORTED)

    def _select(self, cmd: CommandAPDU) -> ResponseAPDU:
        if cmd.p1 == 0x04 and cmd.p2 == 0x0C:
            self._app = cmd.data == _AID
            self._ef = False
            return ResponseAPDU(b"", SW.OK if self._app else SW.FILE_NOT_FOUND)
        if cmd.p1 == 0x02 and cmd.p2 == 0x0C:
            self._ef = self._app and cmd.data == _SPEC.fid.to_bytes(2, "big")
            return ResponseAPDU(b"", SW.OK if self._ef else SW.FILE_NOT_FOUND)
        return ResponseAPDU(b"", SW.INCORRECT_P1P2)

    def _pin_addressed(self, cmd: CommandAPDU) -> int | None:
        """None when ``cmd`` addresses the PIN (the current EF, or its SFI), else the SW."""
        if cmd.p1 != 0x00:
            return SW.INCORRECT_P1P2
        if cmd.p2 == 0x80:
            return None if self._ef else SW.NO_CURRENT_EF
        if cmd.p2 == 0x80 | _SPEC.fid:
            return None if self._app else SW.FILE_NOT_FOUND
        return SW.INCORRECT_P1P2

    def _write(self, point: str, **change: object) -> None:
        if self.write_hook is not None:
            self.write_hook(point, "before")
        self.state = dataclasses.replace(self.state, **change)  # type: ignore[arg-type]
        if self.write_hook is not None:
            self.write_hook(point, "after")

    def _verify(self, cmd: CommandAPDU) -> ResponseAPDU:
        pin = self.state
        if not cmd.data:  # the status query: nothing spent
            return ResponseAPDU(b"", SW.retries(pin.remaining))
        if pin.remaining == 0:
            return ResponseAPDU(b"", BLOCKED)
        if not _SPEC.format.length_ok(cmd.data):
            return ResponseAPDU(b"", SW.WRONG_LENGTH)
        if self.decrements:
            self._write("verify.decrement", remaining=pin.remaining - 1)
        if cmd.data == pin.value:
            self._write("verify.restore", remaining=pin.max_tries)
            self._verified.add(_SPEC.id)
            return ResponseAPDU(b"", SW.OK)
        self._verified.discard(_SPEC.id)
        return ResponseAPDU(b"", SW.retries(self.state.remaining))

    def _change(self, cmd: CommandAPDU) -> ResponseAPDU:
        if self.state.remaining == 0:
            return ResponseAPDU(b"", BLOCKED)
        if _SPEC.id not in self._verified:
            return ResponseAPDU(b"", SW.SECURITY_STATUS_NOT_SATISFIED)
        if not _SPEC.format.length_ok(cmd.data):
            return ResponseAPDU(b"", SW.WRONG_LENGTH)
        if not _SPEC.format.charset_ok(cmd.data):
            return ResponseAPDU(b"", SW.INCORRECT_DATA)
        self._write("change.write", value=bytes(cmd.data), remaining=self.state.max_tries)
        return ResponseAPDU(b"", SW.OK)


class TinyEmulation:
    """A tiny card personalised with PIN ``1234`` and its profile's maximum of tries."""

    def __init__(self, defect: str | None = None) -> None:
        if (defect or "faithful") not in DEFECTS:
            raise ConfigError(
                f"unknown defect {defect!r} of the tiny card: use one of {', '.join(DEFECTS)}"
            )
        tries = _SPEC.max_tries or 3
        self.template = PinState(b"1234", tries, tries)
        self.card = TinyCard(
            dataclasses.replace(self.template), decrements=defect != "never-decrements"
        )

    def secrets(self) -> Mapping[str, bytes]:
        return {_SPEC.id: self.template.value}

    def max_tries(self, pin_id: str) -> int:
        return self.template.max_tries

    def restore(self) -> None:
        self.card.state = dataclasses.replace(self.template)


def emulation(defect: str | None) -> TinyEmulation:
    """The emulator factory the tiny profile names (``CardProfile.emulator``)."""
    return TinyEmulation(defect)
