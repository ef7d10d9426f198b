"""Render APDUs for traces and logs with PIN material hidden.

Commands whose data field is a PIN, a new PIN, or a reset code are masked byte for byte:
VERIFY (``INS 20``), CHANGE REFERENCE DATA (``INS 24``), RESET RETRY COUNTER (``INS 2C``) and
the JICSAP CHANGE KEY (``CLA 80 INS 32``). The length stays visible (a trace must show
whether Lc was right); the value never does unless the caller asks with ``reveal=True``.
"""

from __future__ import annotations

from harness.apdu.model import CommandAPDU, ResponseAPDU, to_hex

MASK = "**"

_SECRET_INS = frozenset((0x20, 0x24, 0x2C))
_SECRET_CLA_INS = frozenset(((0x80, 0x32),))


def carries_secret(cmd: CommandAPDU) -> bool:
    """Whether ``cmd``'s data field is PIN material."""
    if not cmd.data:
        return False
    return (cmd.cla & 0x80 == 0 and cmd.ins in _SECRET_INS) or (cmd.cla, cmd.ins) in _SECRET_CLA_INS


#: the rendering of commands that carry no secret, by their bytes (traces show the same
#: SELECTs and status queries again and again); never PIN material
_SHOWN: dict[bytes, str] = {}


def render_command(cmd: CommandAPDU, *, reveal: bool = False) -> str:
    """The command's bytes as hex, with its data field masked when it is PIN material."""
    raw = cmd.to_bytes()
    if not carries_secret(cmd):
        shown = _SHOWN.get(raw)
        if shown is None:
            shown = to_hex(raw)
            if len(_SHOWN) < 1024:
                _SHOWN[raw] = shown
        return shown
    if reveal:
        return to_hex(raw)
    start = 7 if cmd.is_extended else 5
    end = start + len(cmd.data)
    return " ".join(
        [to_hex(raw[:start]), " ".join([MASK] * len(cmd.data)), to_hex(raw[end:])]
    ).strip()


def render_raw_command(raw: bytes, *, reveal: bool = False) -> str:
    """Like :func:`render_command` for bytes that may not even parse.

    Unparseable bytes are shown only as their length, unless revealed: a malformed VERIFY
    still carries a PIN.
    """
    try:
        return render_command(CommandAPDU.parse(raw), reveal=reveal)
    except ValueError:
        pass
    if reveal or len(raw) <= 4:
        return to_hex(raw)
    cla, ins = raw[0], raw[1]
    if (cla & 0x80 == 0 and ins in _SECRET_INS) or (cla, ins) in _SECRET_CLA_INS:
        return f"{to_hex(raw[:4])} <{len(raw) - 4} more bytes, malformed, masked>"
    return to_hex(raw)


def render_response(resp: ResponseAPDU) -> str:
    return to_hex(resp.to_bytes())
