"""Expectations of scenario steps, and the failure a broken one raises.

A failed expectation is a :class:`~harness.errors.DeviceDefect` (an ``AssertionError``: the
test *failed*), naming the rule the scenario checks, the step's file and line, expected versus
actual, and the APDU trace of that step with PINs masked.
"""

from __future__ import annotations

from harness.apdu import sw as SW
from harness.errors import DeviceDefect
from harness.scenario.model import Scenario, Step

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
        lines += ["  | " + s for s in self.step.snippet.splitlines()]
        if self.trace:
            lines.append("  APDU trace of the step (PINs masked):")
            lines += ["    " + t for t in self.trace[-12:]]
        return "\n".join(lines)


def sw_matches(expected: str, sw: int) -> bool:
    if expected in SW_NAMES:
        return sw == SW_NAMES[expected]
    if expected.upper() == "63CX":
        return SW.retries_left(sw) is not None
    return sw == int(expected, 16)


def describe_sw(expected: str) -> str:
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
