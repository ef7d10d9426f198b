"""The My Number card, as the real-card guard (:mod:`harness.guard`) needs to know it.

Which application and PIN object a command addresses, which commands can spend a PIN try and
which cannot. Anything not listed here is unknown to the guard, and unknown counts as
dangerous: it needs the destructive opt-in on a real card.

The facts it relies on: the empty VERIFY ``00 20 00 80`` answers ``63 Cx`` without spending a try
(confirmed by several clients and a real-card trace); a correct VERIFY puts the counter back
to its maximum (confirmed); VERIFY with data, CHANGE REFERENCE DATA ``00 24``, JICSAP CHANGE
KEY ``80 32`` and RESET RETRY COUNTER ``00 2C`` may spend a try (a wrong old PIN or reset code
is a wrong try); SELECT, READ BINARY, READ RECORD, GET RESPONSE, GET CHALLENGE, GET DATA and
COMPUTE DIGITAL SIGNATURE present no PIN and touch no counter.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.emulator.layout import APPLICATIONS, PINS, ChangeCommand


@dataclass(frozen=True)
class GuardFacts:
    """The card knowledge the guard runs on."""

    #: application id → AID (a SELECT by DF name may give a prefix of it)
    applications: dict[str, bytes]
    #: (application id, FID == SFI) → PIN id
    pins: dict[tuple[str, int], str]
    #: PIN id → (application id, FID)
    where: dict[str, tuple[str, int]]
    #: (CLA, INS) of commands that present no PIN and never touch a retry counter
    safe: frozenset[tuple[int, int]]
    #: (CLA, INS) of VERIFY
    verify: tuple[int, int]
    #: (CLA, INS) of commands that change a PIN's value and may spend a try
    change: frozenset[tuple[int, int]]
    #: (CLA, INS) of commands that re-initialise a PIN and may spend a try
    reset: frozenset[tuple[int, int]]
    #: PIN id → its maximum of tries, where that fact is established (several public
    #: sources agree); the others are observed on each card, never assumed
    max_tries: dict[str, int]
    #: PIN id → (CLA, INS, P1) of the command that changes it after a VERIFY (P2 80)
    change_command: dict[str, tuple[int, int, int]]
    #: how an operator restores a blocked PIN of this card
    unblock_hint: str


FACTS = GuardFacts(
    applications={a.id: a.aid for a in APPLICATIONS},
    pins={(p.app, p.fid): p.id for p in PINS},
    where={p.id: (p.app, p.fid) for p in PINS},
    safe=frozenset(
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
    verify=(0x00, 0x20),
    change=frozenset({(0x00, 0x24), (0x80, 0x32)}),
    reset=frozenset({(0x00, 0x2C)}),
    # JPKI 3 and 5 (OpenSC's driver, a real-card trace, J-LIS and municipal FAQs); the
    # 4-digit 入力補助 and 住基 PINs 3 (municipal tables); the verification codes: disputed
    max_tries={"jpki-auth": 3, "jpki-sign": 5, "kenhojo-pin": 3, "juki-pin": 3, "common-pin": 3},
    change_command={
        p.id: (0x00, 0x24, 0x01) if p.change is ChangeCommand.ISO else (0x80, 0x32, 0x00)
        for p in PINS
        if p.change is not ChangeCommand.NONE
    },
    unblock_hint="re-initialise it (municipal window or kiosk)",
)
