"""What the My Number card does, fact by fact, with how far each is established.

Confidence (:class:`~harness.cards.facts.Confidence`): *confirmed* where two independent
public sources agree or a real-card trace shows it; *one-source* for one credible source based
on a real card; *claim* for a careful but uncheckable claim (mostly the one reverse-engineered
client that probed cards with the JICSAP command set); *unknown* where nothing public says so
and the emulator had to choose. The maxima of tries are the PINs' own facts
(:mod:`harness.cards.jpki.layout`). Sources are named by project and file; docs/cards/jpki.md
has the table for people.
"""

from __future__ import annotations

from harness.cards.facts import Confidence, Fact

C, S, CL, U = (
    Confidence.CONFIRMED,
    Confidence.ONE_SOURCE,
    Confidence.CLAIM,
    Confidence.UNKNOWN,
)

FACTS: tuple[Fact, ...] = (
    Fact(
        "status-query-free",
        "the empty VERIFY (00 20 00 80, no data) answers 63 Cx and spends no try, even right "
        "after a correct VERIFY",
        C,
        "OpenSC jpki driver (GET INFO), the myna tools, TRET, jpki-rs; a real-card trace in "
        "OpenSC PR #959 (90 00, then 63 C3)",
    ),
    Fact(
        "wrong-decrements",
        "a wrong VERIFY answers 63 C(x-1); the try that exhausts the counter answers 63 C0",
        C,
        "myna-go, nfcpy_mynacard, TRET and gebo decode 63 Cx; myna-go and the JICSAP-probing "
        "client name 63 C0 for the exhausting try",
    ),
    Fact(
        "correct-restores-max",
        "a correct VERIFY puts the counter back to its maximum",
        C,
        "municipal FAQs (Tsu, Suginami), the J-LIS support site, the real-card trace of "
        "OpenSC PR #959",
    ),
    Fact(
        "blocked-refuses-verify",
        "on a blocked PIN every VERIFY with data, right or wrong, answers 69 84",
        C,
        "myna-go, nfcpy_mynacard, the WebUSB client and gebo code 69 84 as blocked; a correct "
        "value when blocked is inferred from the FAQs (usable only after re-initialisation)",
    ),
    Fact(
        "blocked-query-63c0",
        "the status query of a blocked PIN answers 63 C0",
        CL,
        "one reverse-engineered client (its blocked EF 0012 of 入力補助); that client also "
        "accepts 69 84 for the query",
    ),
    Fact(
        "counters-independent",
        "each PIN object has its own counter; blocking one leaves the others as they were",
        C,
        "each PIN is its own IEF with its own 63 Cx (myna reads 7, TRET 4); the FAQs give "
        "different limits; a user report of a 照合番号B lock that a JPKI reset left in place",
    ),
    Fact(
        "counters-survive-power",
        "the counters are non-volatile: a power cycle or another session keeps them",
        C,
        "the J-LIS support site (failures carried to the next application); a news report of "
        "a lock from failures spread over services",
    ),
    Fact(
        "reselect-logs-out",
        "selecting the application again clears the verified state; selecting an EF does not",
        C,
        "OpenSC jpki driver (its logout selects the application), the myna tools",
    ),
    Fact(
        "verify-by-sfi",
        "VERIFY with P2 = 80|SFI addresses the PIN without a SELECT of its EF",
        S,
        "a TypeScript client (verify.ts, p2 = 0x80 + ef) and a test vector of the "
        "JICSAP-probing client (00 20 00 98 ...)",
    ),
    Fact(
        "status-query-by-sfi",
        "the status query by SFI (00 20 00 80|SFI, no data) answers 63 Cx like the plain one",
        CL,
        "the JICSAP-probing client only",
    ),
    Fact(
        "wrong-length-free",
        "a VERIFY whose data has the wrong length for the PIN answers 67 00 and spends no try",
        U,
        "no trace: every client checks the length before it sends; the emulator chose 67 00, free",
    ),
    Fact(
        "bad-charset-free",
        "a VERIFY whose data has characters the PIN's format does not admit spends no try",
        U,
        "no trace: clients check the format before they send",
    ),
    Fact(
        "lowercase-costs-a-try",
        "a lower-case sign password is compared as sent (the card does not fold case): it is "
        "a wrong value and costs a try",
        CL,
        "the JICSAP-probing client (its PIN module: the card compares bytes); every client "
        "upper-cases before it sends, so no trace exists",
    ),
    Fact(
        "access-rules",
        "入力補助: its PIN opens EF 0001-0003, 照合番号A EF 0001 only, 照合番号B EF 0002 only; "
        "the sign certificate EF 0001 of JPKI needs the sign password",
        S,
        "the JICSAP-probing client and nfcpy_mynacard's paths (入力補助); OpenSC issue #3169 "
        "real trace (sign certificate: 69 82)",
    ),
    Fact(
        "signing-needs-verify",
        "COMPUTE DIGITAL SIGNATURE with a key whose PIN is not verified answers 69 82",
        U,
        "inferred: no public trace; one client expects 69 82, 69 83 or 63 00 there",
        floor="refused",
    ),
    Fact(
        "change-needs-verify",
        "CHANGE REFERENCE DATA before the old PIN is verified answers 69 82 and spends no try",
        U,
        "no public trace; the clients always VERIFY first",
        floor="refused",
    ),
    Fact(
        "change-refused-blocked",
        "a blocked PIN cannot be changed: CHANGE answers 69 84",
        U,
        "no public trace; follows from the FAQs (a blocked PIN needs re-initialisation)",
        floor="refused",
    ),
    Fact(
        "change-checks-format",
        "CHANGE with a new value outside the PIN's format (length, characters) is refused "
        "(67 00 or 6A 80) and the old value stays",
        U,
        "one client says the card enforces each PIN's format, with no status word; no trace",
        floor="refused",
    ),
)

#: what a step does → the fact a check of it rests on (the features are the step kinds')
STEP_FACTS: dict[str, str] = {
    "verify:short": "wrong-length-free",
    "verify:long": "wrong-length-free",
    "verify:bad-charset": "bad-charset-free",
    "verify:lower": "lowercase-costs-a-try",
    "verify:sfi": "verify-by-sfi",
    "status:sfi": "status-query-by-sfi",
    "query:blocked": "blocked-query-63c0",
    "change:short": "change-checks-format",
    "change:long": "change-checks-format",
    "change:bad-charset": "change-checks-format",
    "change:lower": "change-checks-format",
}

__all__ = ["FACTS", "STEP_FACTS"]
