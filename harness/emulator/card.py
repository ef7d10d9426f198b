"""The emulated My Number card: an ISO/IEC 7816-4 card OS over a :class:`StateStore`.

Commands (CLA INS):

=========  =====================================================================
``00 A4``  SELECT: DF name (P1 04, prefix allowed), EF id (P1 02), MF (P1 00); P2 0C only
``00 20``  VERIFY: P2 80 (current EF) or 80|SFI; no data = free status query (63 Cx)
``00 24``  CHANGE REFERENCE DATA ``01 80``: new PIN, after VERIFY (JPKI, 入力補助)
``80 32``  JICSAP CHANGE KEY ``00 80``: new PIN, after VERIFY (住基, 共通)
``00 2C``  RESET RETRY COUNTER - the emulator's labelled TEST mechanism, not the real
           card's: P1 00 = reset code ‖ new PIN, P1 01 = reset code only (unblock)
``00 B0``  READ BINARY: offset (P1 b8 = 0) or SFI (P1 b8 = 1); short and extended Le
``00 B2``  READ RECORD (共通AP EF 0001)
``80 2A``  COMPUTE DIGITAL SIGNATURE ``00 80``: PKCS#1 v1.5 over the given DigestInfo
``00 84``  GET CHALLENGE
=========  =====================================================================

VERIFY is ordered to resist tearing: the decremented counter is written (durably, see
:mod:`harness.emulator.state`) *before* the comparison, and a correct PIN then writes the
maximum back. Every NVM write passes a named **write point** (:data:`WRITE_POINTS`) where a
``write_hook`` may cut power, before or after the write, by raising
:class:`~harness.errors.CardPowerLost`. A write the store fails (a full disk) did not happen:
the command answers ``65 81`` (memory failure) and the cause is logged.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from typing import ClassVar

from harness.apdu import sw as SW
from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.cards.jpki import PROFILE
from harness.cards.jpki.layout import (
    APPLICATIONS,
    KIOSK_PARTNER,
    LAYOUT,
    ChangeCommand,
    DFLayout,
    FileKind,
    FileSpec,
    PinChange,
    PinSpec,
)
from harness.cards.profile import CardProfile
from harness.emulator.config import CardConfig
from harness.emulator.defects import PROFILES, DefectProfile
from harness.emulator.keys import MAX_SIGN_INPUT
from harness.emulator.models import MODELS, CardModel
from harness.emulator.personalise import personalise
from harness.emulator.state import MemoryStore, PinState, StateStore
from harness.errors import APDUFormatError, CardNotPowered, CardPowerLost, CardStateError

log = logging.getLogger(__name__)

#: Every place the card writes NVM. Tearing tests cut power before or after each.
WRITE_POINTS: tuple[str, ...] = (
    "verify.decrement",  # VERIFY with data: counter - 1, before the comparison
    "verify.restore",  # VERIFY correct: counter back to its maximum
    "change.write",  # CHANGE REFERENCE DATA / CHANGE KEY: new value and counter, one write
    "reset.write",  # RESET RETRY COUNTER: new value (or not) and counter, one write
    # (defect non-atomic-pin-write: both become three writes through the same point)
    "query.decrement",  # defect query-costs-try only
    "power-on.restore",  # defect power-cycle-resets-counter only
)
#: Not a write: the moment VERIFY has compared the PIN. Passed to the hook (phase "after") so
#: that a tearing oracle knows whether a cut came after the card evaluated the value.
COMPARE_EVENT = "verify.compare"

#: ``hook(write_point, phase)``, phase ``"before"`` or ``"after"``; raise CardPowerLost to tear
WriteHook = Callable[[str, str], None]

FAITHFUL = PROFILES["faithful"]


class _WriteFailed(Exception):
    """The store could not write NVM (logged); the command ends with 65 81."""


def _r(sw: int, data: bytes = b"") -> ResponseAPDU:
    return ResponseAPDU(data, sw)


_OK = _r(SW.OK)


def _busy_wait_ns(ns: int) -> None:
    end = time.perf_counter_ns() + ns
    while time.perf_counter_ns() < end:
        pass


class EmulatedCard:
    """One emulated card. Not thread-safe: one host talks to it at a time, like a real card."""

    #: the card this emulator implements
    card_profile: ClassVar[CardProfile] = PROFILE

    def __init__(
        self,
        store: StateStore,
        *,
        model: str | None = None,
        defects: DefectProfile = FAITHFUL,
        write_hook: WriteHook | None = None,
    ) -> None:
        self.store = store
        self.model: CardModel = MODELS[model or store.state.model]
        self.defects = defects
        self.write_hook = write_hook
        self.powered = False
        #: APDUs the card was sent (powered or not): what a run's record is checked against
        self.apdus = 0
        #: the PIN object the last PIN command addressed (for tests' oracles and traces)
        self.last_pin: str | None = None
        self._df: DFLayout | None = None
        self._ef: int | None = None
        self._verified: set[str] = set()
        self._handlers: dict[tuple[int, int], Callable[[CommandAPDU], ResponseAPDU]] = {
            (0x00, 0xA4): self._select,
            (0x00, 0x20): self._verify,
            (0x00, 0x24): self._change_iso,
            (0x80, 0x32): self._change_jicsap,
            (0x00, 0x2C): self._reset_retry_counter,
            (0x00, 0xB0): self._read_binary,
            (0x00, 0xB2): self._read_record,
            (0x80, 0x2A): self._sign,
            (0x00, 0x84): self._get_challenge,
        }

    @classmethod
    def in_memory(cls, config: CardConfig | None = None, **kwargs: object) -> EmulatedCard:
        """A freshly personalised card whose NVM lives in memory only."""
        from harness.emulator.config import load_card_config

        state = personalise(config or load_card_config())
        return cls(MemoryStore(state), **kwargs)  # type: ignore[arg-type]

    # -- power ------------------------------------------------------------------------
    @property
    def atr(self) -> bytes:
        return self.model.atr

    def power_on(self) -> bytes:
        """Cold reset: RAM state cleared, NVM kept. Returns the ATR."""
        self._clear_ram()
        self.powered = True
        if self.defects.power_cycle_resets_counter:
            for pin_id, pin in self.store.state.pins.items():
                if pin.remaining != pin.max_tries:
                    with contextlib.suppress(_WriteFailed):  # logged; the counter stays
                        self._write("power-on.restore", pin_id, remaining=pin.max_tries)
        return self.atr

    def reset(self) -> bytes:
        """Warm reset: like a cold one for the card OS (RAM state is lost)."""
        return self.power_on()

    def power_off(self) -> None:
        self._clear_ram()
        self.powered = False

    def _clear_ram(self) -> None:
        self._df = None
        self._ef = None
        self._verified.clear()

    # -- state a test may look at (never used to answer commands) -----------------------
    @property
    def label(self) -> str:
        """What logs call this card: its state's name."""
        return self.store.state.name

    @property
    def description(self) -> str:
        """What reports call this card: its state's name and its model."""
        return f"{self.store.state.name} ({self.model.name})"

    @property
    def selected_app(self) -> str | None:
        return self._df.app.id if self._df else None

    @property
    def verified(self) -> frozenset[str]:
        return frozenset(self._verified)

    def pin_state(self, pin_id: str) -> PinState:
        return self.store.state.pins[pin_id]

    # -- APDU entry points --------------------------------------------------------------
    def transmit(self, raw: bytes) -> bytes:
        """Bytes in, bytes out, as a reader would exchange them."""
        self.apdus += 1
        if not self.powered:
            raise CardNotPowered("the card is not powered (power_on first)")
        try:
            cmd = CommandAPDU.parse(raw)
        except APDUFormatError:
            self._delay()
            return SW.WRONG_LENGTH.to_bytes(2, "big")
        return self.process(cmd).to_bytes()

    def process(self, cmd: CommandAPDU) -> ResponseAPDU:
        if not self.powered:
            raise CardNotPowered("the card is not powered (power_on first)")
        self._delay()
        self.last_pin = None
        cla = cmd.cla
        if cla not in (0x00, 0x80):
            if cla & 0xE0 == 0:  # interindustry first form: chaining, SM, channel bits
                if cla & 0x10:
                    return _r(SW.CHAINING_NOT_SUPPORTED)
                if cla & 0x0C:
                    return _r(SW.SM_NOT_SUPPORTED)
                return _r(SW.LOGICAL_CHANNEL_NOT_SUPPORTED)
            return _r(SW.CLA_NOT_SUPPORTED)
        handler = self._handlers.get((cla, cmd.ins))
        if handler is None:
            return _r(SW.INS_NOT_SUPPORTED)
        if cmd.is_extended and not self.model.extended_length:
            return _r(SW.WRONG_LENGTH)
        try:
            return handler(cmd)
        except _WriteFailed:
            return _r(SW.MEMORY_FAILURE)

    def _delay(self) -> None:
        if self.defects.fixed_delay_ms:
            time.sleep(self.defects.fixed_delay_ms / 1000)

    # -- NVM writes ---------------------------------------------------------------------
    def _write(
        self, point: str, pin_id: str, *, remaining: int, value: bytes | None = None
    ) -> None:
        hook = self.write_hook
        if hook is not None:
            self._at_write_point(hook, point, "before")
        try:
            self.store.write_pin(pin_id, remaining=remaining, value=value)
        except (CardStateError, OSError) as exc:
            # the write did not happen; the command must not answer as if it had, nor as if
            # the PIN were wrong
            answer = "power-on goes on" if point == "power-on.restore" else "answering 65 81"
            log.error(
                "card %r: the write of %s at %s failed, %s: %s",
                self.store.state.name,
                pin_id,
                point,
                answer,
                exc,
            )
            raise _WriteFailed from exc
        if hook is not None:
            self._at_write_point(hook, point, "after")

    def _write_pin_value(self, point: str, pin_id: str, remaining: int, value: bytes) -> None:
        """A new PIN value with its counter: one atomic write (the defect splits it in three)."""
        if self.defects.non_atomic_pin_write:
            old = self.store.state.pins[pin_id].value
            half = len(value) // 2
            self._write(point, pin_id, remaining=remaining)
            self._write(point, pin_id, remaining=remaining, value=value[:half] + old[half:])
        self._write(point, pin_id, remaining=remaining, value=value)

    def _at_write_point(self, hook: WriteHook, point: str, phase: str) -> None:
        try:
            hook(point, phase)
        except CardPowerLost:
            self.power_off()
            raise

    # -- addressing -----------------------------------------------------------------------
    def _select(self, cmd: CommandAPDU) -> ResponseAPDU:
        if cmd.le is not None:  # P2=0C: no FCI is returned, so no Le may be asked
            return _r(SW.WRONG_LENGTH)
        if cmd.p2 != 0x0C:
            return _r(SW.INCORRECT_P1P2)
        if cmd.p1 == 0x04:
            if not 1 <= len(cmd.data) <= 16:
                return _r(SW.WRONG_LENGTH)
            for app in APPLICATIONS:
                if app.aid.startswith(cmd.data):
                    self._df = LAYOUT[app.id]
                    self._ef = None
                    self._verified.clear()
                    return _OK
            return _r(SW.FILE_NOT_FOUND)
        if cmd.p1 == 0x02:
            if len(cmd.data) != 2:
                return _r(SW.WRONG_LENGTH)
            fid = int.from_bytes(cmd.data, "big")
            if self._df is None or (fid not in self._df.pins and fid not in self._df.files):
                return _r(SW.FILE_NOT_FOUND)
            self._ef = fid
            return _OK
        if cmd.p1 == 0x00 and cmd.data in (b"", b"\x3f\x00"):
            # the MF cannot be selected after a cold reset; with an application selected
            # the card answers 9000 and stays where it is ([CLAIM]: one source, soltia48/myna-card)
            return _OK if self._df is not None else _r(SW.INCORRECT_P1P2)
        return _r(SW.INCORRECT_P1P2)

    def _resolve_pin(self, p2: int) -> PinSpec | ResponseAPDU:
        """P2 80 = the current EF, 80|SFI = that EF of the current DF; else the error."""
        if p2 & 0x80 == 0 or p2 & 0x60:
            return _r(SW.INCORRECT_P1P2)
        if self._df is None:
            return _r(SW.FILE_NOT_FOUND)
        fid = p2 & 0x1F or self._ef
        if fid is None:
            return _r(SW.NO_CURRENT_EF)
        pin = self._df.pins.get(fid)
        if pin is None:
            sw = SW.INCOMPATIBLE_FILE_STRUCTURE if fid in self._df.files else SW.FILE_NOT_FOUND
            return _r(sw)
        self.last_pin = pin.id
        return pin

    def _pin_with_data(self, cmd: CommandAPDU) -> PinSpec | ResponseAPDU:
        """The PIN a CHANGE / RESET addresses; these carry data and take no Le."""
        target = self._resolve_pin(cmd.p2)
        if isinstance(target, PinSpec) and (cmd.le is not None or not cmd.data):
            return _r(SW.WRONG_LENGTH)
        return target

    def _current_file(self, fid: int | None) -> FileSpec | ResponseAPDU:
        if self._df is None or fid is None:
            return _r(SW.NO_CURRENT_EF)
        spec = self._df.files.get(fid)
        if spec is None:
            sw = SW.INCOMPATIBLE_FILE_STRUCTURE if fid in self._df.pins else SW.FILE_NOT_FOUND
            return _r(sw)
        return spec

    def _opens(self, spec: FileSpec) -> bool:
        return not spec.access or any(p in self._verified for p in spec.access)

    # -- PIN commands -----------------------------------------------------------------------
    def _verify(self, cmd: CommandAPDU) -> ResponseAPDU:
        if cmd.p1 != 0x00:
            return _r(SW.INCORRECT_P1P2)
        spec = self._resolve_pin(cmd.p2)
        if isinstance(spec, ResponseAPDU):
            return spec
        if cmd.le is not None:
            return _r(SW.WRONG_LENGTH)
        pin = self.store.state.pins[spec.id]
        if not cmd.data:  # the free status query
            if self.defects.query_costs_try and pin.remaining:
                self._write("query.decrement", spec.id, remaining=pin.remaining - 1)
            return _r(SW.retries(pin.remaining))
        d = self.defects
        if not spec.format.length_ok(cmd.data) and not d.wrong_length_costs_try:
            return _r(SW.WRONG_LENGTH)  # refused before the counter: costs no try
        if pin.blocked:
            if d.ok_when_blocked and self._matches(pin.value, cmd.data):
                self._verified.add(spec.id)
                return _OK
            return _r(SW.REFERENCE_DATA_BLOCKED)
        before = pin.remaining
        less = max(0, before - (2 if d.double_decrement else 1))
        if d.decrement_after_compare:
            correct = self._compare(pin.value, cmd.data)
            if not correct and not d.no_decrement:
                self._write("verify.decrement", spec.id, remaining=less)
        else:
            if not d.no_decrement:
                self._write("verify.decrement", spec.id, remaining=less)
            correct = self._compare(pin.value, cmd.data)
        if correct:
            restored = before if d.no_restore else pin.max_tries
            if pin.remaining != restored:
                self._write("verify.restore", spec.id, remaining=restored)
            self._verified.add(spec.id)
            return _OK
        self._verified.discard(spec.id)
        return _r(SW.retries(pin.remaining))

    def _compare(self, secret: bytes, presented: bytes) -> bool:
        correct = self._matches(secret, presented)
        if self.write_hook is not None:
            self._at_write_point(self.write_hook, COMPARE_EVENT, "after")
        return correct

    def _matches(self, secret: bytes, presented: bytes) -> bool:
        d = self.defects
        if not d.early_exit_compare:
            return hmac.compare_digest(secret, presented)
        delay_ns = int(d.per_byte_delay_us * 1000)
        for a, b in zip(secret, presented, strict=False):
            if delay_ns:
                _busy_wait_ns(delay_ns)
            if a != b:
                return False
        return len(secret) == len(presented)

    def _change_iso(self, cmd: CommandAPDU) -> ResponseAPDU:
        if cmd.p1 != 0x01:  # only "new reference data" after a VERIFY
            return _r(SW.INCORRECT_P1P2)
        return self._change(cmd, ChangeCommand.ISO)

    def _change_jicsap(self, cmd: CommandAPDU) -> ResponseAPDU:
        if cmd.p1 != 0x00:
            return _r(SW.INCORRECT_P1P2)
        return self._change(cmd, ChangeCommand.JICSAP)

    def _change(self, cmd: CommandAPDU, via: PinChange) -> ResponseAPDU:
        spec = self._pin_with_data(cmd)
        if isinstance(spec, ResponseAPDU):
            return spec
        if spec.change is not via:
            return _r(SW.INCOMPATIBLE_FILE_STRUCTURE)
        if not spec.format.length_ok(cmd.data):
            return _r(SW.WRONG_LENGTH)
        pin = self.store.state.pins[spec.id]
        if pin.blocked:
            return _r(SW.REFERENCE_DATA_BLOCKED)
        if spec.id not in self._verified:
            return _r(SW.SECURITY_STATUS_NOT_SATISFIED)
        if not spec.format.charset_ok(cmd.data):
            return _r(SW.INCORRECT_DATA)
        self._write_pin_value("change.write", spec.id, pin.max_tries, bytes(cmd.data))
        return _OK

    def _reset_retry_counter(self, cmd: CommandAPDU) -> ResponseAPDU:
        """TEST mechanism (the real re-initialisation is not public): ``reset code ‖ new PIN``
        or ``reset code`` alone.

        The window code re-initialises any PIN object; the kiosk code only a JPKI PIN, and
        only while the other JPKI PIN is verified.
        """
        if cmd.p1 not in (0x00, 0x01):
            return _r(SW.INCORRECT_P1P2)
        spec = self._pin_with_data(cmd)
        if isinstance(spec, ResponseAPDU):
            return spec
        codes = self.store.state.reset_codes
        code_len = len(codes["window"])
        code, new = cmd.data[:code_len], cmd.data[code_len:]
        if len(code) != code_len or bool(new) != (cmd.p1 == 0x00):
            return _r(SW.WRONG_LENGTH)
        route = None
        for name, secret in codes.items():
            if hmac.compare_digest(secret, code):
                route = name
        if route is None:
            return _r(SW.SECURITY_STATUS_NOT_SATISFIED)
        if route == "kiosk":
            partner = KIOSK_PARTNER.get(spec.id)
            if partner is None:
                return _r(SW.CONDITIONS_NOT_SATISFIED)
            if partner not in self._verified:
                return _r(SW.SECURITY_STATUS_NOT_SATISFIED)
        pin = self.store.state.pins[spec.id]
        if new:
            if not spec.settable:
                return _r(SW.INCOMPATIBLE_FILE_STRUCTURE)
            if not spec.format.length_ok(new):
                return _r(SW.WRONG_LENGTH)
            if not spec.format.charset_ok(new):
                return _r(SW.INCORRECT_DATA)
            self._write_pin_value("reset.write", spec.id, pin.max_tries, bytes(new))
        else:
            self._write("reset.write", spec.id, remaining=pin.max_tries)
        self._verified.discard(spec.id)
        return _OK

    # -- data commands ------------------------------------------------------------------------
    def _read_binary(self, cmd: CommandAPDU) -> ResponseAPDU:
        if cmd.data or cmd.le is None:
            return _r(SW.WRONG_LENGTH)
        if cmd.p1 & 0x80:
            sfi = cmd.p1 & 0x1F
            if cmd.p1 & 0x60 or sfi == 0:
                return _r(SW.INCORRECT_P1P2)
            if self._df is None or (sfi not in self._df.files and sfi not in self._df.pins):
                return _r(SW.FILE_NOT_FOUND)
            self._ef = sfi
            offset = cmd.p2
        else:
            offset = (cmd.p1 << 8) | cmd.p2
        spec = self._current_file(self._ef)
        if isinstance(spec, ResponseAPDU):
            return spec
        if spec.kind is not FileKind.TRANSPARENT:
            return _r(SW.INCOMPATIBLE_FILE_STRUCTURE)
        if not self._opens(spec):
            return _r(SW.SECURITY_STATUS_NOT_SATISFIED)
        content = self.store.state.contents[spec.content]
        if offset >= len(content):
            return _r(SW.OFFSET_OUT_OF_RANGE)
        return _r(SW.OK, content[offset : offset + cmd.le])

    def _read_record(self, cmd: CommandAPDU) -> ResponseAPDU:
        if cmd.data or cmd.le is None:
            return _r(SW.WRONG_LENGTH)
        if cmd.p2 & 0x07 != 0x04 or cmd.p1 == 0:
            return _r(SW.INCORRECT_P1P2)
        sfi = cmd.p2 >> 3
        if sfi:
            if self._df is None or (sfi not in self._df.files and sfi not in self._df.pins):
                return _r(SW.FILE_NOT_FOUND)
            self._ef = sfi
        spec = self._current_file(self._ef)
        if isinstance(spec, ResponseAPDU):
            return spec
        if spec.kind is not FileKind.RECORD:
            return _r(SW.INCOMPATIBLE_FILE_STRUCTURE)
        if not self._opens(spec):
            return _r(SW.SECURITY_STATUS_NOT_SATISFIED)
        records = [self.store.state.contents[spec.content]]
        if cmd.p1 > len(records):
            return _r(SW.RECORD_NOT_FOUND)
        return _r(SW.OK, records[cmd.p1 - 1][: cmd.le])

    def _sign(self, cmd: CommandAPDU) -> ResponseAPDU:
        if cmd.p1 != 0x00 or cmd.p2 != 0x80:
            return _r(SW.INCORRECT_P1P2)
        if not cmd.data or cmd.le is None or cmd.le < 256 or len(cmd.data) > MAX_SIGN_INPUT:
            return _r(SW.WRONG_LENGTH)
        spec = self._current_file(self._ef)
        if isinstance(spec, ResponseAPDU):
            return spec
        if spec.kind is not FileKind.KEY:
            return _r(SW.INCOMPATIBLE_FILE_STRUCTURE)
        if not self._opens(spec):
            return _r(SW.SECURITY_STATUS_NOT_SATISFIED)
        signature = self.store.state.keys[spec.content].sign_raw_pkcs1(bytes(cmd.data))
        return _r(SW.OK, signature)

    def _get_challenge(self, cmd: CommandAPDU) -> ResponseAPDU:
        if cmd.p1 or cmd.p2:
            return _r(SW.INCORRECT_P1P2)
        if cmd.data or cmd.le is None:
            return _r(SW.WRONG_LENGTH)
        if cmd.is_extended:
            return _r(SW.CONDITIONS_NOT_SATISFIED)  # [CLAIM]: soltia48/myna-card
        return _r(SW.OK, os.urandom(cmd.le))
