"""How many tries of each PIN a scenario may have spent at once: what it declares by its steps.

A real card's guard lets a scenario bring a PIN down by this many tries from where it started,
never further and never to 0 (:mod:`harness.safety.guard`). The count follows the steps in order:
each value that is not the PIN (``wrong``, ``short``, a literal, ...) adds one try, a right
VERIFY puts the count back to 0, and steps that restore after every try (latency of wrong
VERIFYs, leak tests, timed cuts) need one try at a time. Raw ``apdu:`` steps declare nothing:
a raw VERIFY with a wrong value is refused on a real card unless destructive runs are enabled.
"""

from __future__ import annotations

from harness.scenario import model as M
from harness.scenario.schema import RIGHT_VALUES
from harness.steps.change import Change
from harness.steps.latency import Latency
from harness.steps.leak import Leak
from harness.steps.reinit import Reinit
from harness.steps.tear import Tear
from harness.steps.verify import Verify


def may_spend(step: M.Step) -> bool:
    """Whether ``step`` may spend a try of its PIN (a value that is not the PIN, a CHANGE or
    re-initialisation, a timing series of wrong values, a cut)."""
    if isinstance(step, Verify):
        return any(not (isinstance(v, str) and v in RIGHT_VALUES) for v in step.values)
    if isinstance(step, Latency):
        return step.of == "wrong"
    return isinstance(step, Change | Reinit | Leak | Tear)


def declared_spend(scenario: M.Scenario, max_tries: dict[str, int] | None = None) -> dict[str, int]:
    """PIN id → the largest number of tries the steps may have spent at one time."""
    out: dict[str, int] = {}
    peak: dict[str, int] = {}

    def spend(pin: str, n: int = 1) -> None:
        out[pin] = out.get(pin, 0) + n
        peak[pin] = max(peak.get(pin, 0), out[pin])

    for step in scenario.steps:
        if isinstance(step, Verify):
            most = (max_tries or {}).get(step.pin, 15)
            for _ in range(step.repeat.times(most)):
                for v in step.values:
                    if isinstance(v, str) and v in RIGHT_VALUES:
                        out[step.pin] = 0
                    else:
                        spend(step.pin)
        elif isinstance(step, Change | Reinit):
            spend(step.pin)  # a wrong old PIN or reset code is a wrong try
        elif isinstance(step, Latency):
            if step.of == "wrong":
                spend(step.pin)
                out[step.pin] = 0
        elif isinstance(step, Leak):
            if step.classes == "blocked":
                spend(step.pin, (max_tries or {}).get(step.pin, 15) + 1)
            else:
                spend(step.pin)
                out[step.pin] = 0
        elif isinstance(step, Tear):
            spend(step.pin)
            if step.delays_us:
                out[step.pin] = 0
    return peak
