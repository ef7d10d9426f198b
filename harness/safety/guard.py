"""The real-card guard: every APDU to a card that is not the emulator passes through here.

A citizen whose My Number card locks must go to the municipal window, so on a real card
pinloop spends a try only when it knows, for the PIN object the command addresses, that the
counter stays above the level the next scenario needs. :class:`RealCardGuard` wraps the
target's transport (so every step, raw ``apdu:`` steps and the target's own set-up included,
goes through it) and keeps its own model of the card:

- **What is selected.** SELECT by DF name and by EF id, READ BINARY / READ RECORD with an SFI,
  power cycles and resets are followed; a PIN command names its PIN object by P2 (``80`` the
  current EF, ``80|SFI`` an EF of the current DF). A PIN command whose object is unknown is
  treated as dangerous.
- **What each command can do.** The card facts (:mod:`harness.cards.jpki`) list the commands
  that touch no counter. VERIFY with data, CHANGE REFERENCE DATA, CHANGE KEY and RESET RETRY
  COUNTER may spend a try; any other command is unknown, and unknown is dangerous. Dangerous
  commands, changes and re-initialisations need the destructive opt-in for the reader.
- **Each counter.** Read with the free status query right before every possibly wrong VERIFY
  and compared with what the guard counted (a card that answers one thing and does another,
  a SELECT that did not select, two PIN objects that share a counter: stopped before the try).
  A possibly wrong VERIFY goes out only if the counter after it stays at or above the
  scenario's floor, ``max(2, level at the start - the tries the scenario declares)``
  (:func:`harness.scenario.spend.declared_spend`): one try is always kept in reserve, for a
  reader that delivers a VERIFY twice (the reader is the device under test).
- **Restores are checked.** A VERIFY with the right value that answers ``90 00`` is confirmed
  by a status query before the next try on that PIN, and at the end of the scenario. A restore
  that did not bring the counter back, a status query that changed a counter (read twice to
  tell), one VERIFY that cost more than one try (a reader that delivers it twice) or a PIN the
  card accepted earlier and now refuses: the guard stops every further try on that card for
  the session and raises :class:`GuardDefect` (a device defect, the test fails).
- **Values.** A scenario starts from the lab's PIN (the environment) with every PIN it uses,
  and every PIN an earlier scenario left short, put back to its maximum; at its end, and when
  the target closes, the guard puts back the counters that were spent (each read again
  first), and a PIN that was changed (destructive opt-in only) is changed back and verified.
  After a reconnect the card may be another one: nothing it accepted earlier counts.

What the guard refuses is raised as :class:`Refused`: the pytest plugin reports the item as
skipped with the reason, neither as a lab fault nor as passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from harness.apdu import sw as SW
from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.cards.profile import GuardFacts
from harness.errors import DeviceDefect, HarnessError
from harness.secret import Secret
from harness.timing import ApduTime, timed_transmit
from harness.transport.base import Transport

#: the tries a scenario declares per PIN, or how to work them out from each PIN's maximum as
#: the card shows it (:func:`harness.scenario.spend.declared_spend`): a maximum no profile
#: establishes is known only once the guard has restored the PIN
Spend = Mapping[str, int] | Callable[[Mapping[str, int]], Mapping[str, int]]


class Refused(Exception):
    """pinloop will not send this to a real card (reported as a skip, with the reason)."""


class UnsafeStep(Refused):
    """A step that only the emulated card can take (refused on a real card: a skip)."""


class GuardDefect(DeviceDefect):
    """The card broke a rule the guard relies on to keep its PINs safe; tries are stopped."""


class GuardSetupError(HarnessError):
    """The card cannot be brought to a scenario's starting state (a lab fault)."""


#: tries a PIN keeps without the destructive opt-in: the last one, and one for a VERIFY that a
#: reader delivers twice
_RESERVE = 2


@dataclass
class PinWatch:
    """What the guard knows about one PIN object of the card."""

    pin: str
    #: the counter as the card last gave it (None: unknown, read before the next try)
    known: int | None = None
    #: the counter after a confirmed restore: the card's maximum as observed
    top: int | None = None
    #: the lowest level the current scenario may bring the counter to (None: no try at all);
    #: never below 2 without the destructive opt-in
    floor: int | None = None
    #: a right VERIFY answered 90 00 and no status query has confirmed the counter since
    pending: bool = False
    #: the value the card accepts now, as far as pinloop knows
    value: Secret | None = None
    #: the value the lab gave
    original: Secret | None = None
    #: the card accepted ``value`` in this session
    proven: bool = False
    #: the card refused the lab's value: it is not sent again
    rejected: bool = False
    #: why pinloop no longer knows this PIN's value (nothing is sent to it then)
    lost: str | None = None

    @property
    def changed(self) -> bool:
        return self.value is not None and self.original is not None and self.value != self.original


@dataclass(frozen=True)
class _Plan:
    kind: str  # select | safe | query | verify | change | reset | unknown
    cmd: CommandAPDU
    pin: str | None = None
    right: bool = False
    before: int | None = None


def _query_count(sw: int) -> int | None:
    """The counter a status query answered: ``63 Cx``, or 0 for ``69 84`` (blocked)."""
    left = SW.retries_left(sw)
    return 0 if left is None and sw == SW.REFERENCE_DATA_BLOCKED else left


def _tries(n: int) -> str:
    return f"{n} try" if n == 1 else f"{n} tries"


def _describe(cmd: CommandAPDU) -> str:
    return f"{cmd.cla:02X} {cmd.ins:02X} {cmd.p1:02X} {cmd.p2:02X}"


class RealCardGuard:
    """A :class:`~harness.transport.base.Transport` that guards the one below it."""

    def __init__(
        self,
        inner: Transport,
        facts: GuardFacts,
        secret: Callable[[str], Secret],
        *,
        opt_in_hint: str = "",
    ) -> None:
        if not (facts.status_query_free and facts.verify_restores):
            # both are what the guard stands on: it reads each counter with the status query
            # and puts it back with one correct VERIFY
            missing = "a free status query" if not facts.status_query_free else ""
            if not facts.verify_restores:
                missing += (" and " if missing else "") + "a VERIFY that restores the counter"
            raise GuardSetupError(
                f"{inner.name}: the card profile does not promise {missing}; the real-card guard "
                "cannot keep its PINs safe, so nothing is sent to it"
            )
        self.inner = inner
        self.name = inner.name
        self.facts = facts
        self._secret = secret
        self.opt_in_hint = opt_in_hint or f"--pinloop-destructive-reader '{inner.name}'"
        self.watch: dict[str, PinWatch] = {}
        self.df: str | None = None
        self.ef: int | None = None
        #: why every further try on this card is refused (set once, for the session)
        self.stopped: str | None = None
        self.destructive_ok = False
        self.touched: set[str] = set()
        #: PINs that may be short of their maximum (spent, or their counter not known since)
        self.dirty: set[str] = set()
        #: where the guard's notes go (the runner's trace of the current step)
        self.log: Callable[[str], None] = lambda text: None
        #: where the guard's own APDUs are recorded (kind ``guard``; the target sets it)
        self.record: Callable[[ApduTime], object] = lambda row: None
        self.last_wire_ns = 0
        #: ns the last transmit() spent on the guard's own APDUs (they have rows of their own)
        self.last_extra_ns = 0
        #: the last transmit() sent its command (False: refused or stopped before it)
        self.last_sent = False

    # -- the Transport protocol ---------------------------------------------------------------
    @property
    def atr(self) -> bytes:
        return self.inner.atr

    def power_cycle(self) -> bytes:
        self._unselect()
        return self.inner.power_cycle()

    def reset(self) -> bytes:
        self._unselect()
        return self.inner.reset()

    def close(self) -> None:
        self._unselect()
        self.inner.close()

    def attach(self, inner: Transport) -> None:
        """A new connection to the same reader (after a power cut or a removal): the card
        may not be the same one, so every counter is read again before the next try."""
        self.inner = inner
        self._unselect()
        self.forget_counters()
        for w in self.watch.values():  # what another card accepted proves nothing here
            w.proven = False
            w.top = None

    def transmit(self, cmd: CommandAPDU) -> ResponseAPDU:
        self.last_extra_ns = 0
        self.last_sent = False
        plan = self._before(cmd)
        self.last_sent = True
        try:
            resp = self.inner.transmit(cmd)
        except BaseException:  # a lost connection, or anything else: the outcome is unknown
            self._lost(plan)
            raise
        finally:
            self.last_wire_ns = self.inner.last_wire_ns
        wire = self.last_wire_ns
        self._after(plan, resp)
        self.last_wire_ns = wire
        return resp

    # -- scenarios ----------------------------------------------------------------------------
    def begin(self, pins: Iterable[str], spend: Spend, *, destructive_ok: bool) -> None:
        """Bring every PIN a scenario uses to its maximum with the lab's value, check the
        status query is free and the restore works, and set each PIN's floor.

        Raises :class:`Refused` for a scenario that could block a PIN (without the opt-in)
        or a card the guard stopped, :class:`GuardSetupError` for what only the lab can fix.
        """
        self.destructive_ok = destructive_ok
        self.touched = set(pins)
        if self.stopped:
            self.destructive_ok = False
            self._refuse_stopped()
        try:
            self.power_cycle()
            for w in self.watch.values():
                w.floor = None
            # the scenario's PINs, and what an earlier one left short (a lost connection)
            for pin in sorted(self.touched | self.dirty):
                w = self._watch(pin)
                if pin in self.touched:
                    self._establish(w)
                    continue
                if w.lost or w.rejected or w.value is None:
                    continue
                try:  # not this scenario's PIN: what it needs from the lab is not its fault
                    self._establish(w)
                except GuardSetupError as exc:
                    self.dirty.discard(pin)
                    self.log(f"guard: {pin} not put back: {exc}")
            if callable(spend):
                tops = {p: self.watch[p].top for p in self.touched}
                spend = spend({p: top for p, top in tops.items() if top is not None})
            for pin in sorted(self.touched):
                w = self.watch[pin]
                assert w.top is not None
                budget = spend.get(pin, 0)
                if budget > w.top - _RESERVE and not destructive_ok:
                    raise Refused(
                        f"the scenario may spend {_tries(budget)} of {pin}, which has {w.top} "
                        f"on {self.name}: without the opt-in {_RESERVE} must stay (one in reserve "
                        f"for a VERIFY delivered twice); enable with {self.opt_in_hint}"
                    )
                w.floor = max(_RESERVE, w.top - budget)
            self.power_cycle()
        except BaseException:
            self.destructive_ok = False
            raise

    def end(self) -> None:
        """After a scenario (not after a lost connection): every counter it spent back to the
        maximum and confirmed, every PIN it changed changed back and verified."""
        try:
            for pin in sorted(self.touched | self.dirty):
                if self.stopped:
                    return
                w = self._watch(pin)
                if w.lost:
                    self.log(f"guard: {pin} not restored: {w.lost}")
                    continue
                if w.rejected or w.value is None:
                    continue
                try:
                    if w.changed:
                        self._change_back(w)
                    self._restore(w)
                except Refused as exc:  # the card would not let itself be put back
                    self._stop(f"{pin} could not be put back: {exc}")
        finally:
            self.destructive_ok = False

    def finish(self) -> None:
        """When the target closes: what is still short is put back (best effort)."""
        if self.dirty and not self.stopped:
            self.touched = set()
            self.end()

    # -- classification -------------------------------------------------------------------------
    def _classify(self, cmd: CommandAPDU) -> str:
        key = (cmd.cla, cmd.ins)
        f = self.facts
        if key == (0x00, 0xA4):
            return "select"
        if key in f.safe:
            return "safe"
        if key == f.verify:
            # the card's VERIFY takes no Le; one with an Le may be sent twice by a transport
            # that answers 6C xx by sending the command again
            if cmd.p1 != 0x00 or cmd.le is not None:
                return "unknown"
            return "verify" if cmd.data else "query"
        if cmd.le is not None:
            return "unknown"
        if key in f.change:
            return "change"
        if key in f.reset:
            return "reset"
        return "unknown"

    def _addressed(self, cmd: CommandAPDU) -> str | None:
        """The PIN object a PIN command names by P2, if the guard knows it."""
        p2 = cmd.p2
        if self.df is None or p2 & 0x80 == 0 or p2 & 0x60:
            return None
        fid = (p2 & 0x1F) or self.ef
        if fid is None:
            return None
        return self.facts.pins.get((self.df, fid))

    def _watch(self, pin: str) -> PinWatch:
        w = self.watch.get(pin)
        if w is None:
            try:
                value: Secret | None = self._secret(pin)
            except HarnessError:  # no PIN given for it: every VERIFY of it is possibly wrong
                value = None
            w = self.watch[pin] = PinWatch(pin, value=value, original=value)
        return w

    # -- before and after each APDU -----------------------------------------------------------
    def _before(self, cmd: CommandAPDU) -> _Plan:
        kind = self._classify(cmd)
        if kind in ("select", "safe"):
            return _Plan(kind, cmd)
        if self.stopped:
            self._refuse_stopped()
        if kind == "unknown":
            if not self.destructive_ok:
                raise Refused(
                    f"{_describe(cmd)}: pinloop does not know what this command does to the PIN "
                    f"counters of this card, so it is not sent to {self.name}; enable with "
                    f"{self.opt_in_hint}"
                )
            return _Plan(kind, cmd)
        pin = self._addressed(cmd)
        if pin is None:
            if not self.destructive_ok:
                raise Refused(
                    f"{_describe(cmd)}: the PIN object it addresses is not known (nothing or an "
                    f"unknown file selected), so it is not sent to {self.name}; enable with "
                    f"{self.opt_in_hint}"
                )
            return _Plan(kind, cmd)
        w = self._watch(pin)
        self.touched.add(pin)
        if w.lost and kind != "query":
            raise Refused(f"{pin} on {self.name}: {w.lost}; nothing is sent to it")
        if kind == "query":
            return _Plan(kind, cmd, pin, before=w.known)
        if kind == "verify":
            self.dirty.add(pin)
            right = not w.rejected and w.value is not None and w.value == cmd.data
            if right:
                if w.known is None:
                    w.known = self._read(w, cmd.p2)
                if w.known == 1 and not self.destructive_ok:
                    raise Refused(
                        f"{pin} has 1 try left on {self.name}: a VERIFY that fails for any "
                        "reason would block it; restore it by hand"
                    )
                return _Plan(kind, cmd, pin, right=True, before=w.known)
            self._fresh_count(w, cmd.p2)
            assert w.known is not None
            floor = w.floor if w.floor is not None else w.known + 1
            if not self.destructive_ok and w.known - 1 < floor:
                declared = (w.top or 0) - floor if w.floor is not None else 0
                why = (
                    "the scenario declares no try of it"
                    if declared <= 0
                    else f"the scenario declares {_tries(declared)} of it, so {floor} must stay"
                    if floor > _RESERVE
                    else f"{_RESERVE} must stay without the opt-in (one in reserve for a VERIFY "
                    "delivered twice)"
                )
                raise Refused(
                    f"{_describe(cmd)}: a possibly wrong VERIFY of {pin} would leave "
                    f"{_tries(w.known - 1)} on {self.name}; {why}; enable with {self.opt_in_hint}"
                )
            self.log(f"guard: {pin} has {w.known} tries left before a possibly wrong VERIFY")
            return _Plan(kind, cmd, pin, before=w.known)
        what = "re-initialisation (RESET RETRY COUNTER)" if kind == "reset" else "a PIN change"
        if not self.destructive_ok:
            raise Refused(
                f"{what} of {pin} on {self.name} changes the card's PIN and may spend a try; "
                f"enable with {self.opt_in_hint}"
            )
        self.dirty.add(pin)
        self._fresh_count(w, cmd.p2)
        return _Plan(kind, cmd, pin, before=w.known)

    def _after(self, plan: _Plan, resp: ResponseAPDU) -> None:
        cmd, kind = plan.cmd, plan.kind
        if kind == "select":
            self._selected(cmd, resp)
            return
        if kind == "safe":
            if cmd.ins in (0xB0, 0xB2):
                sfi = (cmd.p1 & 0x1F if cmd.p1 & 0x80 else 0) if cmd.ins == 0xB0 else cmd.p2 >> 3
                if sfi:
                    self.ef = sfi if resp.ok else None
            return
        if kind == "unknown" or plan.pin is None:
            self._forget_all()
            return
        w = self.watch[plan.pin]
        left = SW.retries_left(resp.sw)
        if kind == "query":
            self._after_query(w, cmd.p2, left, resp.sw)
        elif kind == "verify":
            self._after_verify(w, plan, resp, left)
        elif kind == "change":
            if resp.ok:
                w.value = Secret(cmd.data)
                w.proven = True
                w.known = None
                self.log(f"guard: {plan.pin} was changed; it is changed back at the end")
            else:
                w.known = left
        else:  # reset
            w.known = left
            if resp.ok:
                w.value = None
                w.lost = "re-initialised by RESET RETRY COUNTER: its value is no longer known"

    def _after_query(self, w: PinWatch, p2: int, left: int | None, sw: int) -> None:
        if left is None:  # 69 84: blocked, as the guard records it; anything else: unknown
            w.known = _query_count(sw)
            return
        if w.pending:
            self._check_restored(w, p2, left)
            return
        if w.known is not None and left < w.known:
            # read again to tell a query that costs a try from an unexplained drop, unless
            # that read could be the one that blocks the PIN
            again = self._own_query(p2) if left >= 2 else None
            why = (
                f"the status query of {w.pin} costs a try ({w.known}, then {left}, then {again})"
                if again is not None and again < left
                else f"the counter of {w.pin} fell from {w.known} to {left} with no try spent"
            )
            self._stop(why)
        if w.known is not None and left > w.known:
            self._stop(f"the counter of {w.pin} rose from {w.known} to {left} with no right PIN")
        w.known = left
        if w.top is not None and left >= w.top:
            self.dirty.discard(w.pin)

    def _after_verify(self, w: PinWatch, plan: _Plan, resp: ResponseAPDU, left: int | None) -> None:
        if resp.ok:
            if plan.right:
                w.proven = True
            else:
                self.log(f"guard: the card accepted a value for {w.pin} that was not its PIN")
            w.pending = True
            w.known = w.top
            return
        w.pending = False
        blocked_as_known = resp.sw == SW.REFERENCE_DATA_BLOCKED and plan.before == 0
        if plan.right and w.proven and not blocked_as_known:
            w.known = left
            self._stop(
                f"{w.pin} refused the PIN it accepted earlier in this session "
                f"({SW.describe(resp.sw)})"
            )
        if left is not None:
            w.known = left
            if plan.right:
                w.rejected = True  # the lab's value is wrong: never sent again
                return
            if plan.before is not None and left < plan.before - 1:
                self._heal(w, plan.cmd.p2)
                self._stop(
                    f"one VERIFY of {w.pin} cost {plan.before - left} tries ({plan.before} → "
                    f"{left}), as if it had been delivered twice"
                )
            if not self.destructive_ok and w.floor is not None and left < w.floor:
                self._stop(f"{w.pin} fell to {left} tries, below the scenario's floor {w.floor}")
            return
        if resp.sw == SW.REFERENCE_DATA_BLOCKED:
            was = plan.before
            w.known = 0
            if was != 0 and not self.destructive_ok:
                self._stop(
                    f"{w.pin} answered 69 84 (blocked) with {was} tries left by pinloop's count"
                )
            return
        # any other answer (67 00, 6A 86, 65 81 ...): the try may or may not have been counted
        w.known = None

    def _lost(self, plan: _Plan) -> None:
        """The connection failed under a command: what it did to the card is unknown."""
        self._unselect()
        if plan.kind in ("select", "safe", "query"):
            return
        if plan.pin is None:
            self._forget_all()
            return
        w = self.watch[plan.pin]
        w.known = None
        w.pending = False
        self.dirty.add(plan.pin)
        if plan.kind in ("change", "reset"):
            w.lost = f"the connection failed during a {plan.kind}: its value is not known"

    # -- the guard's own APDUs ------------------------------------------------------------------
    def _own(self, cmd: CommandAPDU) -> ResponseAPDU:
        t = time.perf_counter_ns()
        answered = False
        try:
            resp = self.inner.transmit(cmd)
            answered = True
            return resp
        except BaseException:
            self._forget_all()
            raise
        finally:
            elapsed = time.perf_counter_ns() - t
            self.last_extra_ns += elapsed
            self.record(
                ApduTime(
                    f"{cmd.ins:02X}",
                    cmd.ins == 0x20 and not cmd.data,
                    self.inner.last_wire_ns / 1e3,
                    elapsed / 1e3,
                    "guard",
                    answered,
                )
            )

    def _checked(self, cmd: CommandAPDU) -> ResponseAPDU:
        """One of the guard's own APDUs that passes its own checks (a restore, a change
        back), recorded as the guard's."""
        return timed_transmit(self, cmd, "guard", self.record)

    def _own_query(self, p2: int) -> int | None:
        return _query_count(self._own(CommandAPDU(0x00, 0x20, 0x00, p2)).sw)

    def _read(self, w: PinWatch, p2: int) -> int:
        left = self._own_query(p2)
        if left is None:
            raise Refused(
                f"the status query of {w.pin} on {self.name} did not answer 63 Cx: its counter "
                "is not known, so no try is spent"
            )
        return left

    def _fresh_count(self, w: PinWatch, p2: int) -> None:
        """Read the counter right before a try: a pending restore must show the maximum, and
        any other count must be what the guard counted."""
        left = self._read(w, p2)
        if w.pending:
            self._check_restored(w, p2, left)
            return
        if w.known is not None and left != w.known:
            self._stop(
                f"the counter of {w.pin} is {left}, where pinloop counted {w.known}: the card "
                "or the reader did not do what its answers said"
            )
        w.known = left

    def _check_restored(self, w: PinWatch, p2: int, left: int) -> None:
        w.pending = False
        if w.top is None or left >= w.top:
            w.known = left
            w.top = left if w.top is None else max(w.top, left)
            self.dirty.discard(w.pin)
            return
        again = self._own_query(p2) if left >= 2 else None  # never the read that blocks
        w.known = again
        if again is not None and again < left:
            self._stop(f"the status query of {w.pin} costs a try ({left}, then {again})")
        self._stop(
            f"the right PIN did not restore {w.pin}: 90 00, then {left} tries left "
            f"(expected {w.top})"
        )

    def _select_pin(self, pin: str) -> int:
        """SELECT the PIN's application and EF; the P2 that addresses it then."""
        app, fid = self.facts.where[pin]
        for cmd in (
            CommandAPDU(0x00, 0xA4, 0x04, 0x0C, self.facts.applications[app]),
            CommandAPDU(0x00, 0xA4, 0x02, 0x0C, fid.to_bytes(2, "big")),
        ):
            resp = self._own(cmd)
            self._selected(cmd, resp)
            if not resp.ok:
                raise GuardSetupError(
                    f"{self.name}: SELECT for {pin} answered {SW.describe(resp.sw)}"
                )
        return 0x80

    def _establish(self, w: PinWatch) -> None:
        """One PIN at the start of a scenario: counter read, restored, confirmed twice."""
        pin = w.pin
        if w.lost:
            raise Refused(f"{pin} on {self.name}: {w.lost}; restore it by hand first")
        if w.rejected:
            raise GuardSetupError(
                f"the PIN given for {pin} was refused by the card in {self.name} earlier in "
                "this session; it is not tried again"
            )
        p2 = self._select_pin(pin)
        first = self._own_query(p2)
        if first is None:
            raise GuardSetupError(f"{self.name}: the status query of {pin} did not answer 63 Cx")
        if first == 0:
            raise GuardSetupError(
                f"{pin} is blocked on {self.name}; {self.facts.unblock_hint} before running "
                "scenarios on this card"
            )
        if first == 1:  # a mistyped PIN, or a VERIFY that fails for any reason, would block it
            raise GuardSetupError(
                f"{pin} has 1 try left on {self.name}; restore it by hand with the right PIN "
                "before running scenarios"
            )
        w.known, w.pending = first, False
        if w.value is None:
            raise GuardSetupError(f"no PIN given for {pin} on {self.name}")
        resp = self._checked(CommandAPDU(0x00, 0x20, 0x00, p2, w.value.reveal()))
        if not resp.ok:
            left = SW.retries_left(resp.sw)
            if left is None:  # not a verdict on the PIN: e.g. 65 81, the card's memory failed
                why = (
                    f"the card in {self.name} answered {SW.describe(resp.sw)} to the VERIFY of "
                    f"{pin} with the PIN given; its counter is not known"
                )
                self.stopped = why  # every later start would spend a try the same way
                raise GuardSetupError(why)
            raise GuardSetupError(
                f"the PIN given for {pin} is not accepted by the card in {self.name} "
                f"({left} tries left; it is not tried again in this session)"
            )
        second = self._own_query(p2)
        third = self._own_query(p2)
        if second is not None and third is not None and third < second:
            w.known = third
            self._heal(w, p2)
            self._stop(f"the status query of {pin} costs a try ({second}, then {third})")
        most = self.facts.max_tries.get(pin)
        if (
            second is None
            or second < first
            or (w.top is not None and second < w.top)
            or (most is not None and second < most)
        ):
            self._stop(
                f"the right PIN did not restore {pin}: {first} tries before, "
                f"{second if second is not None else 'no 63 Cx'} after"
                + (f" (it had {w.top} earlier in this session)" if w.top is not None else "")
                + (f" (its maximum is {most})" if most is not None else "")
            )
        w.top = w.known = second
        w.pending = False
        self.dirty.discard(pin)
        self.log(f"guard: {pin} at {second} tries (observed), status query free")

    def _heal(self, w: PinWatch, p2: int) -> None:
        """After a status query was found to cost a try: one right VERIFY (the card has
        accepted this PIN in this session) gives the tries back."""
        if w.proven and w.value is not None and w.known:
            resp = self._own(CommandAPDU(0x00, 0x20, 0x00, p2, w.value.reveal()))
            if resp.ok:
                w.pending = True

    def _restore(self, w: PinWatch) -> None:
        """The counter read again (never trusted from the model), put back if short."""
        p2 = self._select_pin(w.pin)
        left = self._read(w, p2)
        if w.pending:
            self._check_restored(w, p2, left)
        w.known = left
        if w.top is None or left >= w.top:
            self.dirty.discard(w.pin)
            return
        if left == 0:
            if not self.destructive_ok:
                self._stop(f"{w.pin} is blocked, and no scenario had the opt-in to block it")
            self.dirty.discard(w.pin)  # nothing to put back: a start finds it blocked
            self.log(f"guard: {w.pin} left blocked (the scenario had the destructive opt-in)")
            return
        assert w.value is not None
        resp = self._checked(CommandAPDU(0x00, 0x20, 0x00, p2, w.value.reveal()))
        if not resp.ok:
            self._stop(f"restoring {w.pin} with its PIN answered {SW.describe(resp.sw)}")
        self._check_restored(w, p2, self._read(w, p2))
        self.log(f"guard: {w.pin} restored to {w.known} tries")

    def _change_back(self, w: PinWatch) -> None:
        """A PIN the scenario changed (opt-in only): verify its current value, change it back
        to the lab's, verify that."""
        assert w.value is not None and w.original is not None
        cla, ins, p1 = self.facts.change_command[w.pin]
        p2 = self._select_pin(w.pin)
        steps = (
            ("VERIFY with the changed value", CommandAPDU(0x00, 0x20, 0x00, p2, w.value.reveal())),
            ("CHANGE back", CommandAPDU(cla, ins, p1, p2, w.original.reveal())),
        )
        for what, cmd in steps:
            resp = self._checked(cmd)
            if not resp.ok:
                w.lost = f"changing it back failed at {what} ({SW.describe(resp.sw)})"
                self._stop(f"{w.pin} could not be changed back: {w.lost}")
        resp = self._checked(CommandAPDU(0x00, 0x20, 0x00, p2, w.original.reveal()))
        if not resp.ok:
            self._stop(f"{w.pin} refused the lab's PIN after it was changed back")
        self.log(f"guard: {w.pin} changed back to the lab's PIN and verified")

    # -- model bookkeeping --------------------------------------------------------------------
    def _selected(self, cmd: CommandAPDU, resp: ResponseAPDU) -> None:
        if not resp.ok:
            # a failed SELECT may or may not have left the old selection: assume nothing
            self.ef = None
            if cmd.p1 != 0x02:
                self.df = None
            return
        if cmd.p1 == 0x04:
            # only the full AID, first occurrence: a prefix may reach an application the
            # card facts do not list
            exact = [a for a, aid in self.facts.applications.items() if aid == cmd.data]
            self.df = exact[0] if exact and cmd.p2 & 0x03 == 0 else None
            self.ef = None
        elif cmd.p1 == 0x02 and len(cmd.data) == 2:
            self.ef = int.from_bytes(cmd.data, "big")
        else:
            self._unselect()

    def _unselect(self) -> None:
        self.df = None
        self.ef = None

    def _forget_all(self) -> None:
        self._unselect()
        self.forget_counters()

    def forget_counters(self) -> None:
        """Every counter unknown (read again before the next try); what the guard learnt
        about the card (stopped, refused or lost PINs, the maximum seen) stays."""
        for w in self.watch.values():
            w.known = None
            w.pending = False

    def _refuse_stopped(self) -> None:
        raise Refused(f"{self.name}: tries on this card were stopped: {self.stopped}")

    def _stop(self, why: str) -> None:
        self.stopped = why
        self.log(f"guard: STOPPED: {why}")
        raise GuardDefect(
            f"{self.name}: {why}. pinloop sends no further try to this card in this session"
        )
