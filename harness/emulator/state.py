"""Persistent state of an emulated card, and the stores that keep it.

A card's non-volatile memory is a :class:`CardState`. Everything the card writes while it runs
is a PIN object's retry counter and value, and each such write goes through
:meth:`StateStore.write_pin` as **one atomic step**.

:class:`FileStore` keeps a card in two files:

- ``<path>``: a JSON snapshot (keys, certificates, file contents, PINs, counters), replaced
  atomically (write to a temporary file, then ``rename``);
- ``<path>.journal``: an append-only journal. Each write is a single ``write()`` of one line
  (JSON plus CRC-32) to a file opened with ``O_APPEND``; a process killed at any instant has
  either written the whole line or none of it. On open, the journal is replayed over the
  snapshot (a line with a bad CRC or no newline - only possible after a host crash - is
  dropped), then folded into a new snapshot.

Durability: ``"process"`` (default) survives the emulator being killed, which is what tearing
tests cut; ``"host"`` also ``fsync``-s every write, to survive a crash of the host itself.

A card is used by one process at a time: :class:`FileStore` holds an exclusive ``flock`` on
the journal while open, so a stale emulator cannot silently share a card with a new one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from harness.emulator.keys import RsaKey
from harness.errors import CardStateError

STATE_FORMAT = "pinloop-card-state/1"
#: journal lines folded into a fresh snapshot once this many have accumulated
COMPACT_AFTER = 4096

Durability = Literal["process", "host"]


@dataclass(slots=True)
class PinState:
    value: bytes = field(repr=False)  # never in a traceback or a log line
    remaining: int
    max_tries: int

    @property
    def blocked(self) -> bool:
        return self.remaining == 0


@dataclass
class CardState:
    """Everything a card keeps across power loss."""

    name: str
    model: str
    pins: dict[str, PinState]
    #: route name ("window" / "kiosk") → reset code of the test re-initialisation mechanism
    reset_codes: dict[str, bytes] = field(repr=False)
    #: content id (see ``layout.FileSpec.content``) → bytes of a transparent EF or record
    contents: dict[str, bytes] = field(repr=False)
    #: PIN id guarding the key → key (``jpki-auth``, ``jpki-sign``), plus ``ca``
    keys: dict[str, RsaKey] = field(repr=False)
    #: the card's test identity, for display only (never real personal data)
    identity: dict[str, str] = field(default_factory=dict, repr=False)

    def copy(self) -> CardState:
        """A copy that can be worn out on its own: fresh PIN objects and dicts; keys and bytes
        are immutable and shared."""
        return dataclasses.replace(
            self,
            pins={k: PinState(p.value, p.remaining, p.max_tries) for k, p in self.pins.items()},
            reset_codes=dict(self.reset_codes),
            contents=dict(self.contents),
            keys=dict(self.keys),
            identity=dict(self.identity),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "name": self.name,
            "model": self.model,
            "identity": self.identity,
            "pins": {
                k: {"value": p.value.hex(), "remaining": p.remaining, "max_tries": p.max_tries}
                for k, p in self.pins.items()
            },
            "reset_codes": {k: v.hex() for k, v in self.reset_codes.items()},
            "contents": {k: v.hex() for k, v in self.contents.items()},
            "keys": {k: v.to_pem() for k, v in self.keys.items()},
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CardState:
        if doc.get("format") != STATE_FORMAT:
            raise ValueError(f"not a {STATE_FORMAT} document (format={doc.get('format')!r})")
        return cls(
            name=doc["name"],
            model=doc["model"],
            identity=dict(doc.get("identity", {})),
            pins={
                k: PinState(bytes.fromhex(p["value"]), int(p["remaining"]), int(p["max_tries"]))
                for k, p in doc["pins"].items()
            },
            reset_codes={k: bytes.fromhex(v) for k, v in doc["reset_codes"].items()},
            contents={k: bytes.fromhex(v) for k, v in doc["contents"].items()},
            keys={k: RsaKey.from_pem(v) for k, v in doc["keys"].items()},
        )


class StateStore(Protocol):
    """Where a running card's NVM lives."""

    @property
    def state(self) -> CardState: ...

    def write_pin(self, pin_id: str, *, remaining: int, value: bytes | None = None) -> None:
        """Set a PIN object's counter (and value, when given) in one atomic write."""

    def close(self) -> None: ...


class MemoryStore:
    """NVM held in memory only: for unit tests and throughput; lost with the process."""

    def __init__(self, state: CardState) -> None:
        self._state = state

    @property
    def state(self) -> CardState:
        return self._state

    def write_pin(self, pin_id: str, *, remaining: int, value: bytes | None = None) -> None:
        pin = self._state.pins[pin_id]
        if value is not None:
            pin.value = value
        pin.remaining = remaining

    def close(self) -> None:
        pass


def _atomic_write(path: Path, data: bytes, *, fsync: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if fsync:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _journal_line(epoch: int, pin_id: str, remaining: int, value: bytes | None) -> bytes:
    """One journal record: compact JSON, a tab, its CRC-32, a newline.

    Formatted by hand (the fields are a layout PIN id, integers and hex, none needing
    escapes): this is the hot path of every VERIFY, and ``json.dumps`` doubles its cost.
    """
    if value is None:
        body = f'{{"e":{epoch},"p":"{pin_id}","r":{remaining}}}'.encode()
    else:
        body = f'{{"e":{epoch},"p":"{pin_id}","r":{remaining},"v":"{value.hex()}"}}'.encode()
    return b"%s\t%08x\n" % (body, zlib.crc32(body))


def _parse_journal(raw: bytes) -> Iterator[dict[str, Any]]:
    """Intact journal records; stops at the first torn or corrupt line."""
    for line in raw.split(b"\n")[:-1]:  # the part after the last newline is torn
        body, sep, crc = line.rpartition(b"\t")
        if not sep or crc != f"{zlib.crc32(body):08x}".encode():
            return
        try:
            record = json.loads(body)
        except ValueError:
            return
        if not isinstance(record, dict):
            return
        yield record


class FileStore:
    """A card in a snapshot file plus an append-only journal (see the module docstring)."""

    def __init__(
        self, path: Path, state: CardState, epoch: int, journal_fd: int, durability: Durability
    ) -> None:
        self.path = path
        self._state = state
        self._epoch = epoch
        self._fd: int | None = journal_fd
        self._durability = durability
        self._pending = 0

    # -- creation and opening -----------------------------------------------------------
    @staticmethod
    def journal_path(path: Path) -> Path:
        return path.with_name(path.name + ".journal")

    @classmethod
    def create(cls, path: str | Path, state: CardState, *, overwrite: bool = False) -> None:
        """Write a new card's snapshot. Refuses to replace an existing card unless told to."""
        p = Path(path)
        if p.exists() and not overwrite:
            raise CardStateError(f"{p}: a card state already exists (use overwrite to replace)")
        p.parent.mkdir(parents=True, exist_ok=True)
        doc = state.to_json() | {"epoch": 0}
        _atomic_write(p, json.dumps(doc, indent=1).encode(), fsync=True)
        with contextlib.suppress(FileNotFoundError):
            cls.journal_path(p).unlink()

    @classmethod
    def open(cls, path: str | Path, *, durability: Durability = "process") -> FileStore:
        p = Path(path)
        try:
            doc = json.loads(p.read_bytes())
            epoch = int(doc.get("epoch", 0))
            state = CardState.from_json(doc)
        except FileNotFoundError:
            raise CardStateError(f"{p}: no card state here (create one first)") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise CardStateError(f"{p}: corrupt card state: {exc}") from None
        jpath = cls.journal_path(p)
        fd = os.open(jpath, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CardStateError(
                f"{p}: card state is in use by another process (an emulator still running?)"
            ) from None
        store = cls(p, state, epoch, fd, durability)
        try:
            store._replay()
            store.compact()
        except BaseException:
            store.close()
            raise
        return store

    # -- the running card ---------------------------------------------------------------
    @property
    def state(self) -> CardState:
        return self._state

    def write_pin(self, pin_id: str, *, remaining: int, value: bytes | None = None) -> None:
        pin = self._state.pins[pin_id]
        os.write(self._require_fd(), _journal_line(self._epoch, pin_id, remaining, value))
        if self._durability == "host":
            os.fsync(self._require_fd())
        # memory follows the journal: a write that did not reach it did not happen
        if value is not None:
            pin.value = value
        pin.remaining = remaining
        self._pending += 1
        if self._pending >= COMPACT_AFTER:
            self.compact()

    def compact(self) -> None:
        """Fold the journal into a new snapshot (atomic rename), then empty the journal."""
        doc = self._state.to_json() | {"epoch": self._epoch + 1}
        _atomic_write(
            self.path, json.dumps(doc, indent=1).encode(), fsync=self._durability == "host"
        )
        self._epoch += 1
        # lines of older epochs are ignored on replay, so a crash right here is harmless
        os.ftruncate(self._require_fd(), 0)
        self._pending = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None

    def _require_fd(self) -> int:
        if self._fd is None:
            raise CardStateError(f"{self.path}: card state is closed")
        return self._fd

    def _replay(self) -> None:
        fd = self._require_fd()
        size = os.fstat(fd).st_size
        raw = os.pread(fd, size, 0)
        for record in _parse_journal(raw):
            if record.get("e") != self._epoch:
                continue
            pin = self._state.pins.get(str(record.get("p")))
            if pin is None:
                raise CardStateError(f"{self.path}: journal names unknown PIN {record.get('p')!r}")
            if "v" in record:
                pin.value = bytes.fromhex(str(record["v"]))
            pin.remaining = int(record["r"])
