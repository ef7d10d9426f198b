"""What the targets need of an emulated card, whichever card it emulates.

The built-in emulator (:mod:`harness.emulator`) implements the JPKI card; a card profile may
name another one (:attr:`CardProfile.emulator <harness.cards.profile.CardProfile.emulator>`,
``module:ATTRIBUTE`` of a factory). The in-process and pcscd targets, the in-process transport,
the vpcd server and the emulated power switch use only what :class:`CardEmulator` and
:class:`Emulation` name. Nothing here imports the emulator.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping
from typing import Protocol

from harness.cards.profile import CardProfile
from harness.errors import ConfigError

#: ``hook(write_point, phase)``, phase ``"before"`` or ``"after"``; raise CardPowerLost to tear
WriteHook = Callable[[str, str], None]


class CardEmulator(Protocol):
    """One emulated card: power, ATR, APDUs in and out, and what a test may look at."""

    #: called around every NVM write (a power cut tears the command there)
    write_hook: WriteHook | None

    @property
    def card_profile(self) -> CardProfile:
        """The card this emulator implements."""

    @property
    def label(self) -> str:
        """What logs call this card (its state's name)."""

    @property
    def description(self) -> str:
        """What reports call this card (its state and model)."""

    @property
    def powered(self) -> bool: ...

    @property
    def atr(self) -> bytes: ...

    @property
    def apdus(self) -> int:
        """APDUs the card was sent (powered or not)."""

    @property
    def verified(self) -> Collection[str]:
        """The PINs verified since the card was last powered on."""

    def power_on(self) -> bytes:
        """Cold reset (RAM state cleared, NVM kept); returns the ATR."""

    def power_off(self) -> None: ...

    def reset(self) -> bytes:
        """Warm reset; returns the ATR."""

    def transmit(self, raw: bytes) -> bytes:
        """Bytes in, bytes out; raises CardNotPowered when unpowered."""


class Emulation(Protocol):
    """An emulated card with its personalisation: its PINs, and how it is put back to the
    freshly personalised state before every scenario."""

    @property
    def card(self) -> CardEmulator: ...

    def secrets(self) -> Mapping[str, bytes]:
        """PIN id → its personalised value."""

    def max_tries(self, pin_id: str) -> int: ...

    def restore(self) -> None:
        """The card's NVM back to its personalised state (the card object stays)."""


def emulation_for(card: CardProfile | None, defect: str | None) -> Emulation | None:
    """The emulator ``card``'s profile names, built with ``defect``; None for the built-in
    emulator (no profile given, or one that names none)."""
    if card is None or card.emulator is None:
        return None
    module, _, attr = card.emulator.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"card profile {card.name}: its emulator {card.emulator} cannot be loaded: {exc}"
        ) from None
    emulation: Emulation = factory(defect)
    if emulation.card.card_profile is not card:
        raise ConfigError(
            f"card profile {card.name}: its emulator {card.emulator} implements the "
            f"{emulation.card.card_profile.name} card"
        )
    return emulation
