"""Power-cut (tearing) steps: cut the card's power inside a command and check what it kept.

Two ways in, one oracle per command:

- On the emulated card, every NVM write passes a named write point. The command runs once
  uncut to learn its points, then once per point with the power cut there; the card leaves
  the reader (through pcscd, vpcd sees it go) and the target reaches it again.
- With the reader's power switch (``tear: {delays_us: [...]}``), a wrong VERIFY is cut a chosen
  time after it is sent; this works on any card whose reader has a relay.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from harness.apdu import commands as C
from harness.apdu import render_command
from harness.apdu import sw as SW
from harness.apdu.model import CommandAPDU
from harness.errors import CardPowerLost, HarnessError, TransportError
from harness.guard import UnsafeStep
from harness.lab.power import TimedCut
from harness.scenario import model as M
from harness.secret import Secret

if TYPE_CHECKING:
    from harness.runner import Runner


class Tearing:
    """The ``tear`` step of one runner."""

    def __init__(self, runner: Runner) -> None:
        self.r = runner

    def run(self, s: M.Tear) -> None:
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
        self.r.select_pin(s.pin)
        points: list[tuple[str, str]] = []
        sweep(s.pin, None, points)  # uncut: learns the write points of the command
        self.r.note(
            f"write points of {s.command}: "
            + ", ".join(f"{i}:{p}/{ph}" for i, (p, ph) in enumerate(points))
        )
        for index in range(len(points)):
            sweep(s.pin, index, [])

    def _tear_timed(self, s: M.Tear) -> None:
        """Cut a wrong VERIFY ``delay`` µs after it is sent, by the reader's power switch.

        Seen from outside the card: a cut must never refill the counter, and a VERIFY that
        answered must have counted its try. Which delays counted the try is noted, with the
        switch's confirmation time (with a switch faster than the command, the curve shows
        where in the command the card writes its counter).
        """
        switch = self.r.target.power_switch()
        try:
            if not switch.mid_command:
                raise HarnessError(
                    f"{switch.describe()} cannot cut a command while it runs; give "
                    f"{self.r.target.name} a relay (power_switch in readers/)"
                )
            self.r.note(f"timed cuts by {switch.describe()}")
            wrong, right = self.r.value(s.pin, "wrong"), self.r.value(s.pin, "right")
            curve: list[str] = []
            for delay in s.delays_us:
                before = self.r.tries(s.pin)
                self.r.select_pin(s.pin)
                cut = TimedCut(switch, delay)
                answer = "lost"
                cmd = C.verify(wrong)
                cut.fire()
                self.r.lab_done()
                try:
                    resp, _ = self.r._sample(cmd, "cut")
                    answer = f"{resp.sw:04X}"
                except TransportError:
                    pass
                cut.join()
                time.sleep(self.r.target.power_off_ms / 1000)
                switch.restore()
                self.r.target.recover()
                self.r.app = self.r.ef = None
                self.r.lab_done()
                after = self.r.tries(s.pin)
                counted = after == before - 1
                curve.append(
                    f"{delay:g} µs (confirmed {cut.confirmed_us or 0:.0f}): {answer}, "
                    + ("counted" if counted else "not counted")
                )
                if after > before or after < before - 1:
                    raise self.r.fail(
                        f"counter of {s.pin} after a cut {delay:g} µs into a wrong VERIFY",
                        f"{before - 1} or {before}",
                        str(after),
                    )
                if (
                    answer != "lost"
                    and SW.retries_left(int(answer, 16)) is not None
                    and not counted
                ):
                    raise self.r.fail(
                        f"counter of {s.pin} after a wrong VERIFY that answered {answer} "
                        f"(cut {delay:g} µs in)",
                        f"{before - 1} (the card answered, so it had counted the try)",
                        str(after),
                    )
                if after < before and after:
                    self.r.tx(C.verify(right))
            self.r.note("cut delay → outcome: " + "; ".join(curve))
        finally:
            switch.close()

    def _cut_at(
        self, index: int | None, seen: list[tuple[str, str]], cmd: CommandAPDU, *, ok: bool
    ) -> None:
        """Send ``cmd``, noting each write point it passes in ``seen``. With ``index`` the
        power goes at that write point; without, the command must complete (9000 if ``ok``)."""
        card = self.r.target.card  # type: ignore[attr-defined]

        def hook(point: str, phase: str) -> None:
            seen.append((point, phase))
            if len(seen) - 1 == index:
                raise CardPowerLost(point, phase)

        card.write_hook = hook
        try:
            resp = self.r.tx(cmd, "step" if index is None else "cut")
            if index is None:
                if ok and not resp.ok:
                    raise self.r.fail("the command to tear, uncut", "9000", SW.describe(resp.sw))
                return
            raise self.r.fail(
                f"power cut at write point {index}", "the card loses power", "it answered"
            )
        except (CardPowerLost, TransportError):
            if index is None or len(seen) <= index:
                raise  # not our cut: a real fault of the lab, reported as such
            shown = render_command(cmd, reveal=self.r.reveal)
            self.r.note(f"power cut at {seen[-1][0]}/{seen[-1][1]} (point {index}) during {shown}")
        finally:
            card.write_hook = None
        self.r.target.recover()
        self.r.app = self.r.ef = None
        self.r.lab_done()

    def _tear_verify(self, pin: str, index: int | None, seen: list[tuple[str, str]]) -> None:
        wrong, right = self.r.value(pin, "wrong"), self.r.value(pin, "right")
        before = self.r.tries(pin)
        self.r.select_pin(pin)
        self._cut_at(index, seen, C.verify(wrong), ok=False)
        if index is None:
            self.r.tx(C.verify(right))
            return
        after = self.r.tries(pin)
        from harness.emulator import COMPARE_EVENT  # tear cuts the emulated card only

        compared = (COMPARE_EVENT, "after") in seen
        cut = f"{seen[-1][0]}/{seen[-1][1]}"
        if after > before or (compared and after != before - 1):
            raise self.r.fail(
                f"counter of {pin} after a power cut at {cut}"
                + (" (the card had already compared the wrong PIN)" if compared else ""),
                f"{before - 1}" if compared else f"{before - 1} or {before}",
                str(after),
            )
        if after:
            self.r.tx(C.verify(right))

    def _one_pin_works(self, pin: str, old: Secret, new: Secret, cut: str) -> tuple[bool, int]:
        """After a torn write: which of ``old`` and ``new`` works (exactly one must), and the
        counter read before trying either."""
        left = self.r.tries(pin)
        self.r.select_pin(pin)
        new_ok = self.r.tx(C.verify(new)).ok
        old_ok = self.r.tx(C.verify(old)).ok
        if new_ok == old_ok:
            raise self.r.fail(
                f"PIN of {pin} after a power cut at {cut}",
                "exactly one of the old and the new PIN works",
                "both work" if new_ok else "neither works (a half-written PIN)",
            )
        if new_ok:  # the old value cost a try: put the counter back
            self.r.tx(C.verify(new))
        return new_ok, left

    def _tear_change(self, pin: str, index: int | None, seen: list[tuple[str, str]]) -> None:
        change = self.r.card.pins_by_id[pin].change
        if change is None:  # the loader refuses such a step
            raise HarnessError(f"{pin} cannot be changed")
        make = change.command
        old = self.r.value(pin, "right")
        new = self.r.value(pin, "fresh")
        self.r.select_pin(pin)
        if not self.r.tx(C.verify(old)).ok:
            raise self.r.fail(f"VERIFY {pin} before CHANGE", "9000", "not 9000")
        self._cut_at(index, seen, make(new), ok=True)
        cut = f"{seen[-1][0]}/{seen[-1][1]}" if seen else "nowhere"
        if index is None:
            new_ok, left = True, self.r.target.max_tries(pin)
            self.r.select_pin(pin)
            if not self.r.tx(C.verify(new)).ok:
                raise self.r.fail(f"VERIFY {pin} with its new value", "9000", "not 9000")
        else:
            new_ok, left = self._one_pin_works(pin, old, new, cut)
        if left != self.r.target.max_tries(pin):
            raise self.r.fail(
                f"counter of {pin} after a power cut at {cut} in CHANGE",
                f"{self.r.target.max_tries(pin)} (verified just before)",
                str(left),
            )
        if new_ok:  # back to the old PIN for the next cut (the session is verified)
            self.r.select_pin(pin)
            if not self.r.tx(make(old)).ok:
                raise self.r.fail(f"CHANGE {pin} back to its old value", "9000", "not 9000")

    def _tear_reinit(self, pin: str, index: int | None, seen: list[tuple[str, str]]) -> None:
        if not self.r.target.emulated:
            raise UnsafeStep("reinit is the emulator's test mechanism; a real card has none")
        route = self.r.card.reinit_routes[0]
        code = self.r.target.card.store.state.reset_codes[route]  # type: ignore[attr-defined]
        old, wrong = self.r.value(pin, "right"), self.r.value(pin, "wrong")
        new = self.r.value(pin, "fresh")
        self.r.select_pin(pin)
        self.r.tx(C.verify(wrong))  # one try gone, so that a refill shows
        before = self.r.tries(pin)
        self.r.select_pin(pin)
        self._cut_at(index, seen, C.reset_retry_counter(code, new), ok=True)
        if index is None:
            new_ok, left = True, self.r.target.max_tries(pin)
        else:
            cut = f"{seen[-1][0]}/{seen[-1][1]}"
            new_ok, left = self._one_pin_works(pin, old, new, cut)
            want = self.r.target.max_tries(pin) if new_ok else before
            why = "refilled with the new PIN" if new_ok else "not refilled: the old PIN stayed"
            if left != want:
                raise self.r.fail(
                    f"counter of {pin} after a power cut at {cut} in RESET RETRY COUNTER",
                    f"{want} ({why})",
                    str(left),
                )
        if new_ok:  # back to the old PIN (uncut) for the next cut
            self.r.select_pin(pin)
            if not self.r.tx(C.reset_retry_counter(code, old)).ok:
                raise self.r.fail(
                    f"re-initialising {pin} back to its old value", "9000", "not 9000"
                )
