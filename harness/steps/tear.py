"""``tear: {command?} | {delays_us}``: cut the card's power inside a command and check what it
kept.

Two ways in, one oracle per command:

- On the emulated card, every NVM write passes a named write point. The command runs once
  uncut to learn its points, then once per point with the power cut there; the card leaves
  the reader (through pcscd, vpcd sees it go) and the target reaches it again.
- With the reader's power switch (``tear: {delays_us: [...]}``), a wrong VERIFY is cut a chosen
  time after it is sent; this works on any card whose reader has a relay.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.apdu import commands as C
from harness.apdu import render_command
from harness.apdu import sw as SW
from harness.apdu.model import CommandAPDU
from harness.capabilities import Capability
from harness.errors import CardPowerLost, HarnessError, TransportError
from harness.lab.power import TimedCut
from harness.scenario.model import Step
from harness.secret import Secret
from harness.steps import NOTHING, StepKind
from harness.steps.reinit import reset_code

if TYPE_CHECKING:
    from harness.run.session import CardSession
    from harness.scenario.parse import Parse
    from harness.scenario.schema import CardRefs


@dataclass(frozen=True)
class Tear(Step):
    action: ClassVar[str] = "tear"
    pin: str = ""
    command: str = "verify"  # verify | change | reinit
    delays_us: tuple[float, ...] = ()  # timed cuts by the power switch instead of write points


def schema(refs: CardRefs) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "command": {"enum": ["verify", "change", "reinit"]},
            "delays_us": {
                "type": "array",
                "minItems": 1,
                "maxItems": 500,
                "items": {"type": "number", "minimum": 0, "maximum": 10000000},
                "description": "cut a wrong VERIFY this long after it is sent, by the"
                " reader's power switch (any card)",
            },
        },
        "description": "{command: verify|change|reinit} - cut power at every write point of"
        " that command (emulated card), or {delays_us: [...]} - timed cuts of a wrong VERIFY",
    }


def parse(c: Parse, body: Any, common: dict[str, Any]) -> Tear:
    body = body or {}
    command = str(body.get("command", "verify"))
    if "delays_us" in body:
        if command != "verify":
            raise c.doc.error(
                "tear: timed cuts (delays_us) are for VERIFY only",
                [*c.path, "command"],
                expected="command: verify",
            )
        c.need_tag("destructive", "tear with delays_us sends wrong PINs")
        c.require(Capability.MID_COMMAND_CUT, "tear with delays_us")
        delays = tuple(float(d) for d in body["delays_us"])
        return Tear(**common, pin=c.pin(), delays_us=delays)
    c.need_tag(
        "emulator-only",
        "tear cuts the emulated card's power",
        expected="tags: [emulator-only, destructive]",
    )
    pin = c.pin()
    if command == "change":
        c.changeable(pin, [*c.path, "command"], "tear")
    c.uses_reinit |= command == "reinit"
    c.require(Capability.WRITE_POINTS, f"tear of {command}")
    if command == "reinit":
        c.require(Capability.TEST_REINIT, "tear of reinit")
    if command in ("change", "reinit"):  # the torn command sets a fresh PIN
        c.require(Capability.FRESH_PINS, f"tear of {command}")
    return Tear(**common, pin=pin, command=command)


def run(session: CardSession, s: Tear) -> None:
    Tearing(session).run(s)


class Tearing:
    """The ``tear`` step on one card session."""

    def __init__(self, session: CardSession) -> None:
        self.s = session

    def run(self, s: Tear) -> None:
        """Cut the emulated card's power at each write point of one command, reach the card
        again (through the link it disappears as a real card would) and check what it kept.

        - ``verify`` (a wrong PIN): once the card compared the value, the try is counted.
        - ``change`` and ``reinit`` (a fresh PIN): exactly one of the old and the new PIN works
          afterwards, and the counter is refilled only together with the new PIN.
        """
        if s.delays_us:
            self._tear_timed(s)
            return
        sweep = {
            "verify": self._tear_verify,
            "change": self._tear_change,
            "reinit": self._tear_reinit,
        }[s.command]
        self.s.select_pin(s.pin)
        points: list[tuple[str, str]] = []
        sweep(s.pin, None, points)  # uncut: learns the write points of the command
        self.s.note(
            f"write points of {s.command}: "
            + ", ".join(f"{i}:{p}/{ph}" for i, (p, ph) in enumerate(points))
        )
        for index in range(len(points)):
            sweep(s.pin, index, [])

    def _tear_timed(self, s: Tear) -> None:
        """Cut a wrong VERIFY ``delay`` µs after it is sent, by the reader's power switch.

        Seen from outside the card: a cut must never refill the counter, and a VERIFY that
        answered must have counted its try. Which delays counted the try is noted, with the
        switch's confirmation time (with a switch faster than the command, the curve shows
        where in the command the card writes its counter).
        """
        switch = self.s.target.power_switch()
        try:
            if not switch.mid_command:
                raise HarnessError(
                    f"{switch.describe()} cannot cut a command while it runs; give "
                    f"{self.s.target.name} a relay (power_switch in readers/)"
                )
            self.s.note(f"timed cuts by {switch.describe()}")
            wrong, right = self.s.value(s.pin, "wrong"), self.s.value(s.pin, "right")
            curve: list[str] = []
            for delay in s.delays_us:
                before = self.s.tries(s.pin)
                self.s.select_pin(s.pin)
                cut = TimedCut(switch, delay)
                answer = "lost"
                cmd = C.verify(wrong)
                cut.fire()
                self.s.lab_done()
                try:
                    resp, _ = self.s.sample(cmd, "cut")
                    answer = f"{resp.sw:04X}"
                except TransportError:
                    pass
                cut.join()
                time.sleep(self.s.target.power_off_ms / 1000)
                switch.restore()
                self.s.target.recover()
                self.s.forget_selection()
                self.s.lab_done()
                after = self.s.tries(s.pin)
                counted = after == before - 1
                curve.append(
                    f"{delay:g} µs (confirmed {cut.confirmed_us or 0:.0f}): {answer}, "
                    + ("counted" if counted else "not counted")
                )
                if after > before or after < before - 1:
                    raise self.s.fail(
                        f"counter of {s.pin} after a cut {delay:g} µs into a wrong VERIFY",
                        f"{before - 1} or {before}",
                        str(after),
                    )
                if (
                    answer != "lost"
                    and SW.retries_left(int(answer, 16)) is not None
                    and not counted
                ):
                    raise self.s.fail(
                        f"counter of {s.pin} after a wrong VERIFY that answered {answer} "
                        f"(cut {delay:g} µs in)",
                        f"{before - 1} (the card answered, so it had counted the try)",
                        str(after),
                    )
                if after < before and after:
                    self.s.tx(C.verify(right))
            self.s.note("cut delay → outcome: " + "; ".join(curve))
        finally:
            switch.close()

    def _cut_at(
        self, index: int | None, seen: list[tuple[str, str]], cmd: CommandAPDU, *, ok: bool
    ) -> None:
        """Send ``cmd``, noting each write point it passes in ``seen``. With ``index`` the
        power goes at that write point; without, the command must complete (9000 if ``ok``)."""

        def hook(point: str, phase: str) -> None:
            seen.append((point, phase))
            if len(seen) - 1 == index:
                raise CardPowerLost(point, phase)

        try:
            with self.s.target.write_points(hook):  # refused on a target without write-points
                resp = self.s.tx(cmd, "step" if index is None else "cut")
            if index is None:
                if ok and not resp.ok:
                    raise self.s.fail("the command to tear, uncut", "9000", SW.describe(resp.sw))
                return
            raise self.s.fail(
                f"power cut at write point {index}", "the card loses power", "it answered"
            )
        except (CardPowerLost, TransportError):
            if index is None or len(seen) <= index:
                raise  # not our cut: a real fault of the lab, reported as such
            shown = render_command(cmd, reveal=False)  # notes reach the record
            self.s.note(f"power cut at {seen[-1][0]}/{seen[-1][1]} (point {index}) during {shown}")
        self.s.target.recover()
        self.s.forget_selection()
        self.s.lab_done()

    def _tear_verify(self, pin: str, index: int | None, seen: list[tuple[str, str]]) -> None:
        wrong, right = self.s.value(pin, "wrong"), self.s.value(pin, "right")
        before = self.s.tries(pin)
        self.s.select_pin(pin)
        self._cut_at(index, seen, C.verify(wrong), ok=False)
        if index is None:
            self.s.tx(C.verify(right))
            return
        after = self.s.tries(pin)
        from harness.emulator import COMPARE_EVENT  # tear cuts the emulated card only

        compared = (COMPARE_EVENT, "after") in seen
        cut = f"{seen[-1][0]}/{seen[-1][1]}"
        if after > before or (compared and after != before - 1):
            raise self.s.fail(
                f"counter of {pin} after a power cut at {cut}"
                + (" (the card had already compared the wrong PIN)" if compared else ""),
                f"{before - 1}" if compared else f"{before - 1} or {before}",
                str(after),
            )
        if after:
            self.s.tx(C.verify(right))

    def _one_pin_works(self, pin: str, old: Secret, new: Secret, cut: str) -> tuple[bool, int]:
        """After a torn write: which of ``old`` and ``new`` works (exactly one must), and the
        counter read before trying either."""
        left = self.s.tries(pin)
        self.s.select_pin(pin)
        new_ok = self.s.tx(C.verify(new)).ok
        old_ok = self.s.tx(C.verify(old)).ok
        if new_ok == old_ok:
            raise self.s.fail(
                f"PIN of {pin} after a power cut at {cut}",
                "exactly one of the old and the new PIN works",
                "both work" if new_ok else "neither works (a half-written PIN)",
            )
        if new_ok:  # the old value cost a try: put the counter back
            self.s.tx(C.verify(new))
        return new_ok, left

    def _tear_change(self, pin: str, index: int | None, seen: list[tuple[str, str]]) -> None:
        change = self.s.card.pins_by_id[pin].change
        if change is None:  # the loader refuses such a step
            raise HarnessError(f"{pin} cannot be changed")
        make = change.command
        old = self.s.value(pin, "right")
        new = self.s.value(pin, "fresh")
        self.s.select_pin(pin)
        if not self.s.tx(C.verify(old)).ok:
            raise self.s.fail(f"VERIFY {pin} before CHANGE", "9000", "not 9000")
        self._cut_at(index, seen, make(new), ok=True)
        cut = f"{seen[-1][0]}/{seen[-1][1]}" if seen else "nowhere"
        if index is None:
            new_ok, left = True, self.s.target.max_tries(pin)
            self.s.select_pin(pin)
            if not self.s.tx(C.verify(new)).ok:
                raise self.s.fail(f"VERIFY {pin} with its new value", "9000", "not 9000")
        else:
            new_ok, left = self._one_pin_works(pin, old, new, cut)
        if left != self.s.target.max_tries(pin):
            raise self.s.fail(
                f"counter of {pin} after a power cut at {cut} in CHANGE",
                f"{self.s.target.max_tries(pin)} (verified just before)",
                str(left),
            )
        if new_ok:  # back to the old PIN for the next cut (the session is verified)
            self.s.select_pin(pin)
            if not self.s.tx(make(old)).ok:
                raise self.s.fail(f"CHANGE {pin} back to its old value", "9000", "not 9000")

    def _tear_reinit(self, pin: str, index: int | None, seen: list[tuple[str, str]]) -> None:
        code = reset_code(self.s, self.s.card.reinit_routes[0])
        old, wrong = self.s.value(pin, "right"), self.s.value(pin, "wrong")
        new = self.s.value(pin, "fresh")
        self.s.select_pin(pin)
        self.s.tx(C.verify(wrong))  # one try gone, so that a refill shows
        before = self.s.tries(pin)
        self.s.select_pin(pin)
        self._cut_at(index, seen, C.reset_retry_counter(code, new), ok=True)
        if index is None:
            new_ok, left = True, self.s.target.max_tries(pin)
        else:
            cut = f"{seen[-1][0]}/{seen[-1][1]}"
            new_ok, left = self._one_pin_works(pin, old, new, cut)
            want = self.s.target.max_tries(pin) if new_ok else before
            why = "refilled with the new PIN" if new_ok else "not refilled: the old PIN stayed"
            if left != want:
                raise self.s.fail(
                    f"counter of {pin} after a power cut at {cut} in RESET RETRY COUNTER",
                    f"{want} ({why})",
                    str(left),
                )
        if new_ok:  # back to the old PIN (uncut) for the next cut
            self.s.select_pin(pin)
            if not self.s.tx(C.reset_retry_counter(code, old)).ok:
                raise self.s.fail(
                    f"re-initialising {pin} back to its old value", "9000", "not 9000"
                )


KIND = StepKind(
    "tear",
    Tear,
    schema,
    parse,
    run,
    doc=(
        "`command`: cut power at every write point of that command (emulated card; tag "
        "`emulator-only`). `delays_us`: cut a wrong VERIFY that long after it is sent, by the"
        " reader's power switch (any card with a relay; tag `destructive`); see "
        "[tearing](tearing.md)"
    ),
    expects=lambda s: NOTHING,
)
