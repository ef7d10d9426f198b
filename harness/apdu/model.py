"""Command and response APDUs (ISO/IEC 7816-3 §12.1, 7816-4 §5.1).

A :class:`CommandAPDU` knows its ISO case (1-4) and whether it travels in the short or the
extended form. ``Le`` is held as the *number of bytes expected*: a short ``Le`` byte of ``00``
means 256 and an extended ``00 00`` means 65536, so ``le=None`` is "no Le field" and is never
confused with ``le=256``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from harness.errors import APDUFormatError

SHORT_MAX_LC = 255
SHORT_MAX_LE = 256
EXTENDED_MAX_LC = 65535
EXTENDED_MAX_LE = 65536

_HEX_SEPARATORS = re.compile(r"[\s:_-]+")


def from_hex(text: str) -> bytes:
    """``"00 A4 04 0C"`` / ``"00a4040c"`` / ``"00:A4"`` → bytes; a clear error otherwise."""
    cleaned = _HEX_SEPARATORS.sub("", text)
    if len(cleaned) % 2:
        raise APDUFormatError(f"odd number of hex digits in {text!r}")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise APDUFormatError(f"not hexadecimal: {text!r}") from None


def to_hex(data: bytes) -> str:
    """Bytes as upper-case hex pairs separated by spaces."""
    return data.hex(" ").upper()


@dataclass(frozen=True, slots=True, repr=False)
class CommandAPDU:
    """A command APDU.

    :param le: bytes expected in the response, ``None`` when there is no Le field.
    :param extended: force the extended encoding even where the short one would do.
    """

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None
    extended: bool = False
    #: the encoding, computed once: a command object is usually sent many times
    _raw: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (
            not (0 <= self.cla <= 0xFF and 0 <= self.ins <= 0xFF and 0 <= self.p1 <= 0xFF)
            or not 0 <= self.p2 <= 0xFF
        ):
            for name in ("cla", "ins", "p1", "p2"):
                value = getattr(self, name)
                if not 0 <= value <= 0xFF:
                    raise APDUFormatError(f"{name.upper()} must be one byte, got {value!r}")
        if len(self.data) > EXTENDED_MAX_LC:
            raise APDUFormatError(f"command data of {len(self.data)} bytes exceeds 65535")
        if self.le is not None and not 1 <= self.le <= EXTENDED_MAX_LE:
            raise APDUFormatError(f"Le must be 1..65536 bytes, got {self.le}")
        object.__setattr__(self, "_raw", self._encode())

    def __repr__(self) -> str:
        # PIN material never reaches a traceback (pytest --showlocals) or a log by repr
        secret = bool(self.data) and (
            (self.cla & 0x80 == 0 and self.ins in (0x20, 0x24, 0x2C))
            or (self.cla, self.ins) == (0x80, 0x32)
        )
        data = f"<{len(self.data)} bytes, masked>" if secret else self.data.hex().upper()
        return (
            f"CommandAPDU({self.cla:02X} {self.ins:02X} {self.p1:02X} {self.p2:02X}"
            f"{' data=' + data if self.data else ''}{'' if self.le is None else f' le={self.le}'})"
        )

    @property
    def case(self) -> int:
        """ISO case: 1 (no data, no Le), 2 (Le), 3 (data), 4 (data and Le)."""
        if self.data:
            return 4 if self.le is not None else 3
        return 2 if self.le is not None else 1

    @property
    def is_extended(self) -> bool:
        """Whether :meth:`to_bytes` uses the extended encoding (case 1 has no length fields)."""
        if not self.data and self.le is None:
            return False
        return (
            self.extended
            or len(self.data) > SHORT_MAX_LC
            or (self.le is not None and self.le > SHORT_MAX_LE)
        )

    @property
    def header(self) -> bytes:
        return bytes((self.cla, self.ins, self.p1, self.p2))

    def to_bytes(self) -> bytes:
        return self._raw

    def _encode(self) -> bytes:
        out = bytearray(self.header)
        ext = self.is_extended
        if self.data:
            if ext:
                out += b"\x00" + len(self.data).to_bytes(2, "big")
            else:
                out.append(len(self.data))
            out += self.data
        if self.le is not None:
            if ext:
                le = self.le % EXTENDED_MAX_LE
                # Case 2E has a leading 00; in case 4E the Lc field already carries it.
                out += (b"" if self.data else b"\x00") + le.to_bytes(2, "big")
            else:
                out.append(self.le % SHORT_MAX_LE)
        return bytes(out)

    @classmethod
    def parse(cls, raw: bytes) -> CommandAPDU:
        """Decode bytes per ISO/IEC 7816-3 §12.1.3; raise :class:`APDUFormatError` if illegal."""
        n = len(raw)
        if n < 4:
            raise APDUFormatError(f"a command APDU has at least 4 bytes, got {n}")
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        if n == 4:
            return cls(cla, ins, p1, p2)
        b1 = raw[4]
        if n == 5:  # case 2S
            return cls(cla, ins, p1, p2, le=b1 or SHORT_MAX_LE)
        if b1:  # short Lc
            if n == 5 + b1:
                return cls(cla, ins, p1, p2, raw[5:])
            if n == 6 + b1:
                return cls(cla, ins, p1, p2, raw[5:-1], le=raw[-1] or SHORT_MAX_LE)
            raise APDUFormatError(f"Lc={b1} does not match an APDU of {n} bytes")
        # b1 == 0 and n > 5: extended
        if n == 7:  # case 2E
            le = int.from_bytes(raw[5:7], "big") or EXTENDED_MAX_LE
            return cls(cla, ins, p1, p2, le=le, extended=True)
        if n < 7:
            raise APDUFormatError(f"truncated extended length field in an APDU of {n} bytes")
        lc = int.from_bytes(raw[5:7], "big")
        if lc == 0:
            raise APDUFormatError("extended Lc of 0 is not allowed")
        if n == 7 + lc:
            return cls(cla, ins, p1, p2, raw[7:], extended=True)
        if n == 9 + lc:
            le = int.from_bytes(raw[-2:], "big") or EXTENDED_MAX_LE
            return cls(cla, ins, p1, p2, raw[7:-2], le=le, extended=True)
        raise APDUFormatError(f"extended Lc={lc} does not match an APDU of {n} bytes")

    @classmethod
    def from_hex(cls, text: str) -> CommandAPDU:
        return cls.parse(from_hex(text))


@dataclass(slots=True)
class ResponseAPDU:
    """A response APDU: data followed by the two status bytes.

    Treat it as a value: not frozen only because a frozen dataclass's ``__init__`` costs
    ~3 µs more on the per-APDU hot path of every transport.
    """

    data: bytes
    sw: int = field(default=0x9000)

    def __post_init__(self) -> None:
        if not 0 <= self.sw <= 0xFFFF:
            raise APDUFormatError(f"status word must be two bytes, got {self.sw:#x}")

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        return self.sw == 0x9000

    def to_bytes(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    @classmethod
    def parse(cls, raw: bytes) -> ResponseAPDU:
        if len(raw) < 2:
            raise APDUFormatError(f"a response APDU has at least 2 bytes, got {len(raw)}")
        return cls(bytes(raw[:-2]), int.from_bytes(raw[-2:], "big"))
