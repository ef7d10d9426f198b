"""Expectations of scenario steps, and the failure a broken one raises.

:func:`check` holds a step's ``expect:`` against the card's answer and, through the session,
its counters. A failed expectation is a :class:`~harness.errors.DeviceDefect` (an
``AssertionError``: the test *failed*), naming the rule the scenario checks, the step's file
and line, expected versus actual, and the APDU trace of that step with PINs masked.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

from harness.apdu import sw as SW
from harness.apdu.model import ResponseAPDU
from harness.capabilities import Capability
from harness.cards.facts import Fact
from harness.errors import DeviceDefect
from harness.scenario.model import Expect, Scenario, Step

if TYPE_CHECKING:
    from harness.run.session import CardSession

#: a literal PIN value in a step's line (``literal: "1234"``)
_LITERAL = re.compile(r"(literal:\s*)(\"[^\"]*\"|'[^']*'|[^,}\s]+)")


def mask_literals(text: str) -> str:
    """``text`` (a step's YAML line) with its literal PIN values as ``****``."""
    return _LITERAL.sub(r"\1****", text)


SW_NAMES = {
    "ok": SW.OK,
    "blocked": SW.REFERENCE_DATA_BLOCKED,
    "wrong-length": SW.WRONG_LENGTH,
    "denied": SW.SECURITY_STATUS_NOT_SATISFIED,
    "not-found": SW.FILE_NOT_FOUND,
}


class ExpectationFailed(DeviceDefect):
    def __init__(
        self,
        scenario: Scenario,
        step: Step,
        what: str,
        expected: str,
        actual: str,
        trace: list[str],
        target: str,
    ) -> None:
        self.scenario = scenario
        self.step = step
        self.what = what
        self.expected = expected
        self.actual = actual
        self.trace = trace
        self.target = target
        super().__init__(self.render())

    def render(self) -> str:
        lines = [
            f"rule {self.scenario.rule!r} broken on {self.target}: {self.what}",
            f"  expected: {self.expected}",
            f"  actual:   {self.actual}",
            f"  at {self.step.where} ({self.step.action} step of {self.scenario.name!r})",
        ]
        lines += ["  | " + mask_literals(s) for s in self.step.snippet.splitlines()]
        if self.trace:
            lines.append("  APDU trace of the step (PINs masked):")
            lines += ["    " + t for t in self.trace[-12:]]
        return "\n".join(lines)


class FactObserved(Exception):
    """A check that rests on card facts not established, broken on a card that is not
    pinloop's emulator: what the card did is observed and reported, never a device defect.
    The runner ends the scenario there (what follows assumed the fact) and records it."""

    def __init__(
        self,
        scenario: Scenario,
        step: Step,
        facts: tuple[Fact, ...],
        what: str,
        expected: str,
        actual: str,
        target: str,
    ) -> None:
        self.scenario = scenario
        self.step = step
        self.facts = facts
        self.what = what
        self.expected = expected
        self.actual = actual
        self.target = target
        super().__init__(self.render())

    def render(self) -> str:
        ids = ", ".join(f"{f.id} ({f.confidence.label})" for f in self.facts)
        return (
            f"observed on {self.target}: {self.what}: the profile's model says "
            f"{self.expected}, the card gave {self.actual} (rests on {ids}; not a defect: "
            f"the fact is not established) at {self.step.where}"
        )


def sw_matches(expected: str, sw: int) -> bool:
    if expected == "refused":  # no success (90 00, 61 xx), no warning that it worked (62 xx)
        return sw != SW.OK and sw >> 8 not in (0x61, 0x62)
    if expected in SW_NAMES:
        return sw == SW_NAMES[expected]
    if expected.upper() == "63CX":
        return SW.retries_left(sw) is not None
    return sw == int(expected, 16)


def describe_sw(expected: str) -> str:
    if expected == "refused":
        return "refused (any answer but 90 00, 61 xx or 62 xx)"
    if expected in SW_NAMES:
        return f"{expected} = {SW.describe(SW_NAMES[expected])}"
    if expected.upper() == "63CX":
        return "63Cx (wrong or queried, x tries left)"
    return SW.describe(int(expected, 16))


def tries_expected(spec: int | str, before: int | None, max_tries: int) -> int:
    """``3`` / ``max`` / ``max-1`` / ``unchanged`` / ``one-less`` → a number."""
    if isinstance(spec, int):
        return spec
    if spec == "max":
        return max_tries
    if spec.startswith("max-"):
        return max_tries - int(spec[4:])
    assert before is not None, "relative tries need the count before the step"
    return before if spec == "unchanged" else before - 1


@functools.lru_cache(maxsize=1024)
def _partial(e: Expect) -> Expect:
    """What of ``e`` holds after each repetition but the last (made once per expectation)."""
    relative = e.tries in ("unchanged", "one-less")
    return Expect(sw=e.sw, tries=e.tries if relative else None, length=e.length)


def tries_before(session: CardSession, step: Step, pin: str, sfi: bool = False) -> int | None:
    """The counter before ``step``, read only when its expectation is relative to it."""
    e = step.expect
    if e is not None and e.tries in ("unchanged", "one-less"):
        before = session.tries(pin, sfi=sfi)
        session.saw_tries(pin, "before", before)
        return before
    return None


def check(
    session: CardSession,
    step: Step,
    resp: ResponseAPDU | None,
    pin: str | None,
    before: int | None,
    *,
    sfi: bool = False,
    final: bool = True,
    answered_tries: bool = False,
) -> None:
    """Check ``step``'s expectations. With ``repeat``, the status word and relative tries
    (``one-less``, ``unchanged``) hold for every repetition; absolute tries, ``blocked``
    and ``verified`` describe the state after the last one (``final``). With
    ``answered_tries`` (a VERIFY), a ``63Cx`` answer must agree with the status query."""
    e = step.expect
    if e is None:
        return
    if not final:
        e = _partial(e)
    if e.sw is not None and resp is not None and not sw_matches(e.sw, resp.sw):
        for fact in session.unproven():  # the part of the fact that is established holds
            if fact.floor is not None and not sw_matches(fact.floor, resp.sw):
                raise session.fail(
                    "status word",
                    f"{describe_sw(fact.floor)}: established, whatever the exact answer "
                    f"({fact.id} is {fact.confidence.label} only for {describe_sw(e.sw)})",
                    SW.describe(resp.sw),
                    established=True,
                )
        raise session.fail("status word", describe_sw(e.sw), SW.describe(resp.sw))
    if e.length is not None and resp is not None and len(resp.data) != e.length:
        raise session.fail("response length", str(e.length), str(len(resp.data)))
    if pin is None:
        return
    after: int | None = None
    if e.tries is not None or e.blocked is not None:
        after = session.tries(pin, sfi=sfi, blocked=e.tries == 0 or e.blocked is True)
        session.saw_tries(pin, "after", after)
    if e.tries is not None and after is not None:
        want = tries_expected(e.tries, before, session.target.max_tries(pin))
        if after != want:
            raise session.fail(f"tries left of {pin}", f"{want} ({e.tries})", str(after))
        left = SW.retries_left(resp.sw) if resp is not None else None
        if left is not None and answered_tries and left != after:
            raise session.fail(
                f"63Cx of {pin} against the status query",
                f"x = {after} (what the query says)",
                f"x = {left}",
            )
    if e.blocked is not None and after is not None and (after == 0) != e.blocked:
        raise session.fail(f"{pin} blocked", str(e.blocked), f"{after} tries left")
    if e.verified is not None:
        if Capability.OBSERVE_VERIFIED not in session.target.capabilities:
            session.note(f"verified state of {pin} is not observable on a real card: not checked")
        elif session.target.verified(pin) != e.verified:
            raise session.fail(f"{pin} verified", str(e.verified), str(not e.verified))
