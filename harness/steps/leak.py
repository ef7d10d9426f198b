"""``leak: {samples, classes?}``: a statistical timing-leak test of VERIFY between two classes
of input (:mod:`harness.timing`); a verdict other than pass must replicate."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.apdu import commands as C
from harness.apdu import sw as SW
from harness.apdu.model import CommandAPDU
from harness.errors import HarnessError
from harness.scenario.model import Step
from harness.steps import NOTHING, StepKind

if TYPE_CHECKING:
    from harness.run.session import CardSession
    from harness.scenario.parse import Parse
    from harness.scenario.schema import CardRefs
    from harness.timing import LeakResult


@dataclass(frozen=True)
class Leak(Step):
    action: ClassVar[str] = "leak"
    pin: str = ""
    samples: int = 300
    classes: str = "first-vs-last"


def schema(refs: CardRefs) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["samples"],
        "properties": {
            "classes": {"enum": ["first-vs-last", "right-vs-wrong", "blocked"]},
            "samples": {"type": "integer", "minimum": 20, "maximum": 20000},
        },
        "description": "a statistical timing leak test of two input classes (permutation test)",
    }


def parse(c: Parse, body: Any, common: dict[str, Any]) -> Leak:
    if body.get("classes") == "blocked":
        c.need_tag("destructive", "leak with classes blocked blocks the PIN")
    return Leak(
        **common,
        pin=c.pin(),
        samples=int(body["samples"]),
        classes=str(body.get("classes", "first-vs-last")),
    )


def _classes(
    session: CardSession, s: Leak, restore: CommandAPDU
) -> tuple[dict[str, CommandAPDU], CommandAPDU | None]:
    """The two classes of command, and what puts the counter back after a wrong one."""
    if s.classes == "first-vs-last":
        return {
            "wrong at the first character": C.verify(session.value(s.pin, "wrong-first")),
            "wrong at the last character": C.verify(session.value(s.pin, "wrong-last")),
        }, restore
    if s.classes == "right-vs-wrong":
        return {"right": restore, "wrong": C.verify(session.value(s.pin, "wrong"))}, restore
    wrong = C.verify(session.value(s.pin, "wrong"))
    tries = session.target.max_tries(s.pin)
    for _ in range(tries + 1):  # bounded: a card that never blocks must not hang us
        if session.tx(wrong).sw == SW.REFERENCE_DATA_BLOCKED:
            break
    else:
        raise session.fail(
            f"{s.pin} blocked by wrong tries before the leak test",
            f"69 84 within {tries + 1} wrong tries",
            "never blocked",
        )
    return {"blocked, right": restore, "blocked, wrong": wrong}, None


def run(session: CardSession, s: Leak) -> None:
    """Two classes of VERIFY inputs, interleaved at random; Welch t raw and cropped.

    ``first-vs-last``: wrong at the first vs at the last character (the counter is put back
    with the right PIN after every wrong try); ``right-vs-wrong``; ``blocked``: the PIN is
    blocked first, then the right and a wrong value (no NVM write in either: a difference
    means the card still compares). A verdict other than pass is measured again, fresh: a
    leak is a leak only when an independent run finds it too (same sign).
    """
    from harness.timing import ALPHA, MIN_LEAK_US, leak_test

    session.select_pin(s.pin)
    right = session.value(s.pin, "right")
    classes, restore = _classes(session, s, C.verify(right))
    names = list(classes)
    samples = measure(session, classes, restore, s.samples)
    session.timing_series = samples
    result = leak_test(samples[names[0]], samples[names[1]])
    session.lab_done()
    _keep(session, result, "")
    session.note(f"leak test {s.classes} ({names[0]} vs {names[1]}): {result.describe()}")
    if result.verdict != "pass":
        # a verdict other than pass must replicate in an independent run (fresh samples, a
        # new random order) before it is one: a device defect is the worst false verdict
        again = measure(session, classes, restore, s.samples)
        second = leak_test(again[names[0]], again[names[1]])
        session.lab_done()
        _keep(session, second, " (repeat)")
        session.note(f"independent repeat: {second.describe()}")
        # the direction of the statistic the verdict rests on (the largest |t|, often a
        # crop of the fastest samples), not of the raw means: one stall of a few ms in
        # one class turns the raw mean difference round while the leak stays
        same_sign = (second.t_max > 0) == (result.t_max > 0)
        if second.verdict == "pass":
            session.note(f"the first run's {result.verdict} did not replicate: pass")
            return
        if not (result.verdict == "leak" and second.verdict == "leak" and same_sign):
            both = " in opposite directions" if result.verdict == second.verdict else ""
            raise HarnessError(
                f"timing bench too noisy: {result.verdict}, then {second.verdict}{both} in "
                f"an independent run (A/A control |t| = {abs(result.t_aa):.1f}, then "
                f"{abs(second.t_aa):.1f}); nothing can be concluded"
            )
    if result.verdict == "leak":
        raise session.fail(
            f"VERIFY time depends on the input ({names[0]} vs {names[1]})",
            f"permutation p >= {ALPHA:g} for max |t| over raw and 100 crops, or a "
            f"difference below {MIN_LEAK_US:g} µs (no leak above "
            f"{max(result.mde_us, MIN_LEAK_US):.1f} µs)",
            f"|t| = {abs(result.t_max):.1f}, difference {result.effect_us:+.1f} µs where "
            f"|t| is largest (raw {result.mean_difference_us:+.1f} µs), replicated in an "
            "independent run",
        )


def _keep(session: CardSession, result: LeakResult, suffix: str) -> None:
    """The figures of a leak test in the step's record."""
    for name in ("t_max", "p", "effect_us", "mean_difference_us", "mde_us", "t_aa"):
        value = getattr(result, name, None)
        if isinstance(value, int | float):
            session.measured(name + suffix, float(value))


def measure(
    session: CardSession, classes: dict[str, CommandAPDU], restore: CommandAPDU | None, n: int
) -> dict[str, list[float]]:
    """``n`` samples of each class, interleaved in a random order, after 20 warm-ups; the
    counter put back with ``restore`` after every wrong try."""
    names = list(classes)
    order = names * n
    random.shuffle(order)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for name in order[:20]:  # warm-up, discarded
        session.sample(classes[name], "warm-up")
        if restore is not None:
            session.sample(restore, "restore")
    for name in order:
        cmd = classes[name]
        resp, us = session.sample(cmd)
        samples[name].append(us)
        if (
            restore is not None
            and cmd is not restore
            and not resp.ok
            and not session.sample(restore, "restore")[0].ok
        ):
            raise session.fail("restoring the counter with the right PIN", "9000", "not 9000")
    return samples


KIND = StepKind(
    "leak",
    Leak,
    schema,
    parse,
    run,
    doc=(
        "statistical timing leak test of two classes of VERIFY inputs (a permutation test; "
        "see [timing](timing.md))"
    ),
    expects=lambda s: NOTHING,
    timing=True,
)
