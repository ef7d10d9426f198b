"""Every status word the emulated card answers with, named, and how to classify one.

``63 Cx`` and the transport-level ``61 xx`` / ``6C xx`` are families: the low nibble or byte
carries a count. :func:`describe` names any SW, known to this table or not.

The *NVM* column follows ISO/IEC 7816-4 §5.1.3: SW1 ``63``/``65`` means non-volatile memory
changed, any other ``6X`` means it did not. The harness's counter oracle relies on it.
The emulated card answers ``65 81`` (memory failure) when a write to its state fails; the
write that failed did not happen, but an earlier write of the same command (VERIFY's
decrement before a failed restore) did.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class SWClass(Enum):
    OK = "ok"
    WARNING_NVM_CHANGED = "warning, NVM changed"
    ERROR_NVM_UNCHANGED = "error, NVM unchanged"
    TRANSPORT = "transport (T=0 procedure)"


@dataclass(frozen=True, slots=True)
class SWInfo:
    sw: int
    name: str
    meaning: str

    @property
    def sw_class(self) -> SWClass:
        return classify(self.sw)


OK = 0x9000
MEMORY_FAILURE = 0x6581
WRONG_LENGTH = 0x6700
LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
SM_NOT_SUPPORTED = 0x6882
CHAINING_NOT_SUPPORTED = 0x6884
INCOMPATIBLE_FILE_STRUCTURE = 0x6981
SECURITY_STATUS_NOT_SATISFIED = 0x6982
REFERENCE_DATA_BLOCKED = 0x6984
CONDITIONS_NOT_SATISFIED = 0x6985
NO_CURRENT_EF = 0x6986
INCORRECT_DATA = 0x6A80
FILE_NOT_FOUND = 0x6A82
RECORD_NOT_FOUND = 0x6A83
INCORRECT_P1P2 = 0x6A86
OFFSET_OUT_OF_RANGE = 0x6B00
INS_NOT_SUPPORTED = 0x6D00
CLA_NOT_SUPPORTED = 0x6E00

_TABLE: dict[int, SWInfo] = {
    info.sw: info
    for info in (
        SWInfo(OK, "OK", "normal processing"),
        SWInfo(
            MEMORY_FAILURE,
            "MEMORY_FAILURE",
            "memory failure (the card could not write its NVM)",
        ),
        SWInfo(WRONG_LENGTH, "WRONG_LENGTH", "wrong length (Lc or Le)"),
        SWInfo(
            LOGICAL_CHANNEL_NOT_SUPPORTED,
            "LOGICAL_CHANNEL_NOT_SUPPORTED",
            "logical channel not supported",
        ),
        SWInfo(SM_NOT_SUPPORTED, "SM_NOT_SUPPORTED", "secure messaging not supported"),
        SWInfo(CHAINING_NOT_SUPPORTED, "CHAINING_NOT_SUPPORTED", "command chaining not supported"),
        SWInfo(
            INCOMPATIBLE_FILE_STRUCTURE,
            "INCOMPATIBLE_FILE_STRUCTURE",
            "command incompatible with the file structure",
        ),
        SWInfo(
            SECURITY_STATUS_NOT_SATISFIED,
            "SECURITY_STATUS_NOT_SATISFIED",
            "security status not satisfied",
        ),
        SWInfo(
            REFERENCE_DATA_BLOCKED,
            "REFERENCE_DATA_BLOCKED",
            "referenced PIN is blocked (JICSAP: referenced IEF locked)",
        ),
        SWInfo(
            CONDITIONS_NOT_SATISFIED, "CONDITIONS_NOT_SATISFIED", "conditions of use not satisfied"
        ),
        SWInfo(NO_CURRENT_EF, "NO_CURRENT_EF", "command not allowed: no current EF"),
        SWInfo(INCORRECT_DATA, "INCORRECT_DATA", "incorrect data field"),
        SWInfo(FILE_NOT_FOUND, "FILE_NOT_FOUND", "file or application not found"),
        SWInfo(RECORD_NOT_FOUND, "RECORD_NOT_FOUND", "record not found"),
        SWInfo(INCORRECT_P1P2, "INCORRECT_P1P2", "incorrect parameters P1-P2"),
        SWInfo(OFFSET_OUT_OF_RANGE, "OFFSET_OUT_OF_RANGE", "offset outside the EF"),
        SWInfo(INS_NOT_SUPPORTED, "INS_NOT_SUPPORTED", "instruction not supported"),
        SWInfo(CLA_NOT_SUPPORTED, "CLA_NOT_SUPPORTED", "class not supported"),
    )
}

#: Every fixed status word the emulated card can answer with (plus the ``63 Cx`` family).
CARD_STATUS_WORDS: frozenset[int] = frozenset(_TABLE)


def retries(count: int) -> int:
    """The ``63 Cx`` status word for ``count`` tries left (0-15)."""
    if not 0 <= count <= 15:
        raise ValueError(f"a 63Cx counter is 0..15, got {count}")
    return 0x63C0 | count


def retries_left(sw: int) -> int | None:
    """``x`` of a ``63 Cx`` status word, else ``None``."""
    return sw & 0x0F if sw & 0xFFF0 == 0x63C0 else None


def is_card_status_word(sw: int) -> bool:
    """Whether the emulated card may legally answer ``sw``."""
    return sw in _TABLE or retries_left(sw) is not None


def classify(sw: int) -> SWClass:
    sw1 = sw >> 8
    if sw == OK or sw1 == 0x61:
        return SWClass.OK if sw == OK else SWClass.TRANSPORT
    if sw1 == 0x6C:
        return SWClass.TRANSPORT
    if sw1 in (0x63, 0x65):
        return SWClass.WARNING_NVM_CHANGED
    return SWClass.ERROR_NVM_UNCHANGED


def lookup(sw: int) -> SWInfo | None:
    return _TABLE.get(sw)


def describe(sw: int) -> str:
    """``"63C2 (VERIFY failed, 2 tries left)"`` and so on, for any status word."""
    text = f"{sw:04X}"
    info = _TABLE.get(sw)
    if info:
        return f"{text} ({info.meaning})"
    left = retries_left(sw)
    if left is not None:
        return f"{text} (verification failed or queried, {left} tries left)"
    if sw >> 8 == 0x61:
        return f"{text} ({sw & 0xFF or 256} response bytes still available)"
    if sw >> 8 == 0x6C:
        return f"{text} (wrong Le; exact length is {sw & 0xFF or 256})"
    return f"{text} (not used by the emulated card)"
