"""What pinloop knows about a kind of card, kept out of the generic engine.

Each kind of card is a :class:`~harness.cards.profile.CardProfile`; the first one is the
Japanese My Number card (:mod:`harness.cards.jpki`). A profile is named on the command line
(``--pinloop-card-profile``) by its short name, or by ``module:ATTRIBUTE`` for one kept
elsewhere (another kind of card, or the tests'); a lab's own test card, as it is, is a
``*.card.yaml`` file on top of a kind (:mod:`harness.cards.lab`).
"""

from __future__ import annotations

import importlib

from harness.cards.lab import is_lab_file, load_lab_card
from harness.cards.profile import CardProfile
from harness.errors import HarnessError

#: short name → where the profile is (imported only when asked for)
KNOWN = {"jpki": "harness.cards.jpki:PROFILE"}


class UnknownCardProfile(HarnessError):
    """No card profile of that name (a configuration fault of the run)."""


def card_profile(name: str) -> CardProfile:
    """The profile called ``name`` (a short name, or ``module:ATTRIBUTE``), or the lab's card
    profile in the file ``name`` (``*.card.yaml``: :mod:`harness.cards.lab`)."""
    if is_lab_file(name):
        return load_lab_card(name, card_profile)
    where = KNOWN.get(name, name)
    module, _, attr = where.partition(":")
    if not attr:
        raise UnknownCardProfile(
            f"unknown card profile {name!r}: use one of {', '.join(KNOWN)} or module:ATTRIBUTE"
        )
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownCardProfile(f"card profile {name!r} cannot be loaded: {exc}") from None
    if not isinstance(found, CardProfile):
        raise UnknownCardProfile(f"card profile {name!r}: {where} is not a CardProfile")
    return found


__all__ = ["KNOWN", "CardProfile", "UnknownCardProfile", "card_profile"]
