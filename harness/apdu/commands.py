"""Builders for the commands pinloop sends to a My Number card.

Each returns a :class:`CommandAPDU`; PIN values are ``bytes`` (ASCII as the card compares them,
with no case folding: a lower-case sign password is sent as typed).
"""

from __future__ import annotations

from functools import lru_cache

from harness.apdu.model import CommandAPDU
from harness.secret import Secret

#: PIN material: plain bytes, or a :class:`~harness.secret.Secret` revealed only here
PinBytes = bytes | Secret


def _b(value: PinBytes) -> bytes:
    return value.reveal() if isinstance(value, Secret) else value


def _ref(sfi: int | None) -> int:
    """P2 for PIN commands: 80 (the current EF) or 80|SFI."""
    if sfi is None:
        return 0x80
    if not 1 <= sfi <= 30:
        raise ValueError(f"SFI must be 1..30, got {sfi}")
    return 0x80 | sfi


# Commands that carry no secret are built once per distinct argument (a command is immutable):
# scenarios send the same SELECTs and status queries again and again. Never the PIN commands:
# a cache would keep PINs alive.
@lru_cache(maxsize=256)
def select_df(aid: bytes) -> CommandAPDU:
    return CommandAPDU(0x00, 0xA4, 0x04, 0x0C, aid)


@lru_cache(maxsize=256)
def select_ef(fid: int) -> CommandAPDU:
    return CommandAPDU(0x00, 0xA4, 0x02, 0x0C, fid.to_bytes(2, "big"))


def verify(pin: PinBytes, *, sfi: int | None = None) -> CommandAPDU:
    if not pin:
        raise ValueError("an empty PIN would be the status query; use pin_status()")
    return CommandAPDU(0x00, 0x20, 0x00, _ref(sfi), _b(pin))


@lru_cache(maxsize=64)
def pin_status(*, sfi: int | None = None) -> CommandAPDU:
    """The empty VERIFY: asks for the remaining tries without spending one (on a sound card)."""
    return CommandAPDU(0x00, 0x20, 0x00, _ref(sfi))


def change_reference_data(new_pin: PinBytes, *, sfi: int | None = None) -> CommandAPDU:
    """ISO CHANGE REFERENCE DATA ``00 24 01 80`` (JPKI and 入力補助 PINs)."""
    return CommandAPDU(0x00, 0x24, 0x01, _ref(sfi), _b(new_pin))


def change_key(new_pin: PinBytes, *, sfi: int | None = None) -> CommandAPDU:
    """JICSAP CHANGE KEY ``80 32 00 80`` (住基 and 共通 PINs)."""
    return CommandAPDU(0x80, 0x32, 0x00, _ref(sfi), _b(new_pin))


def reset_retry_counter(
    reset_code: PinBytes, new_pin: PinBytes | None = None, *, sfi: int | None = None
) -> CommandAPDU:
    """The emulator's TEST re-initialisation: P1 00 with a new PIN, P1 01 to only unblock."""
    if new_pin is None:
        return CommandAPDU(0x00, 0x2C, 0x01, _ref(sfi), _b(reset_code))
    return CommandAPDU(0x00, 0x2C, 0x00, _ref(sfi), _b(reset_code) + _b(new_pin))


def read_binary(
    offset: int = 0, le: int = 256, *, sfi: int | None = None, extended: bool = False
) -> CommandAPDU:
    if sfi is not None:
        if not 1 <= sfi <= 30 or not 0 <= offset <= 0xFF:
            raise ValueError("with an SFI the offset is 0..255 and the SFI 1..30")
        return CommandAPDU(0x00, 0xB0, 0x80 | sfi, offset, le=le, extended=extended)
    if not 0 <= offset <= 0x7FFF:
        raise ValueError(f"offset must be 0..32767, got {offset}")
    return CommandAPDU(0x00, 0xB0, offset >> 8, offset & 0xFF, le=le, extended=extended)


def read_record(record: int, *, sfi: int | None = None, le: int = 256) -> CommandAPDU:
    p2 = ((sfi or 0) << 3) | 0x04
    return CommandAPDU(0x00, 0xB2, record, p2, le=le)


def compute_signature(digest_info: bytes) -> CommandAPDU:
    """JPKI ``80 2A 00 80 Lc <DigestInfo> 00`` on the selected key EF."""
    return CommandAPDU(0x80, 0x2A, 0x00, 0x80, digest_info, le=256)


def get_challenge(length: int = 8) -> CommandAPDU:
    return CommandAPDU(0x00, 0x84, 0x00, 0x00, le=length)


#: DER prefix of a SHA-256 DigestInfo (RFC 8017 §9.2 note 1)
SHA256_DIGEST_INFO_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")


def sha256_digest_info(digest: bytes) -> bytes:
    if len(digest) != 32:
        raise ValueError("a SHA-256 digest has 32 bytes")
    return SHA256_DIGEST_INFO_PREFIX + digest
