"""What a target can do, and what a scenario needs of one.

A target declares the capabilities of its kind (:attr:`harness.targets.Target.declared`); its
reader profile adds the reader's own (:data:`READER`: ``extended_apdu``, ``interface``, a power
switch that cuts in the middle of a command). A scenario needs the capabilities its tags stand
for (:data:`TAG_REQUIRES`), those its steps need (a ``tear: {command}`` step needs
``write-points``, a ``fresh`` PIN value ``fresh-pins`` …) and those it lists under
``requires:``. Which target may run which scenario, and what is refused when it runs, is
:mod:`harness.safety`'s.

Nothing here imports the rest of pinloop: the scenario loader, the targets and the safety rules
all read this one list.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Capability(StrEnum):
    """One thing a target can do; its value is the name scenarios, skips and docs use."""

    #: the card is pinloop's emulator, checked to be this target's own: no citizen's card
    EMULATOR = "emulator"
    #: PIN values written in a scenario (``{literal: …}``) may be sent: the card's PINs are
    #: the test values of its personalisation, not a citizen's secrets
    LITERAL_PINS = "literal-pins"
    #: a PIN may be set to a random value nobody keeps (``fresh``): the whole card is put back
    #: to its personalisation before every scenario
    FRESH_PINS = "fresh-pins"
    #: a scenario may block or change this card's PINs (tag ``destructive``): the emulated
    #: card is restored before every scenario; a real reader has it only when the lab opts in
    #: with ``--pinloop-destructive-reader``
    BLOCK_PINS = "block-pins"
    #: the card has the labelled test re-initialisation (``reinit``) and the target knows its
    #: reset codes
    TEST_REINIT = "test-reinit"
    #: whether a PIN is verified can be read from outside the card (``expect: {verified}``;
    #: without it the expectation is noted as not checked)
    OBSERVE_VERIFIED = "observe-verified"
    #: the power can be cut at a named NVM write point of the card (``tear: {command}``)
    WRITE_POINTS = "write-points"
    #: the reader's power switch can cut a command while it runs (``tear: {delays_us}``): a
    #: relay, or the emulated card's own supply
    MID_COMMAND_CUT = "mid-command-cut"
    #: the reader carries extended-length APDUs (profile ``extended_apdu: true``)
    EXTENDED_APDU = "extended-apdu"
    #: the reader talks to the card through its contacts (profile ``interface: contact``)
    CONTACT = "contact"
    #: the reader talks to the card over the air (profile ``interface: contactless``)
    CONTACTLESS = "contactless"


#: one line per capability, for the docs and ``pinloop``'s listings
MEANING: dict[Capability, str] = {
    Capability.EMULATOR: "the card is pinloop's emulator, checked to be the target's own",
    Capability.LITERAL_PINS: "PIN values written in a scenario (`{literal: …}`) may be sent",
    Capability.FRESH_PINS: "a PIN may be set to a random value nobody keeps (`fresh`): the "
    "card is restored before every scenario",
    Capability.BLOCK_PINS: "a scenario may block or change the card's PINs; a real reader has "
    "it only with `--pinloop-destructive-reader`",
    Capability.TEST_REINIT: "the card's test re-initialisation (`reinit`), its reset codes known",
    Capability.OBSERVE_VERIFIED: "the card's verified state is observable (`expect: "
    "{verified}`; otherwise noted as not checked)",
    Capability.WRITE_POINTS: "the power can be cut at each NVM write point (`tear: {command}`)",
    Capability.MID_COMMAND_CUT: "the power switch cuts a running command (`tear: {delays_us}`): "
    "a relay or the emulated supply",
    Capability.EXTENDED_APDU: "the reader carries extended-length APDUs (profile "
    "`extended_apdu: true`)",
    Capability.CONTACT: "a contact reader (profile `interface: contact`)",
    Capability.CONTACTLESS: "a contactless reader (profile `interface: contactless`)",
}

#: what a reader profile may give a target: the reader's own abilities, never one that lets a
#: scenario do more to the card
READER = frozenset(
    {
        Capability.MID_COMMAND_CUT,
        Capability.EXTENDED_APDU,
        Capability.CONTACT,
        Capability.CONTACTLESS,
    }
)

#: a reader profile's ``interface`` → the capability it gives (``virtual``: neither)
INTERFACES: dict[str, Capability | None] = {
    "contact": Capability.CONTACT,
    "contactless": Capability.CONTACTLESS,
    "virtual": None,
}

#: how a target that lacks a capability can get it (a skip says so)
HOW_TO_GET: dict[Capability, str] = {
    Capability.MID_COMMAND_CUT: "give the reader a relay (power_switch in readers/)",
    Capability.EXTENDED_APDU: "a reader that carries them says extended_apdu: true in its profile",
    Capability.CONTACT: "a contact reader says interface: contact in its profile",
    Capability.CONTACTLESS: "a contactless reader says interface: contactless in its profile",
}

#: the capabilities each scenario tag stands for
TAG_REQUIRES: dict[str, frozenset[Capability]] = {
    "destructive": frozenset({Capability.BLOCK_PINS}),
    "emulator-only": frozenset({Capability.EMULATOR}),
    "needs-reinit": frozenset({Capability.TEST_REINIT}),
}

#: what pinloop's emulated targets (in-process, pcscd) declare; the reader's capabilities
#: (extended APDUs, interface) come from their built-in reader profiles
EMULATED = (frozenset(Capability) - READER) | {Capability.MID_COMMAND_CUT}


def names(capabilities: Iterable[Capability]) -> str:
    """``a, b, c`` in the order of :class:`Capability`."""
    wanted = set(capabilities)
    return ", ".join(c.value for c in Capability if c in wanted)
