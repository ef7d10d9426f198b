"""The card session of one scenario run: everything a step sends goes through it.

It knows what is selected (so that a step re-selects only when it must), keeps the step's
APDU trace (PINs masked) and the run's timing record (a row per APDU, with its kind from
:data:`harness.timing.KINDS`), turns a scenario's PIN values (``right``, ``wrong-last``,
``fresh`` ...) into bytes, and builds the failure of a broken expectation. What the steps
measured (marginal budgets, the timing series of a leak test) is kept here for the outputs.

Safety on real cards is not its job: every APDU to a card that is not the emulator passes the
target's guard (:mod:`harness.safety.guard`), and the PIN values only some cards allow (literal and
fresh ones) are refused on the others by :func:`harness.safety.refuse_without`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from harness.apdu import commands as C
from harness.apdu import render_command
from harness.apdu import sw as SW
from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.capabilities import Capability
from harness.cards.facts import Fact
from harness.cards.profile import CardProfile, PinSpec
from harness.errors import ConfigError, HarnessError, SourceLocation
from harness.run.expect import ExpectationFailed, FactObserved
from harness.run.record import ApduRecord, ObservationRecord, ScenarioRecord, StepRecord
from harness.safety import refuse_without
from harness.safety.guard import Refused
from harness.scenario import model as M
from harness.secret import Secret
from harness.targets import Target
from harness.timing import ApduTime
from harness.transport.base import Transport

_INS = [f"{i:02X}" for i in range(256)]
_clock = time.perf_counter_ns


def _other_char(c: int, letters: bool) -> int:
    if letters:
        return ord("B") if c != ord("B") else ord("C")
    return ord("0") if c != ord("0") else ord("1")


def _variant(right: bytes, v: str, spec: PinSpec, pin: str) -> Secret:
    """A value derived from the PIN ``right``: not the PIN (wrong, lower, short ...)."""
    letters = spec.format.letters
    if v in ("wrong", "wrong-first"):
        return Secret(bytes((_other_char(right[0], letters),)) + right[1:])
    if v == "wrong-last":
        return Secret(right[:-1] + bytes((_other_char(right[-1], letters),)))
    if v == "lower":
        if right.lower() == right:
            raise HarnessError(f"{pin} has no letters: its lower case is the right PIN")
        return Secret(right.lower())
    if v == "short":
        return Secret(right[: spec.format.min_len - 1])
    if v == "long":
        return Secret((right * 3)[: spec.format.max_len + 1])
    if v == "bad-charset":
        return Secret((b"a" if letters else b"A") * len(right))
    raise ValueError(f"unknown value {v!r}")


def _fresh(right: Secret, letters: bool) -> Secret:
    """A random valid PIN that is not ``right`` (a card with ``fresh-pins`` only)."""
    while True:
        fresh = Secret(
            b"PL%06d" % secrets.randbelow(10**6)
            if letters
            else b"%0*d" % (len(right), secrets.randbelow(10 ** len(right)))
        )
        if fresh != right:
            return fresh


class CardSession:
    """One scenario's conversation with the card of ``target``."""

    def __init__(self, target: Target, scenario: M.Scenario, *, reveal: bool = False) -> None:
        self.target = target
        self.scenario = scenario
        #: what the session knows of the card: the target's profile
        self.card: CardProfile = target.card_profile
        self.reveal = reveal
        #: the step being run (a failure names it)
        self.step: M.Step | None = None
        #: the current step's APDUs and notes (PINs masked)
        self.trace: list[str] = []
        #: what is selected, as far as the session knows (None: unknown)
        self.app: str | None = None
        self.ef: int | None = None
        self.values: dict[str, Secret] = {}  # PIN values after change / reinit
        self.new: dict[str, Secret] = {}
        #: every PIN's counter when the steps began (for others_unchanged)
        self.start_counters: dict[str, int] = {}
        #: every APDU sent while this session runs, each with its kind (timing.KINDS): the
        #: steps', timing samples, warm-ups and restores, cuts, and what the target and the
        #: guard send on their own (the target records into the same list)
        self.latencies: list[ApduTime] = target.new_record()
        #: when the harness's path to the next APDU began: the previous response, or the end
        #: of the last lab operation (power, reconnection) or analysis, which are not its path
        self._mark = _clock()
        #: what the steps measured, for the outputs
        self.marginal: list[str] = []  # budgets met only marginally
        self.timing_series: dict[str, list[float]] = {}  # classes of a leak test, µs
        #: the result record every output reads (:mod:`harness.run.record`)
        self.record = ScenarioRecord.of(
            scenario, target=target.name, reader=target.report_name, card=self.card.name
        )
        #: the record of the step being run
        self.step_record: StepRecord | None = None
        #: called with each command a step sends through :meth:`tx`, before it goes (the
        #: pytest plugin calls the ``pytest_pinloop_apdu`` hook); not for timing samples
        self.on_apdu: Callable[[CommandAPDU], None] | None = None

    # -- failures, observations and notes ----------------------------------------------------
    def fail(
        self,
        what: str,
        expected: str,
        actual: str,
        *,
        established: bool = False,
        feature: str = "",
    ) -> ExpectationFailed | FactObserved:
        """What the current step's broken expectation is (raise it): the device defect, or,
        when the step's check rests on card facts that are not established on this card
        (:meth:`unproven`), an observation. ``established``: the expectation holds whatever
        the facts (a fact's floor): a defect on every card. ``feature``: what this one check
        does beyond its step (``query:blocked``), whose fact (the card profile's
        :attr:`~harness.cards.profile.CardProfile.step_facts`) it rests on too."""
        step = self.step
        if step is None:  # before the first step, or a session with none (a Python test)
            step = (
                self.scenario.steps[0]
                if self.scenario.steps
                else M.Step(SourceLocation(self.scenario.path, self.scenario.line), "", None, None)
            )
        facts = () if established else self.unproven(step, feature)
        if facts:
            return FactObserved(
                self.scenario, step, facts, what, expected, actual, self.target.name
            )
        return ExpectationFailed(
            self.scenario, step, what, expected, actual, self.trace, self.target.name
        )

    def unproven(self, step: M.Step | None = None, feature: str = "") -> tuple[Fact, ...]:
        """The card facts ``step`` (the current one; and a check's ``feature``) rests on that
        a check on this card may not assert: none on pinloop's emulator (it implements the
        profile), else those below :data:`~harness.cards.facts.ASSERTED` in the target's card
        profile."""
        step = step if step is not None else self.step
        if step is None or Capability.EMULATOR in self.target.capabilities:
            return ()
        facts = self.card.facts_by_id
        ids = list(step.facts)
        if feature in self.card.step_facts:
            ids.append(self.card.step_facts[feature])
        ids = list(dict.fromkeys(ids))
        return tuple(facts[f] for f in ids if f in facts and not facts[f].established)

    def observe(
        self,
        fact: Fact,
        kind: str,
        observed: str,
        expected: str = "",
        step: tuple[int, M.Step] | None = None,
    ) -> None:
        """A card fact that is not established, as this card showed it (in the record)."""
        index, where = (step[0], str(step[1].where)) if step is not None else (None, "")
        for seen in self.record.observations:
            if (seen.fact, seen.kind, seen.observed) == (fact.id, kind, observed):
                return
        self.record.observations.append(
            ObservationRecord(
                fact.id,
                fact.confidence.label,
                fact.statement,
                fact.source,
                kind,
                observed,
                expected,
                index,
                where,
            )
        )
        self.note(f"observed ({fact.id}, {fact.confidence.label}): {observed}")

    def times(self, count: M.Count, pin: str) -> int:
        """How many times a step with ``repeat: count`` runs on this card: ``max-N`` from
        the card's maximum (the profile's figure, the card config's, or observed)."""
        n = count.times(self.target.max_tries(pin)) if count.of_max else count.n
        if n < 1:
            step = self.step
            raise ConfigError(
                f"repeat {count} resolves to {n} for {pin} on {self.target.name} "
                f"(its maximum of tries there: {self.target.max_tries(pin)})",
                step.where if step is not None else None,
                snippet=step.snippet if step is not None else "",
            )
        return n

    def note(self, text: str) -> None:
        self.trace.append(f"-- {text}")
        if self.step_record is not None:
            self.step_record.notes.append(text)

    def begin_step(self, index: int, step: M.Step) -> StepRecord:
        """``step`` (the ``index``-th, from 1) is the current one; its record."""
        self.step, self.trace = step, []
        self.step_record = self.record.steps[index - 1]
        return self.step_record

    def measured(self, name: str, value: float) -> None:
        """A figure the current step measured (in its record)."""
        if self.step_record is not None:
            self.step_record.measurements[name] = value

    def mark_marginal(self, text: str) -> None:
        """A budget met only marginally (noted, and in the record)."""
        self.note("MARGINAL: " + text)
        self.marginal.append(text)
        if self.step_record is not None:
            self.step_record.marginal.append(text)

    def saw_tries(self, pin: str, when: str, left: int) -> None:
        """The counter of ``pin`` ``before`` or ``after`` the current step (in its record)."""
        if self.step_record is not None:
            self.step_record.tries.setdefault(pin, {})[when] = left

    # -- APDUs --------------------------------------------------------------------------------
    def tx(self, cmd: CommandAPDU, kind: str = "step") -> ResponseAPDU:
        """Send ``cmd``; its line goes into the trace and the step's record."""
        if self.on_apdu is not None:
            self._before_apdu(cmd)
        shown = render_command(cmd, reveal=self.reveal)
        if len(shown) > 60:
            shown = shown[:50] + f"… ({len(cmd.to_bytes())} B)"
        try:
            resp, us = self._send(cmd, kind)
        except BaseException:
            if getattr(self.target.transport, "last_sent", True):  # not refused by the guard
                self._keep(cmd, None, kind)
            raise
        self._keep(cmd, resp, kind)
        data = f" +{len(resp.data)} B" if resp.data else ""
        self.trace.append(f">> {shown}  << {resp.sw:04X}{data}  ({us:.0f} µs)")
        return resp

    def _before_apdu(self, cmd: CommandAPDU) -> None:
        """The APDU hook: what the lab's plugin raises is a lab fault (a fault it injected on
        the path to the card stays what it is), never the device's defect."""
        assert self.on_apdu is not None
        try:
            self.on_apdu(cmd)
        except (HarnessError, Refused):
            raise
        except Exception as exc:
            raise HarnessError(f"an APDU hook raised {type(exc).__name__}: {exc}") from exc

    def _keep(self, cmd: CommandAPDU, resp: ResponseAPDU | None, kind: str) -> None:
        """The step's record of ``cmd``: masked whatever ``--pinloop-reveal`` says."""
        step = self.step_record
        if step is None:
            return
        shown = render_command(cmd, reveal=False)
        if resp is None or not self.latencies:  # nothing answered: no times
            step.apdus.append(ApduRecord(shown, "", 0, 0.0, 0.0, kind))
            return
        row = self.latencies[-1]
        step.apdus.append(
            ApduRecord(
                shown,
                f"{resp.sw:04X}",
                len(resp.data),
                round(row.wire_us, 1),
                round(row.overhead_us, 1),
                kind,
            )
        )

    def sample(self, cmd: CommandAPDU, kind: str = "step") -> tuple[ResponseAPDU, float]:
        """One APDU of a timing series and its time at the transport (µs): in the timing
        record, counted in the step's record, not in the trace."""
        step = self.step_record
        if step is not None:
            step.sampled[kind] = step.sampled.get(kind, 0) + 1
        return self._send(cmd, kind)

    def _send(self, cmd: CommandAPDU, kind: str) -> tuple[ResponseAPDU, float]:
        """One APDU and its time at the transport (µs, monotonic ns clock), recorded with the
        harness's whole path to it (from the previous response, less what the guard sent on
        its own, which has rows of its own). A failed APDU is recorded too, unless the guard
        refused it (then nothing was sent)."""
        transport = self.target.transport
        try:
            resp = transport.transmit(cmd)
        except BaseException:
            if getattr(transport, "last_sent", True):
                self._row(transport, cmd, kind, answered=False)
            raise
        return resp, self._row(transport, cmd, kind)

    def _row(
        self, transport: Transport, cmd: CommandAPDU, kind: str, answered: bool = True
    ) -> float:
        now = _clock()
        total = now - self._mark - getattr(transport, "last_extra_ns", 0)
        self._mark = now
        wire = transport.last_wire_ns / 1e3
        self.latencies.append(
            ApduTime(
                _INS[cmd.ins], cmd.ins == 0x20 and not cmd.data, wire, total / 1e3, kind, answered
            )
        )
        return wire

    def lab_done(self) -> None:
        """A lab operation (power, reconnection) or an analysis ended: the harness's path to
        the next APDU starts now."""
        self._mark = _clock()

    def forget_selection(self) -> None:
        """Nothing is known to be selected (after a reset, a cut, a raw SELECT)."""
        self.app = self.ef = None

    # -- selection ----------------------------------------------------------------------------
    def select_app(self, app: str) -> None:
        resp = self.tx(C.select_df(self.card.apps_by_id[app].aid))
        if not resp.ok:
            raise self.fail(f"SELECT {app}", "9000", SW.describe(resp.sw))
        self.app, self.ef = app, None

    def select_pin(self, pin: str, *, keep_app: bool = True) -> None:
        """Make ``pin``'s EF current; re-selects the DF only when another one is selected."""
        spec = self.card.pins_by_id[pin]
        if self.app != spec.app or not keep_app:
            self.select_app(spec.app)
        if self.ef != spec.fid:
            resp = self.tx(C.select_ef(spec.fid))
            if not resp.ok:
                raise self.fail(f"SELECT EF {spec.fid:04X}", "9000", SW.describe(resp.sw))
            self.ef = spec.fid

    def address_pin(self, pin: str, *, sfi: bool = False) -> int | None:
        """Make ``pin`` the one a VERIFY addresses: its EF selected, or (``sfi``) only its
        application, re-selected when another one is current. The SFI to send, or None."""
        spec = self.card.pins_by_id[pin]
        if not sfi:
            self.select_pin(pin)
            return None
        if self.app != spec.app:
            self.select_app(spec.app)
        return spec.fid

    def tries(self, pin: str, *, sfi: bool = False, blocked: bool = False) -> int:
        """``pin``'s counter by a status query (selected by its EF, or by SFI); ``blocked``:
        the step expects the PIN blocked (the query of a blocked PIN answering ``63 C0`` is
        a fact of its own, ``query:blocked``)."""
        resp = self.tx(C.pin_status(sfi=self.address_pin(pin, sfi=sfi)))
        left = SW.retries_left(resp.sw)
        if left is None:
            raise self.fail(
                f"status query of {pin}",
                "63Cx",
                SW.describe(resp.sw),
                feature="query:blocked" if blocked else "",
            )
        return left

    # -- PIN values ---------------------------------------------------------------------------
    def value(self, pin: str, v: M.Value) -> Secret:
        """The bytes ``v`` stands for, as a :class:`Secret` (wrong variants of a PIN give away
        most of it, so they are secrets too)."""
        spec = self.card.pins_by_id[pin]
        if isinstance(v, M.Literal):
            refuse_without(self.target, Capability.LITERAL_PINS)
            return Secret(v.value.encode())
        if v == "new":
            if pin not in self.new:
                step = self.step
                raise ConfigError(
                    f"value new for {pin} before any change or reinit",
                    step.where if step is not None else None,
                    snippet=step.snippet if step is not None else "",
                )
            return self.new[pin]
        right = self.values.get(pin) or self.target.secret(pin)
        if v == "right":
            return right
        if v == "fresh":
            refuse_without(self.target, Capability.FRESH_PINS)
            return _fresh(right, spec.format.letters)
        return _variant(right.reveal(), v, spec, pin)

    def now_holds(self, pin: str, value: Secret) -> None:
        """``pin`` was changed or re-initialised to ``value`` (``right`` and ``new`` from now)."""
        self.values[pin] = self.new[pin] = value
