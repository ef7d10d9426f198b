"""A card's configuration: PINs, reset codes, model, name and test identity.

Written in YAML (see ``harness/emulator/default-card.yaml``) and validated against
:data:`SCHEMA`; mistakes are :class:`~harness.errors.ConfigError` with file and line. Values a
config leaves out get the defaults of the default card. Never put real personal data here: a
test identity only.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cards.jpki.layout import PINS_BY_ID, USER_PINS
from harness.config import LoadedYAML, load_validated
from harness.emulator.keys import (
    CARD_NAME_MAX,
    COMMON_NAME_MAX_BYTES,
    holder_name_room,
    subject_names,
)
from harness.emulator.models import DEFAULT_MODEL, MODELS

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default-card.yaml")

_PIN_PATTERNS = {
    "jpki-auth": ("^[0-9]{4}$", "4 digits"),
    "jpki-sign": ("^[A-Z0-9]{6,16}$", "6-16 characters of A-Z and 0-9"),
    "kenhojo-pin": ("^[0-9]{4}$", "4 digits"),
    "juki-pin": ("^[0-9]{4}$", "4 digits"),
    "common-pin": ("^[0-9]{4}$", "4 digits"),
}
assert set(_PIN_PATTERNS) == set(USER_PINS)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {
            "type": "string",
            "pattern": f"^[A-Za-z0-9._-]{{1,{CARD_NAME_MAX}}}$",
            "description": f"a card name of 1-{CARD_NAME_MAX} letters, digits, '.', '_' or '-'"
            " (the CA certificate's CommonName holds it)",
        },
        "model": {"enum": sorted(MODELS)},
        "pins": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                k: {"type": "string", "pattern": pat, "description": f"{k}: {desc}"}
                for k, (pat, desc) in _PIN_PATTERNS.items()
            },
        },
        "reset_codes": {
            "type": "object",
            "additionalProperties": False,
            "required": ["window", "kiosk"],
            "properties": {
                "window": {
                    "type": "string",
                    "pattern": "^[ -~]{8,32}$",
                    "description": "8-32 printable ASCII characters",
                },
                "kiosk": {
                    "type": "string",
                    "pattern": "^[ -~]{8,32}$",
                    "description": "8-32 printable ASCII characters",
                },
            },
        },
        "limits": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "verification-code": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 15,
                    "description": "tries of 照合番号A/B and the birth-date key (1-15)",
                },
            },
        },
        "identity": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "my_number": {
                    "type": "string",
                    "pattern": "^[0-9]{12}$",
                    "description": "12 digits (a test number, never a real one)",
                },
                "name": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": holder_name_room("x"),
                    "description": "the test holder's name; after the card's name it must fit"
                    f" the sign certificate's CommonName ({COMMON_NAME_MAX_BYTES} UTF-8 bytes,"
                    " a kanji takes 3)",
                },
                "address": {"type": "string", "minLength": 1, "maxLength": 128},
                "birth_date": {
                    "type": "string",
                    "pattern": "^(19|20)[0-9]{6}$",
                    "description": "YYYYMMDD",
                },
                "sex": {"enum": ["1", "2", "9"]},
                "expiry_year": {"type": "string", "pattern": "^20[0-9]{2}$"},
                "security_code": {"type": "string", "pattern": "^[0-9]{4}$"},
                "municipality": {"type": "string", "pattern": "^[0-9]{5}$"},
                "serial": {"type": "string", "pattern": "^[0-9]{15}$"},
            },
        },
    },
}


@dataclass(frozen=True)
class Identity:
    """A test identity printed on the emulated card (never real personal data)."""

    # 照合番号A is the number; 照合番号B and the birth key derive from these: never in a repr
    my_number: str = field(default="123456789018", repr=False)
    name: str = "試験 花子"
    address: str = "東京都千代田区試験町一丁目1番1号"
    birth_date: str = field(default="19800217", repr=False)
    sex: str = "2"
    expiry_year: str = "2035"
    security_code: str = field(default="2285", repr=False)
    municipality: str = "13101"
    serial: str = "000000000000001"


_ERAS = (  # (first day, era name); 和暦 years count from 1 on the first day
    (datetime.date(2019, 5, 1), "令和"),
    (datetime.date(1989, 1, 8), "平成"),
    (datetime.date(1926, 12, 25), "昭和"),
)


def wareki_yymmdd(yyyymmdd: str) -> str:
    """``"19800217"`` → ``"550217"`` (昭和55年2月17日), as 照合番号B and the birth key use."""
    day = datetime.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:]))
    for start, _name in _ERAS:
        if day >= start:
            return f"{day.year - start.year + 1:02d}{day:%m%d}"
    raise ValueError(f"{yyyymmdd} is before 昭和")


#: the emulated card's maximum of tries for the card-face numbers (照合番号A/B, the birth-date
#: key) unless its card config says otherwise: no public figure is established (3 in one
#: fixture, 10 in one client); the card profile has none, the emulator must choose
VERIFICATION_CODE_TRIES = 10


@dataclass(frozen=True)
class CardConfig:
    name: str
    model: str = DEFAULT_MODEL
    # PINs and codes never show in a repr (a traceback with --showlocals, a log line)
    pins: dict[str, str] = field(default_factory=dict, repr=False)
    reset_codes: dict[str, str] = field(default_factory=dict, repr=False)
    verification_code_tries: int = VERIFICATION_CODE_TRIES
    identity: Identity = field(default_factory=Identity)

    @property
    def code_a(self) -> str:
        """照合番号A: the 個人番号 itself."""
        return self.identity.my_number

    @property
    def code_b(self) -> str:
        """照合番号B: 和暦 YYMMDD of birth + expiry year + security code (14 digits)."""
        i = self.identity
        return wareki_yymmdd(i.birth_date) + i.expiry_year + i.security_code

    @property
    def birth_key(self) -> str:
        return wareki_yymmdd(self.identity.birth_date)

    def secrets(self) -> dict[str, str]:
        """Every PIN object's value, by PIN id."""
        derived = {
            "kenhojo-a": self.code_a,
            "kenkaku-a": self.code_a,
            "kenhojo-b": self.code_b,
            "kenkaku-b": self.code_b,
            "kenkaku-birth": self.birth_key,
        }
        out = {**self.pins, **derived}
        assert set(out) == set(PINS_BY_ID)
        return out

    @classmethod
    def from_document(cls, doc: LoadedYAML, defaults: CardConfig | None = None) -> CardConfig:
        data = doc.data
        base = defaults or _builtin_defaults()
        identity_fields = {**base.identity.__dict__, **dict(data.get("identity") or {})}
        try:
            wareki_yymmdd(identity_fields["birth_date"])
        except ValueError as exc:
            raise doc.error(
                f"identity.birth_date: {exc}",
                ["identity", "birth_date"],
                expected="a real calendar date, YYYYMMDD, from 1926-12-25 on",
            ) from None
        name = str(data["name"])
        holder = str(identity_fields["name"])
        room = holder_name_room(name)
        if len(holder.encode("utf-8")) > room:
            sign = subject_names(name, holder)["sign"]
            raise doc.error(
                f"identity.name: {len(holder.encode('utf-8'))} UTF-8 bytes; the sign"
                f" certificate's CommonName ({name!r}, ' sign (test) ', the name) would be"
                f" {len(sign.encode('utf-8'))}, over {COMMON_NAME_MAX_BYTES}",
                ["identity", "name"] if "name" in (data.get("identity") or {}) else ["name"],
                expected=f"at most {room} UTF-8 bytes with card name {name!r} (a kanji takes 3)",
            )
        limits = dict(data.get("limits") or {})
        return cls(
            name=name,
            model=str(data.get("model", base.model)),
            pins={**base.pins, **{str(k): str(v) for k, v in (data.get("pins") or {}).items()}},
            reset_codes={
                **base.reset_codes,
                **{str(k): str(v) for k, v in (data.get("reset_codes") or {}).items()},
            },
            verification_code_tries=int(
                limits.get("verification-code", base.verification_code_tries)
            ),
            identity=Identity(**{k: str(v) for k, v in identity_fields.items()}),
        )


def _builtin_defaults() -> CardConfig:
    return CardConfig(
        name="pinloop-default",
        pins={
            "jpki-auth": "1234",
            "jpki-sign": "PINLOOP1",
            "kenhojo-pin": "1234",
            "juki-pin": "1234",
            "common-pin": "1234",
        },
        reset_codes={"window": "WINDOW-RESET-CODE", "kiosk": "KIOSK--RESET-CODE"},
    )


def load_card_config(path: str | Path = DEFAULT_CONFIG_PATH) -> CardConfig:
    """Read and validate a card config; missing values come from the built-in defaults."""
    doc = load_validated(path, SCHEMA)
    config = CardConfig.from_document(doc)
    codes = config.reset_codes
    if len(codes["window"]) != len(codes["kiosk"]):
        raise doc.error(
            "reset_codes: window and kiosk codes must have the same length",
            ["reset_codes", "kiosk"],
            expected="two codes of equal length",
        )
    if codes["window"] == codes["kiosk"]:
        raise doc.error("reset_codes: window and kiosk codes must differ", ["reset_codes", "kiosk"])
    return config
