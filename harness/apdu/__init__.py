"""APDU model: encoding, status words and masking."""

from harness.apdu.mask import carries_secret, render_command, render_raw_command, render_response
from harness.apdu.model import CommandAPDU, ResponseAPDU, from_hex, to_hex

__all__ = [
    "CommandAPDU",
    "ResponseAPDU",
    "carries_secret",
    "from_hex",
    "render_command",
    "render_raw_command",
    "render_response",
    "to_hex",
]
