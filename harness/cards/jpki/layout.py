"""The file system of the My Number card: applications, EFs and PIN objects.

Facts come from public clients and real-card traces (OpenSC's jpki driver, the myna tools,
municipal and J-LIS FAQs); where sources disagree the decision is noted beside the fact. What is
unknown publicly is marked ``[chosen]`` where the emulator had to pick a behaviour.

Identifiers used everywhere in pinloop (scenarios, state files, reports):

====================  ==========  ======  ==========================  =====  =================
PIN id                app         EF      format                      tries  change command
====================  ==========  ======  ==========================  =====  =================
``jpki-auth``         jpki        0018    4 digits                    3      ``00 24 01 80``
``jpki-sign``         jpki        001B    6-16 of A-Z 0-9             5      ``00 24 01 80``
``kenhojo-pin``       kenhojo     0011    4 digits                    3      ``00 24 01 80``
``kenhojo-a``         kenhojo     0014    12 digits (個人番号)         ?*     not changeable
``kenhojo-b``         kenhojo     0015    14 digits (照合番号B)        ?*     not changeable
``kenkaku-a``         kenkaku     0013    12 digits                   ?*     not changeable
``kenkaku-b``         kenkaku     0012    14 digits                   ?*     not changeable
``kenkaku-birth``     kenkaku     0011    6 digits (和暦 YYMMDD)       ?*     not changeable
``juki-pin``          juki        001C    4 digits                    3      ``80 32 00 80``
``common-pin``        common      001C    4 digits                    3      ``80 32 00 80``
====================  ==========  ======  ==========================  =====  =================

``*`` disputed or unknown publicly: an emulated card takes it from its card config
(``limits.verification-code``, default 10), a real card's is observed (the free status query
after a right VERIFY) and reported, never assumed; a lab may declare it in its card profile.
"""

from __future__ import annotations

from harness.cards.facts import Confidence
from harness.cards.profile import (
    UPPER_ALNUM,
    Application,
    DFLayout,
    FileKind,
    FileSpec,
    PinChange,
    PinFormat,
    PinSpec,
    digits,
)


class ChangeCommand:
    """How each PIN object of the card is changed (``None``: it is not)."""

    #: CHANGE REFERENCE DATA, JPKI and 券面事項入力補助
    ISO = PinChange("CHANGE REFERENCE DATA", 0x00, 0x24, 0x01)
    #: JICSAP CHANGE KEY, 住基 and 共通
    JICSAP = PinChange("JICSAP CHANGE KEY", 0x80, 0x32, 0x00)
    #: card-face numbers (照合番号A/B, birth date)
    NONE = None


_digits = digits
FOUR_DIGITS = digits(4)
SIGN_PASSWORD = PinFormat("A-Z 0-9", 6, 16, UPPER_ALNUM)

#: where the figures of the established maxima come from
_JPKI_TRIES = "OpenSC's jpki driver, a real-card trace, J-LIS and municipal FAQs"
_FOUR_DIGIT_TRIES = "municipal tables"

APPLICATIONS: tuple[Application, ...] = (
    Application("jpki", bytes.fromhex("D392F000260100000001"), "公的個人認証AP (JPKI)"),
    Application("kenhojo", bytes.fromhex("D3921000310001010408"), "券面事項入力補助AP"),
    Application("kenkaku", bytes.fromhex("D3921000310001010402"), "券面事項確認AP"),
    Application("juki", bytes.fromhex("D3921000310001010401"), "住基AP"),
    Application("common", bytes.fromhex("D3921000310001010100"), "共通AP"),
)
APPS_BY_ID = {a.id: a for a in APPLICATIONS}

#: why the maxima of the card-face numbers are not known: no official figure; the one public
#: fixture with a value (a DF/EF table with retry counts) says 3 for 券面確認 A and B, one
#: reverse-engineered client says ten for 照合番号B. An emulated card takes its figure from its
#: card config (``limits.verification-code``); on a real card it is observed.
_DISPUTED_TRIES = (
    "disputed: no official figure; one public fixture says 3 (券面確認 A/B), one "
    "reverse-engineered client says 10 (照合番号B); the free status query on a card with no "
    "wrong entry shows it"
)
_UNKNOWN = Confidence.UNKNOWN

PINS: tuple[PinSpec, ...] = (
    PinSpec(
        "jpki-auth",
        "jpki",
        0x0018,
        FOUR_DIGITS,
        3,
        ChangeCommand.ISO,
        True,
        "利用者証明用電子証明書 PIN",
        _JPKI_TRIES,
    ),
    PinSpec(
        "jpki-sign",
        "jpki",
        0x001B,
        SIGN_PASSWORD,
        5,
        ChangeCommand.ISO,
        True,
        "署名用電子証明書 パスワード",
        _JPKI_TRIES,
    ),
    PinSpec(
        "kenhojo-pin",
        "kenhojo",
        0x0011,
        FOUR_DIGITS,
        3,
        ChangeCommand.ISO,
        True,
        "券面事項入力補助用 暗証番号",
        _FOUR_DIGIT_TRIES,
    ),
    PinSpec(
        "kenhojo-a",
        "kenhojo",
        0x0014,
        _digits(12),
        None,
        ChangeCommand.NONE,
        False,
        "照合番号A (入力補助)",
        _DISPUTED_TRIES,
        _UNKNOWN,
    ),
    PinSpec(
        "kenhojo-b",
        "kenhojo",
        0x0015,
        _digits(14),
        None,
        ChangeCommand.NONE,
        False,
        "照合番号B (入力補助)",
        _DISPUTED_TRIES,
        _UNKNOWN,
    ),
    PinSpec(
        "kenkaku-a",
        "kenkaku",
        0x0013,
        _digits(12),
        None,
        ChangeCommand.NONE,
        False,
        "照合番号A (券面確認)",
        _DISPUTED_TRIES,
        _UNKNOWN,
    ),
    PinSpec(
        "kenkaku-b",
        "kenkaku",
        0x0012,
        _digits(14),
        None,
        ChangeCommand.NONE,
        False,
        "照合番号B (券面確認)",
        _DISPUTED_TRIES,
        _UNKNOWN,
    ),
    PinSpec(
        "kenkaku-birth",
        "kenkaku",
        0x0011,
        _digits(6),
        None,
        ChangeCommand.NONE,
        False,
        "生年月日 (券面確認)",
        "unknown: no public figure at all",
        _UNKNOWN,
    ),
    PinSpec(
        "juki-pin",
        "juki",
        0x001C,
        FOUR_DIGITS,
        3,
        ChangeCommand.JICSAP,
        True,
        "住民基本台帳用 暗証番号 (住基AP)",
        _FOUR_DIGIT_TRIES,
    ),
    PinSpec(
        "common-pin",
        "common",
        0x001C,
        FOUR_DIGITS,
        3,
        ChangeCommand.JICSAP,
        True,
        "住民基本台帳用 暗証番号 (共通AP)",
        _FOUR_DIGIT_TRIES,
    ),
)
PINS_BY_ID = {p.id: p for p in PINS}

#: PINs a user sets (and that a card config must give); the others derive from the identity
USER_PINS: tuple[str, ...] = tuple(p.id for p in PINS if p.settable)

#: the kiosk route (the J-LIS PIN reset service) re-initialises one JPKI PIN when the *other*
#: one is verified
KIOSK_PARTNER = {"jpki-auth": "jpki-sign", "jpki-sign": "jpki-auth"}

_KP = FileKind
FILES: tuple[FileSpec, ...] = (
    # JPKI AP
    FileSpec("jpki", 0x0001, _KP.TRANSPARENT, "jpki/sign-cert", ("jpki-sign",), "署名用電子証明書"),
    FileSpec("jpki", 0x0002, _KP.TRANSPARENT, "jpki/sign-ca-cert", (), "署名用CA証明書"),
    FileSpec("jpki", 0x000A, _KP.TRANSPARENT, "jpki/auth-cert", (), "利用者証明用電子証明書"),
    FileSpec("jpki", 0x000B, _KP.TRANSPARENT, "jpki/auth-ca-cert", (), "利用者証明用CA証明書"),
    FileSpec("jpki", 0x0006, _KP.TRANSPARENT, "jpki/token-info", (), "token info"),
    FileSpec("jpki", 0x0008, _KP.TRANSPARENT, "jpki/cert-availability", (), "certificates present"),
    FileSpec("jpki", 0x0017, _KP.KEY, "jpki-auth", ("jpki-auth",), "利用者証明用秘密鍵"),
    FileSpec("jpki", 0x001A, _KP.KEY, "jpki-sign", ("jpki-sign",), "署名用秘密鍵"),
    # 券面事項入力補助AP
    FileSpec(
        "kenhojo",
        0x0001,
        _KP.TRANSPARENT,
        "kenhojo/my-number",
        ("kenhojo-pin", "kenhojo-a"),
        "個人番号",
    ),
    FileSpec(
        "kenhojo",
        0x0002,
        _KP.TRANSPARENT,
        "kenhojo/attributes",
        ("kenhojo-pin", "kenhojo-b"),
        "基本4情報",
    ),
    FileSpec(
        "kenhojo",
        0x0003,
        _KP.TRANSPARENT,
        "kenhojo/integrity",
        ("kenhojo-pin", "kenhojo-a", "kenhojo-b"),
        "integrity record",
    ),
    FileSpec("kenhojo", 0x0004, _KP.TRANSPARENT, "kenhojo/cv-cert", (), "CV certificate"),
    FileSpec("kenhojo", 0x0005, _KP.TRANSPARENT, "kenhojo/basic-info", (), "AP basic info"),
    # 券面事項確認AP
    FileSpec(
        "kenkaku",
        0x0001,
        _KP.TRANSPARENT,
        "kenkaku/birth",
        ("kenkaku-birth",),
        "age-verification record",
    ),
    FileSpec(
        "kenkaku", 0x0002, _KP.TRANSPARENT, "kenkaku/face", ("kenkaku-a", "kenkaku-b"), "card face"
    ),
    FileSpec("kenkaku", 0x0003, _KP.TRANSPARENT, "kenkaku/basic-info", (), "AP basic info"),
    FileSpec("kenkaku", 0x0004, _KP.TRANSPARENT, "kenkaku/cv-cert", (), "CV certificate"),
    FileSpec(
        "kenkaku",
        0x0005,
        _KP.TRANSPARENT,
        "kenkaku/my-number-image",
        ("kenkaku-a",),
        "個人番号 image",
    ),
    # 住基AP and 共通AP
    FileSpec("juki", 0x0002, _KP.INTERNAL, "", (), "key reference"),
    FileSpec("common", 0x0001, _KP.RECORD, "common/card-id", (), "serial, municipality, expiry"),
    FileSpec("common", 0x0002, _KP.INTERNAL, "", (), "key reference"),
)


LAYOUT: dict[str, DFLayout] = {
    a.id: DFLayout(
        a,
        {p.fid: p for p in PINS if p.app == a.id},
        {f.fid: f for f in FILES if f.app == a.id},
    )
    for a in APPLICATIONS
}

__all__ = [
    "APPLICATIONS",
    "APPS_BY_ID",
    "FILES",
    "FOUR_DIGITS",
    "KIOSK_PARTNER",
    "LAYOUT",
    "PINS",
    "PINS_BY_ID",
    "SIGN_PASSWORD",
    "USER_PINS",
    "Application",
    "ChangeCommand",
    "DFLayout",
    "FileKind",
    "FileSpec",
    "PinChange",
    "PinFormat",
    "PinSpec",
]
