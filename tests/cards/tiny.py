"""A small ISO 7816 PIN card with one application: one user PIN (4-8 digits, 3 tries),
changed with CHANGE REFERENCE DATA; a blocked PIN is an operator's to unblock. It is built
from the generic card model only; its emulator is :mod:`tests.cards.tiny_card`."""

from __future__ import annotations

from harness.cards.profile import (
    Application,
    CardProfile,
    PinChange,
    PinSpec,
    RealCardStart,
    ReportLabels,
    digits,
)

CHANGE = PinChange("CHANGE REFERENCE DATA", 0x00, 0x24, 0x00)

PROFILE = CardProfile(
    name="tiny",
    applications=(Application("main", bytes.fromhex("A000000999010101"), "the one application"),),
    pins=(
        PinSpec(
            "user-pin",
            "main",
            0x0001,
            digits(4, 8),
            3,
            CHANGE,
            True,
            "user PIN",
            "the card's own data sheet",
        ),
    ),
    labels=ReportLabels(card="tiny test card"),
    start=RealCardStart(
        status_query_free=True,
        verify_restores=True,
        unblock_hint="unblock it with the issuer's tool",
    ),
    safe_commands=frozenset({(0x00, 0xA4), (0x00, 0xB0)}),
    pin_env_prefix="TINY_PIN_",
    emulator="tests.cards.tiny_card:emulation",
)
