"""Persistent state of an emulated card, and the stores that keep it.

A card's non-volatile memory is a :class:`CardState`. Everything the card writes while it runs
is a PIN object's retry counter and value, and each such write goes through
:meth:`StateStore.write_pin` as **one atomic step**.

:class:`FileStore` keeps a card in two files:

- ``<path>``: a JSON snapshot (format ``pinloop-card-state/2``: keys, certificates, file
  contents, PINs, counters, the snapshot's *epoch*) with a SHA-256 over its canonical encoding
  (sorted keys, no whitespace, ASCII) in ``"sha256"``. It is replaced atomically: a temporary
  file is written completely and ``fsync``-ed, renamed over the old one, and the directory is
  ``fsync``-ed.
- ``<path>.journal``: an append-only journal, one line per write: compact JSON
  (``{"e": epoch, "p": PIN id, "r": counter[, "v": hex value]}``), a tab, its CRC-32 in hex,
  a newline. A line is appended with ``O_APPEND``, every byte count is checked, and only once
  the whole line is in the file does the card's memory (and so its answer) follow. A write
  that fails (a short write, ``ENOSPC``, ``EIO``) cuts the journal back to its previous length
  and raises :class:`~harness.errors.CardStateError`: the write did not happen.

On open, the snapshot's SHA-256 and contents are checked (known PIN ids, ``1 <= max_tries <=
15``, ``0 <= remaining <= max_tries``, PIN lengths of the PIN's format, every field present
with its type), then the journal lines of the snapshot's epoch are replayed over it (lines of
older epochs are left over from a compaction and ignored, but must still be intact). Any
line that fails its CRC, is not a well-formed record, or is implausible makes the open fail
with ``journal:line``: a damaged journal is **refused, never cut short**, because every line
dropped could give back a try. The only thing dropped is a final tail *without* a newline that
stops short of a complete CRC: a write that did not finish (see :meth:`FileStore._replay`); a
whole line that lacks only its newline (or whose newline is damaged) is refused.

Compaction folds the journal into a new snapshot of the next epoch and then empties the
journal; it runs when a card with a non-empty journal is opened and every
:data:`COMPACT_AFTER` writes. If it fails (a full disk), the old snapshot and the journal are
left as they were, the card goes on from the journal and compaction is tried again later.

Guarantees: the card loads with exactly the last committed counters, or refuses to load with
an error naming the file (and line); it never loads with more tries than were committed.
"Committed" depends on the durability. ``"process"`` (default): a line is committed once
``write()`` returned; this survives the emulator being killed at any instant, which is what
tearing tests cut, but a crash of the host itself may lose the journal's last lines (the
snapshot is always fsync-ed before the journal is emptied, so never more than those).
``"host"`` also ``fsync``-s every journal line, to survive a crash of the host.

A card is used by one process at a time: :class:`FileStore` holds an exclusive ``flock`` on
the journal while open, and :meth:`FileStore.create` takes it too before it replaces a card,
so a stale emulator cannot silently share a card with a new one. ``FileStore.open(path,
readonly=True)`` replays without writing anything (for inspection, also on read-only media)
under a shared lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn, Protocol

from harness.cards.jpki.layout import FILES, PINS_BY_ID, FileKind
from harness.emulator.keys import RsaKey
from harness.emulator.models import MODELS
from harness.errors import CardStateError

STATE_FORMAT = "pinloop-card-state/2"
#: formats this version refuses to read, with the reason
OLD_FORMATS = {"pinloop-card-state/1": "it has no integrity check"}
#: journal lines folded into a fresh snapshot once this many have accumulated
COMPACT_AFTER = 4096
#: after a failed compaction, try again after this many more writes
COMPACT_RETRY = 256
#: the most tries a PIN object can have (a 63 Cx status word carries 0-15)
MAX_TRIES = 15

Durability = Literal["process", "host"]

log = logging.getLogger(__name__)

#: what a card needs in its state, besides the PINs of the layout
_CONTENT_IDS = frozenset(
    f.content for f in FILES if f.kind in (FileKind.TRANSPARENT, FileKind.RECORD)
)
_KEY_IDS = frozenset({*(f.content for f in FILES if f.kind is FileKind.KEY), "ca"})
_RESET_ROUTES = frozenset({"window", "kiosk"})


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
        """The state in ``doc``, checked for shape and plausibility (ValueError if wrong)."""
        if doc.get("format") != STATE_FORMAT:
            raise ValueError(f"not a {STATE_FORMAT} document (format={doc.get('format')!r})")
        model = _get(doc, "model", str)
        if model not in MODELS:
            raise ValueError(f"unknown card model {model!r}")
        identity = _get(doc, "identity", dict)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in identity.items()):
            raise ValueError("identity: not a mapping of strings")
        pins_doc = _get(doc, "pins", dict)
        if set(pins_doc) != set(PINS_BY_ID):
            unknown, missing = set(pins_doc) - set(PINS_BY_ID), set(PINS_BY_ID) - set(pins_doc)
            raise ValueError(f"pins: unknown {sorted(unknown)}, missing {sorted(missing)}")
        pins = {}
        for pin_id, p in pins_doc.items():
            where = f"pins.{pin_id}"
            if not isinstance(p, dict) or set(p) != {"value", "remaining", "max_tries"}:
                raise ValueError(f"{where}: not an object of value, remaining, max_tries")
            pin = PinState(
                _hex(p["value"], f"{where}.value"),
                _int(p["remaining"], f"{where}.remaining"),
                _int(p["max_tries"], f"{where}.max_tries"),
            )
            _check_pin(pin_id, pin.remaining, pin.max_tries, pin.value, where)
            pins[pin_id] = pin
        reset_codes = _hex_map(doc, "reset_codes")
        if set(reset_codes) != _RESET_ROUTES or len(set(map(len, reset_codes.values()))) != 1:
            raise ValueError("reset_codes: a window and a kiosk code of one length expected")
        if not reset_codes["window"]:
            raise ValueError("reset_codes: empty")
        contents = _hex_map(doc, "contents")
        if not set(contents) >= _CONTENT_IDS:
            raise ValueError(f"contents: missing {sorted(_CONTENT_IDS - set(contents))}")
        keys_doc = _get(doc, "keys", dict)
        if set(keys_doc) != _KEY_IDS:
            raise ValueError(f"keys: {sorted(_KEY_IDS)} expected, got {sorted(keys_doc)}")
        keys = {}
        for k, pem in keys_doc.items():
            if not isinstance(pem, str):
                raise ValueError(f"keys.{k}: not a PEM string")
            try:
                keys[k] = RsaKey.from_pem(pem)
            except Exception as exc:  # the library raises several types for bad PEM
                raise ValueError(f"keys.{k}: {exc}") from None
        return cls(
            name=_get(doc, "name", str),
            model=model,
            identity=dict(identity),
            pins=pins,
            reset_codes=reset_codes,
            contents=contents,
            keys=keys,
        )


def _get(doc: dict[str, Any], key: str, typ: type[Any]) -> Any:
    if key not in doc:
        raise ValueError(f"{key}: missing")
    value = doc[key]
    if not isinstance(value, typ):
        raise ValueError(f"{key}: {typ.__name__} expected, got {type(value).__name__}")
    return value


def _int(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}: an integer expected, got {value!r}")
    return value


def _hex(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{where}: a hex string expected, got {type(value).__name__}")
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{where}: not hex") from None
    if data.hex() != value:  # what the store writes: lower case, no spaces
        raise ValueError(f"{where}: not hex")
    return data


def _hex_map(doc: dict[str, Any], key: str) -> dict[str, bytes]:
    return {str(k): _hex(v, f"{key}.{k}") for k, v in _get(doc, key, dict).items()}


def _check_pin(
    pin_id: str, remaining: int, max_tries: int, value: bytes | None, where: str
) -> None:
    """Whether a PIN object's counter and value are possible (ValueError if not)."""
    spec = PINS_BY_ID.get(pin_id)
    if spec is None:
        raise ValueError(f"{where}: unknown PIN {pin_id!r}")
    if not 1 <= max_tries <= MAX_TRIES:
        raise ValueError(f"{where}: max_tries {max_tries} outside 1..{MAX_TRIES}")
    if not 0 <= remaining <= max_tries:
        raise ValueError(f"{where}: counter {remaining}/{max_tries} is impossible")
    if value is not None and not spec.format.length_ok(value):
        raise ValueError(f"{where}: a value of {len(value)} bytes ({spec.format.describe()})")


def _digest(doc: dict[str, Any]) -> str:
    """SHA-256 of a snapshot document (without its ``sha256``), in a canonical encoding."""
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _snapshot_bytes(state: CardState, epoch: int) -> bytes:
    doc = state.to_json() | {"epoch": epoch}
    doc["sha256"] = _digest(doc)
    return json.dumps(doc, indent=1).encode("ascii")


def _load_snapshot(path: Path, raw: bytes) -> tuple[CardState, int]:
    """The state and epoch in a snapshot file's bytes; CardStateError if they are not right."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CardStateError(f"{path}: corrupt card state: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise CardStateError(f"{path}: corrupt card state: not a JSON object")
    fmt = doc.get("format")
    if fmt in OLD_FORMATS:
        raise CardStateError(
            f"{path}: card state in the old format {fmt} ({OLD_FORMATS[fmt]}); "
            f"re-create the card with `pinloop card new --force {path}`"
        )
    if fmt != STATE_FORMAT:
        raise CardStateError(
            f"{path}: corrupt card state: not a {STATE_FORMAT} document (format={fmt!r})"
        )
    digest = doc.pop("sha256", None)
    if digest != _digest(doc):
        what = "no sha256" if digest is None else "its SHA-256 does not match"
        raise CardStateError(
            f"{path}: corrupt card state: integrity check failed ({what}; "
            "the file was changed or damaged)"
        )
    try:
        epoch = _int(doc.get("epoch"), "epoch")
        if epoch < 0:
            raise ValueError(f"epoch: {epoch} is negative")
        return CardState.from_json(doc), epoch
    except ValueError as exc:
        raise CardStateError(f"{path}: corrupt card state: {exc}") from None


class StateStore(Protocol):
    """Where a running card's NVM lives."""

    @property
    def state(self) -> CardState: ...

    def write_pin(self, pin_id: str, *, remaining: int, value: bytes | None = None) -> None:
        """Set a PIN object's counter (and value, when given) in one atomic write.

        Raises :class:`~harness.errors.CardStateError` (or OSError) if the write did not
        happen; the state is unchanged then.
        """

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


# -- files ------------------------------------------------------------------------------------
def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _require_regular(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise CardStateError(f"{path}: {_kind(mode)}, not a card state file")


def _stat(path: Path) -> os.stat_result | None:
    """The file's status (following links), ``None`` if there is none; never blocks."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CardStateError(f"{path}: {_why(exc)}") from None


def _open_regular(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never blocks on a FIFO or device and refuses anything not a file."""
    st = _stat(path)
    if st is not None:
        _require_regular(path, st.st_mode)
    # O_NONBLOCK: a FIFO put there after the check must not hang the open (no effect on files)
    fd = os.open(path, flags | os.O_NONBLOCK, mode)
    try:
        _require_regular(path, os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_all_at(fd: int) -> bytes:
    """The whole file, from its start whatever the file offset."""
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte or raise; a write that makes no progress is a full disk."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def _fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _tmp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _replace_file(path: Path, data: bytes) -> None:
    """Write a temporary file completely, fsync it, rename it over ``path``.

    On failure the temporary file is removed and ``path`` is untouched. The caller fsyncs the
    directory (see :meth:`FileStore.compact` for why a failure there is handled apart).
    """
    tmp = _tmp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _lock(fd: int, path: Path, operation: int) -> None:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CardStateError(
            f"{path}: card state is in use by another process (an emulator still running?)"
        ) from None
    except OSError as exc:
        raise CardStateError(f"{path}: cannot lock the card state: {_why(exc)}") from None


# -- the journal ------------------------------------------------------------------------------
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


@dataclass(frozen=True, slots=True)
class _Record:
    epoch: int
    pin_id: str
    remaining: int
    value: bytes | None


class _BadLine(ValueError):
    pass


def _crc_ok(line: bytes) -> bytes | None:
    """The body of a line (without its newline) whose CRC matches, else ``None``."""
    body, sep, crc = line.rpartition(b"\t")
    if not sep or crc != b"%08x" % zlib.crc32(body):
        return None
    return body


def _decode_record(line: bytes) -> _Record:
    """One journal line (without its newline) as a record; _BadLine says what is wrong."""
    body = _crc_ok(line)
    if body is None:
        raise _BadLine("CRC mismatch")
    try:
        doc = json.loads(body)
    except ValueError:
        raise _BadLine("not JSON") from None
    if not isinstance(doc, dict) or not {"e", "p", "r"} <= set(doc) <= {"e", "p", "r", "v"}:
        raise _BadLine("not a record of e, p, r[, v]")
    try:
        epoch, remaining = _int(doc["e"], "epoch"), _int(doc["r"], "counter")
        value = _hex(doc["v"], "value") if "v" in doc else None
    except ValueError as exc:
        raise _BadLine(str(exc)) from None
    pin_id = doc["p"]
    if not isinstance(pin_id, str) or pin_id not in PINS_BY_ID:
        raise _BadLine(f"unknown PIN {pin_id!r}")
    if epoch < 0:
        raise _BadLine(f"epoch {epoch} is negative")
    return _Record(epoch, pin_id, remaining, value)


_HEX_DIGITS = b"0123456789abcdef"


def _torn(tail: bytes) -> bool:
    """Whether the bytes after the journal's last newline can be a line cut short: a body
    (which never holds a tab), then at most a tab and fewer than 8 hex digits of its CRC."""
    _body, _tab, crc = tail.partition(b"\t")
    return len(crc) < 8 and not crc.translate(None, _HEX_DIGITS)


def _parse_journal(path: Path, raw: bytes) -> tuple[list[_Record], int]:
    """The journal's records, and the length of its committed part (without a torn tail).

    Raises CardStateError naming ``path:line`` for the first line that is not intact.
    """
    lines = raw.split(b"\n")
    tail = lines.pop()  # whatever follows the last newline
    records = []
    for lineno, line in enumerate(lines, 1):
        try:
            records.append(_decode_record(line))
        except _BadLine as exc:
            raise CardStateError(f"{path}:{lineno}: corrupt journal line: {exc}") from None
    if tail and not _torn(tail):
        # Not a write cut short: a whole line whose newline is missing or damaged. Dropping
        # it could give back a try the card has counted.
        what = "a complete line" if _crc_ok(tail) is not None else "a damaged line"
        raise CardStateError(
            f"{path}:{len(lines) + 1}: corrupt journal: {what} without its newline"
        )
    return records, len(raw) - len(tail)


def _journal_epochs(raw: bytes) -> Iterator[int]:
    """The epochs of the intact lines of a journal (for :meth:`FileStore.create`)."""
    for line in raw.split(b"\n"):
        with contextlib.suppress(_BadLine):
            yield _decode_record(line).epoch


class FileStore:
    """A card in a snapshot file plus an append-only journal (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        state: CardState,
        epoch: int,
        journal_fd: int | None,
        durability: Durability,
        *,
        readonly: bool = False,
    ) -> None:
        self.path = path
        self.journal = self.journal_path(path)
        self.readonly = readonly
        self._state = state
        self._epoch = epoch
        #: the journal (or, read-only, the file holding the shared lock, or None)
        self._fd: int | None = journal_fd
        #: the journal when writes may go to it, else None (closed, read-only, or damaged)
        self._wfd: int | None = None if readonly else journal_fd
        self._unwritable = "opened read-only" if readonly else "closed"
        self._durability = durability
        #: length of the journal's committed lines: where a failed write is cut back to
        self._size = 0
        self._pending = 0
        self._compact_at = COMPACT_AFTER

    # -- creation and opening -----------------------------------------------------------
    @staticmethod
    def journal_path(path: Path) -> Path:
        return path.with_name(path.name + ".journal")

    @classmethod
    def create(cls, path: str | Path, state: CardState, *, overwrite: bool = False) -> None:
        """Write a new card's snapshot. Refuses to replace an existing card unless told to,
        and refuses to replace a card that another process (an emulator) has open."""
        p = Path(path)
        st = _stat(p)
        if st is not None:
            _require_regular(p, st.st_mode)
            if not overwrite:
                raise CardStateError(f"{p}: a card state already exists (use overwrite to replace)")
        jpath = cls.journal_path(p)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd = _open_regular(jpath, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        except OSError as exc:
            raise CardStateError(f"{jpath}: cannot open the journal: {_why(exc)}") from None
        try:
            _lock(fd, p, fcntl.LOCK_EX)
            # The new snapshot's epoch is past every line the old journal holds: should the
            # journal not be emptied below (a crash, an error), its lines are ignored.
            try:
                epoch = max(_journal_epochs(_read_all_at(fd)), default=-1) + 1
                _replace_file(p, _snapshot_bytes(state, epoch))
                _fsync_dir(p.parent)
                os.ftruncate(fd, 0)
            except OSError as exc:
                raise CardStateError(f"{p}: cannot write the card state: {_why(exc)}") from None
        finally:
            os.close(fd)

    @classmethod
    def open(
        cls, path: str | Path, *, durability: Durability = "process", readonly: bool = False
    ) -> FileStore:
        """Open a card: check and replay it, for a running card (exclusive) or ``readonly``
        (shared, writes nothing: no journal is created, nothing is cut or compacted)."""
        p = Path(path)
        st = _stat(p)
        if st is None:
            raise CardStateError(f"{p}: no card state here (create one first)")
        _require_regular(p, st.st_mode)
        jpath = cls.journal_path(p)
        fd: int | None = None
        try:
            if readonly:
                if _stat(jpath) is not None:
                    fd = _open_regular(jpath, os.O_RDONLY)
            else:
                fd = _open_regular(jpath, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        except OSError as exc:
            raise CardStateError(f"{jpath}: cannot open the journal: {_why(exc)}") from None
        try:
            if fd is not None:
                _lock(fd, p, fcntl.LOCK_SH if readonly else fcntl.LOCK_EX)
            # read under the lock: a running card may be replacing the snapshot
            try:
                sfd = _open_regular(p, os.O_RDONLY)
                try:
                    raw = _read_all(sfd)
                finally:
                    os.close(sfd)
            except OSError as exc:
                raise CardStateError(f"{p}: cannot read the card state: {_why(exc)}") from None
            state, epoch = _load_snapshot(p, raw)
            store = cls(p, state, epoch, fd, durability, readonly=readonly)
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        try:
            store._replay()
            if not readonly:
                store._tidy()
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
        fd = self._wfd
        if fd is None:
            raise CardStateError(f"{self.path}: card state is {self._unwritable}")
        if not 0 <= remaining <= pin.max_tries or (
            value is not None and not PINS_BY_ID[pin_id].format.length_ok(value)
        ):
            # never write what a replay would refuse
            raise CardStateError(f"{self.path}: refusing an impossible write to {pin_id}")
        line = _journal_line(self._epoch, pin_id, remaining, value)
        try:
            n = os.write(fd, line)
            if n != len(line):
                _write_all(fd, memoryview(line)[n:])
            if self._durability == "host":
                os.fsync(fd)
        except OSError as exc:
            self._undo_append(fd, exc)
        self._size += len(line)
        # memory follows the journal: a write that did not reach it did not happen
        if value is not None:
            pin.value = value
        pin.remaining = remaining
        self._pending += 1
        if self._pending >= self._compact_at:
            self._try_compact()

    def _undo_append(self, fd: int, exc: OSError) -> NoReturn:
        """Cut the journal back to its last committed line after a failed write, and raise."""
        try:
            os.ftruncate(fd, self._size)
        except OSError as cut:
            # the partial line stays: anything appended after it would make it a corrupt
            # line in the middle of the journal, so this card takes no more writes
            self._wfd = None
            self._unwritable = "damaged by a failed write (restart the emulator)"
            raise CardStateError(
                f"{self.journal}: journal write failed ({_why(exc)}) and the partial line "
                f"could not be removed ({_why(cut)}); the card takes no more writes"
            ) from exc
        raise CardStateError(
            f"{self.journal}: journal write failed: {_why(exc)} (nothing was written)"
        ) from exc

    def compact(self) -> None:
        """Fold the journal into a new snapshot, then empty the journal.

        In this order: the temporary snapshot is written completely and fsync-ed, renamed over
        the old one, the directory is fsync-ed, and only then is the journal emptied. Raises
        CardStateError if a step fails; the card stays usable from the journal then.
        """
        fd = self._wfd
        if fd is None:
            raise CardStateError(f"{self.path}: card state is {self._unwritable}")
        epoch = self._epoch + 1
        try:
            _replace_file(self.path, _snapshot_bytes(self._state, epoch))
        except OSError as exc:
            raise CardStateError(
                f"{self.path}: cannot write a new snapshot ({_why(exc)}); "
                "the old snapshot and the journal are intact"
            ) from None
        # The snapshot in place is of the new epoch: new lines must carry it, else a replay
        # would skip them. The journal's lines are of the old epoch and ignored from now on.
        self._epoch = epoch
        try:
            # a rename not yet on disk could be undone by a host crash: the journal waits
            _fsync_dir(self.path.parent)
            os.ftruncate(fd, 0)
        except OSError as exc:
            raise CardStateError(
                f"{self.journal}: not emptied after compaction ({_why(exc)}); its lines are "
                "of an older epoch and ignored"
            ) from None
        self._size = 0
        self._pending = 0
        self._compact_at = COMPACT_AFTER

    def _try_compact(self) -> None:
        """Compaction while the card runs: a failure does not fail the write that led to it
        (that one is in the journal); it is logged and tried again later."""
        try:
            self.compact()
        except CardStateError as exc:
            log.warning("%s; compaction will be tried again", exc)
            self._compact_at = self._pending + COMPACT_RETRY

    def close(self) -> None:
        self._wfd = None
        self._unwritable = "closed"
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None

    def _replay(self) -> None:
        """Apply the journal's lines of the snapshot's epoch to the state.

        The one thing not refused is a torn tail: bytes after the last newline that stop short
        of a complete CRC. A line is appended by one ``write()`` (more only after a short
        write), and the card acts on it (changes its memory, answers the host) only once the
        write has returned with every byte: a tail cut short is a write that never finished,
        i.e. never committed, so the state without it is the last committed one. It is cut
        off (on a writable open) so that the next line does not join it. A tail with its whole
        CRC is not a cut write but a line whose newline is missing or damaged: refused, since
        that line may have been committed.
        """
        if self._fd is None:
            self._size = 0
            return
        try:
            raw = _read_all_at(self._fd)
        except OSError as exc:
            raise CardStateError(f"{self.journal}: cannot read the journal: {_why(exc)}") from None
        records, committed = _parse_journal(self.journal, raw)
        last = 0
        for lineno, rec in enumerate(records, 1):
            where = f"{self.journal}:{lineno}"
            if rec.epoch < last:
                raise CardStateError(f"{where}: corrupt journal: epoch {rec.epoch} after {last}")
            last = rec.epoch
            if rec.epoch > self._epoch:
                raise CardStateError(
                    f"{where}: journal line of epoch {rec.epoch} is newer than the snapshot "
                    f"(epoch {self._epoch}): the snapshot was replaced by an older one"
                )
            if rec.epoch < self._epoch:
                continue  # folded into the snapshot by a compaction cut short
            pin = self._state.pins[rec.pin_id]
            try:
                _check_pin(rec.pin_id, rec.remaining, pin.max_tries, rec.value, rec.pin_id)
            except ValueError as exc:
                raise CardStateError(f"{where}: implausible journal line: {exc}") from None
            if rec.value is not None:
                pin.value = rec.value
            pin.remaining = rec.remaining
            self._pending += 1
        self._size = committed
        if committed != len(raw) and not self.readonly:
            try:
                os.ftruncate(self._fd, committed)
            except OSError as exc:
                raise CardStateError(
                    f"{self.journal}: cannot cut off a torn last line: {_why(exc)}"
                ) from None

    def _tidy(self) -> None:
        """After a writable open: remove a temporary snapshot a crash left, fold the journal.

        Neither may fail the open: on a full disk the card runs from its journal.
        """
        tmp = _tmp_path(self.path)
        try:
            tmp.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("%s: cannot remove a stale temporary snapshot: %s", tmp, _why(exc))
        if self._size:
            self._try_compact()
