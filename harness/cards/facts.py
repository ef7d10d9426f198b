"""Card facts with their provenance: what a card profile claims, how sure it is, and why.

Every behaviour a card profile encodes (a maximum of tries, a status word, whether a command
costs a try) is a :class:`Fact` with a :class:`Confidence` and its source. What a check may
conclude from a fact depends on both the fact and the card:

- on pinloop's emulated card every fact is a checked expectation (the emulator implements the
  profile, so a difference is the emulator's defect);
- on any other card a check that rests on a fact below :attr:`Confidence.ONE_SOURCE` is never
  a device defect: the harness *observes* what the card did and reports it ("card facts
  observed" in the summary, the JSON record and Allure). A fact's ``floor`` is the weaker part
  of it that is established (e.g. "refused" where the exact status word is not): that part
  stays a checked expectation on every card.

A lab promotes an observed fact to an expectation in its own card profile
(:mod:`harness.cards.lab`): the fact then has :attr:`Confidence.LAB` and the lab's source.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Confidence(IntEnum):
    """How far a fact is established, lowest first."""

    #: nothing public says so; the emulator had to choose
    UNKNOWN = 0
    #: one source says so, and it cannot be checked (a careful claim)
    CLAIM = 1
    #: one credible source based on a real card, not confirmed independently
    ONE_SOURCE = 2
    #: two independent sources agree, or a real-card trace shows it
    CONFIRMED = 3
    #: the lab established it for its own card (its card profile says so)
    LAB = 4

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, text: str) -> Confidence:
        return cls[text.upper().replace("-", "_")]


#: the lowest confidence a check on a real card may assert
ASSERTED = Confidence.ONE_SOURCE


@dataclass(frozen=True, slots=True)
class Fact:
    """One behaviour of a card, with how far it is established and where it comes from."""

    #: kebab-case id, named by scenarios (``rests_on:``) and by a lab's card profile
    id: str
    #: what the card does, in one sentence
    statement: str
    confidence: Confidence
    #: where it comes from (clients, traces, FAQs), or why nothing is known
    source: str
    #: the value when the fact is a figure (a maximum of tries); None: not known
    value: int | bool | None = None
    #: an expectation (a status word class of :data:`harness.run.expect.SW_NAMES`) that holds
    #: even where the fact itself is not established, checked on every card: ``refused``
    floor: str | None = None

    @property
    def established(self) -> bool:
        """Whether a check on a real card may assert it."""
        return self.confidence >= ASSERTED

    def describe(self) -> str:
        return f"{self.statement} [{self.confidence.label}: {self.source}]"


def max_tries_fact_id(pin_id: str) -> str:
    """The id of the fact "the maximum of tries of ``pin_id``"."""
    return f"max-tries.{pin_id}"


__all__ = ["ASSERTED", "Confidence", "Fact", "max_tries_fact_id"]
