"""PIN material as a value that never shows itself.

A :class:`Secret` holds the bytes of a PIN (or a value derived from one: a wrong variant of a
PIN gives away all but one of its characters). Its ``repr`` and ``str`` are masked, so a PIN
held in a local variable, a dataclass field or an exception argument does not reach a
traceback, a log line or a report by way of pytest's ``--showlocals``, ``-vv`` or an assertion
rewrite. The bytes come out only through :meth:`reveal`, at the point where they are put into
an APDU.
"""

from __future__ import annotations

import hmac

MASKED = "<secret>"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: bytes | Secret) -> None:
        self._value: bytes = value.reveal() if isinstance(value, Secret) else bytes(value)

    def reveal(self) -> bytes:
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return hmac.compare_digest(self._value, other._value)
        if isinstance(other, bytes | bytearray):
            return hmac.compare_digest(self._value, bytes(other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return MASKED

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return MASKED

    def __reduce__(self) -> tuple[object, ...]:  # never pickled across a process boundary
        raise TypeError("a Secret is not serialisable")
