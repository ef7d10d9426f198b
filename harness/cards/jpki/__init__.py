"""The Japanese My Number card (個人番号カード) and its JPKI application: the card profile.

- :mod:`~harness.cards.jpki.layout`  applications, EFs and PIN objects, with their sources
- :mod:`~harness.cards.jpki.facts`   the card's behaviours checks rest on, each with its
  confidence and source

What the real-card guard relies on (:mod:`harness.safety.guard`): the empty VERIFY ``00 20 00 80``
answers ``63 Cx`` without spending a try (confirmed by several clients and a real-card trace);
a correct VERIFY puts the counter back to its maximum (confirmed); VERIFY with data, CHANGE
REFERENCE DATA ``00 24``, JICSAP CHANGE KEY ``80 32`` and RESET RETRY COUNTER ``00 2C`` may
spend a try (a wrong old PIN or reset code is a wrong try); SELECT, READ BINARY, READ RECORD,
GET RESPONSE, GET CHALLENGE, GET DATA and COMPUTE DIGITAL SIGNATURE present no PIN and touch
no counter. Anything not listed is unknown to the guard, and unknown counts as dangerous.

The maxima of tries: JPKI 3 and 5 (OpenSC's driver, a real-card trace, J-LIS and municipal
FAQs); the 4-digit 入力補助 and 住基 PINs 3 (municipal tables); the verification codes:
disputed (observed on each card, never assumed).
"""

from __future__ import annotations

from harness.cards.jpki.facts import FACTS as CARD_FACTS
from harness.cards.jpki.facts import STEP_FACTS
from harness.cards.jpki.layout import APPLICATIONS, FILES, PINS
from harness.cards.profile import (
    CardProfile,
    GuardFacts,
    RealCardStart,
    ReportLabels,
    SignKey,
)

PROFILE = CardProfile(
    name="jpki",
    applications=APPLICATIONS,
    pins=PINS,
    files=FILES,
    labels=ReportLabels(card="My Number card (JPKI)"),
    start=RealCardStart(
        status_query_free=True,
        verify_restores=True,
        unblock_hint="re-initialise it (municipal window or kiosk)",
    ),
    extra_pin_sets={
        "user": tuple(p.id for p in PINS if p.settable),
        "card-face": tuple(p.id for p in PINS if not p.settable),
        "jpki": ("jpki-auth", "jpki-sign"),
    },
    sign_keys={
        "auth": SignKey("jpki", key_fid=0x0017, cert_fid=0x000A),
        "sign": SignKey("jpki", key_fid=0x001A, cert_fid=0x0001),
    },
    reinit_routes=("window", "kiosk"),
    safe_commands=frozenset(
        {
            (0x00, 0xA4),  # SELECT
            (0x00, 0xB0),  # READ BINARY
            (0x00, 0xB2),  # READ RECORD
            (0x00, 0xC0),  # GET RESPONSE
            (0x00, 0x84),  # GET CHALLENGE
            (0x00, 0xCA),  # GET DATA
            (0x80, 0x2A),  # COMPUTE DIGITAL SIGNATURE
        }
    ),
    verify_command=(0x00, 0x20),
    reset_commands=frozenset({(0x00, 0x2C)}),
    facts=CARD_FACTS,
    step_facts=STEP_FACTS,
)

#: what the real-card guard knows about this card
FACTS: GuardFacts = PROFILE.guard_facts

__all__ = ["FACTS", "PROFILE", "GuardFacts"]
