"""Card state under full disks, torn writes, flipped bytes, implausible values, concurrent
commands and read-only media: the card loads with exactly the last committed counters or
refuses to load with an error naming the file (and line), never with more tries.

The full-disk and read-only cases run on a small tmpfs mounted here (root needed; skipped with
the reason otherwise).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.apdu import commands as C
from harness.apdu import sw as SW
from harness.cli import main
from harness.emulator import PROFILES, CardConfig, CardState, EmulatedCard, FileStore, MemoryStore
from harness.emulator import state as state_mod
from harness.emulator.models import MODELS
from harness.errors import CardStateError
from harness.links.vpcd import CTRL_ATR, CTRL_ON, Decoder, encode
from tests.oracle import check_apdu
from tests.support import Host

PAGE = 4096
Pins = dict[str, tuple[int, bytes]]
ROOT = Path(__file__).resolve().parents[1]


def pins_of(state: CardState) -> Pins:
    return {k: (p.remaining, p.value) for k, p in state.pins.items()}


def loaded(path: Path) -> Pins:
    store = FileStore.open(path, readonly=True)
    try:
        return pins_of(store.state)
    finally:
        store.close()


def host_on(store: FileStore, config: CardConfig) -> Host:
    card = EmulatedCard(store)
    card.power_on()
    return Host(card, config)


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- a small file system ----------------------------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``mount(size)``: a fresh tmpfs of ``size`` bytes; unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no mount command: cannot make a small file system")
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "pinloop-test", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode:
            pytest.skip(f"mounting a tmpfs is not permitted here: {r.stderr.strip()}")
        mounted.append(point)
        return point

    try:
        yield mount
    finally:
        for point in reversed(mounted):
            if subprocess.run(["umount", str(point)], check=False).returncode:
                subprocess.run(["umount", "-l", str(point)], check=False)


def free_bytes(fs: Path) -> int:
    st = os.statvfs(fs)
    return st.f_bavail * st.f_frsize


def fill(fs: Path, leave: int = 0) -> Path:
    """Fill the file system up, then give ``leave`` bytes (whole pages) back."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = b"\xaa" * PAGE
        try:
            while os.write(fd, block):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        os.ftruncate(fd, os.fstat(fd).st_size - leave)
    finally:
        os.close(fd)
    assert free_bytes(fs) == leave
    return filler


def remount(fs: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(fs)], check=True)


# -- full disks -------------------------------------------------------------------------------
def test_compaction_on_a_nearly_full_disk_keeps_the_card(
    tmpfs: Callable[[int], Path],
    template_state: CardState,
    card_config: CardConfig,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The issue's case: 2 free pages, a 24 KB snapshot. Compaction fails and changes nothing;
    the command that led to it still succeeds; the card opens on the full disk from its
    journal, and compacts once there is room."""
    fs = tmpfs(256 * 1024)
    path = fs / "card.json"
    FileStore.create(path, template_state.copy())
    monkeypatch.setattr(state_mod, "COMPACT_AFTER", 5)
    store = FileStore.open(path)
    host = host_on(store, card_config)
    host.select_pin("jpki-auth")
    for _ in range(3):
        host.verify("jpki-auth", b"0000")
    assert host.verify("jpki-auth") == SW.REFERENCE_DATA_BLOCKED
    filler = fill(fs, leave=2 * PAGE)
    snapshot, journal = path.read_bytes(), store.journal.read_bytes()
    assert len(snapshot) > 5 * PAGE

    with pytest.raises(CardStateError, match=r"cannot write a new snapshot .*intact"):
        store.compact()
    assert path.read_bytes() == snapshot and store.journal.read_bytes() == journal
    assert not (fs / "card.json.tmp").exists()

    host.select_pin("kenhojo-pin")
    caplog.set_level(logging.WARNING, "harness.emulator.state")
    assert host.verify("kenhojo-pin", b"0000") == SW.retries(2)
    assert host.verify("kenhojo-pin", b"0000") == SW.retries(1)  # 5th line: compaction due
    assert "compaction will be tried again" in caplog.text
    assert path.read_bytes() == snapshot
    assert store.journal.read_bytes().count(b"\n") == 5
    committed = pins_of(store.state)
    store.close()

    again = FileStore.open(path)  # still full: opens from the journal, compaction logged
    assert pins_of(again.state) == committed
    assert committed["jpki-auth"][0] == 0 and committed["kenhojo-pin"][0] == 1
    again.close()
    assert path.read_bytes() == snapshot

    filler.unlink()
    again = FileStore.open(path)  # room again: the journal is folded
    assert pins_of(again.state) == committed
    again.close()
    assert path.read_bytes() != snapshot and FileStore.journal_path(path).stat().st_size == 0
    assert loaded(path) == committed


def test_a_journal_write_on_a_full_disk_is_undone_and_reported(
    tmpfs: Callable[[int], Path],
    template_state: CardState,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A line that crosses into a page the disk does not have: the kernel writes part of it
    (a short write), then ENOSPC. The partial line is cut off, memory is unchanged, the write
    raises; after a restart the counter is the last committed one."""
    fs = tmpfs(256 * 1024)
    path = fs / "card.json"
    FileStore.create(path, template_state.copy())
    store = FileStore.open(path)
    line = len(state_mod._journal_line(0, "jpki-auth", 2, None))
    for i in range(PAGE // line):  # the journal ends just short of a page boundary
        store.write_pin("jpki-auth", remaining=2 + i % 2)
    size = store.journal.stat().st_size
    assert size < PAGE < size + line
    fill(fs)
    writes: list[tuple[int, int | str]] = []
    real_write = os.write

    def recording_write(fd: int, data: bytes | memoryview) -> int:
        try:
            n = real_write(fd, data)
        except OSError as exc:
            writes.append((len(data), errno.errorcode[exc.errno or 0]))
            raise
        writes.append((len(data), n))
        return n

    monkeypatch.setattr(os, "write", recording_write)
    before = pins_of(store.state)
    with pytest.raises(CardStateError, match=r"card.json.journal: journal write failed: No space"):
        store.write_pin("jpki-auth", remaining=0)
    monkeypatch.undo()
    assert writes == [(line, PAGE - size), (line - (PAGE - size), "ENOSPC")]  # short, then full
    assert pins_of(store.state) == before
    raw = store.journal.read_bytes()
    assert len(raw) == size and raw.endswith(b"\n")  # nothing of the failed line is left
    with pytest.raises(CardStateError, match="No space"):  # still full: refused again
        store.write_pin("jpki-auth", remaining=0)
    store.close()
    assert loaded(path) == before


def test_a_short_write_is_completed_or_undone(
    tmp_path: Path, template_state: CardState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected short writes on the journal: the rest is written (the line is whole), or the
    next write fails and the journal is cut back; if even the cut fails, the card takes no
    more writes (anything appended would join the partial line) and a restart drops it."""
    path = tmp_path / "card.json"
    FileStore.create(path, template_state.copy())
    store = FileStore.open(path)
    store.write_pin("jpki-auth", remaining=2)
    fd = store._wfd
    real_write = os.write
    plan: list[str] = []

    def flaky(f: int, data: bytes | memoryview) -> int:
        if f != fd or not plan:
            return real_write(f, data)
        step = plan.pop(0)
        if step == "half":
            return real_write(f, bytes(data)[: len(data) // 2])
        if step == "zero":
            return 0
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "write", flaky)
    plan[:] = ["half"]  # then the rest goes through
    store.write_pin("jpki-auth", remaining=1)
    assert store.state.pins["jpki-auth"].remaining == 1
    assert loaded_lines(store) == 2

    for failure in ("error", "zero"):
        plan[:] = ["half", failure]
        with pytest.raises(CardStateError, match="journal write failed"):
            store.write_pin("jpki-auth", remaining=0)
        assert store.state.pins["jpki-auth"].remaining == 1
        assert loaded_lines(store) == 2 and store.journal.read_bytes().endswith(b"\n")

    plan[:] = ["half", "error"]

    def broken_ftruncate(f: int, length: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "ftruncate", broken_ftruncate)
    with pytest.raises(CardStateError, match=r"could not be removed.*no more writes"):
        store.write_pin("jpki-auth", remaining=0)
    monkeypatch.undo()
    with pytest.raises(CardStateError, match="damaged by a failed write"):
        store.write_pin("jpki-auth", remaining=0)
    assert not store.journal.read_bytes().endswith(b"\n")  # half a line was left behind
    store.close()
    again = FileStore.open(path)  # the torn tail is dropped and cut off
    assert again.state.pins["jpki-auth"].remaining == 1
    assert again.journal.read_bytes() == b""  # folded into the snapshot
    again.close()


def loaded_lines(store: FileStore) -> int:
    return store.journal.read_bytes().count(b"\n")


def test_replacing_a_card_on_a_full_disk_changes_nothing(
    tmpfs: Callable[[int], Path],
    template_state: CardState,
    card_config: CardConfig,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fs = tmpfs(256 * 1024)
    path = fs / "card.json"
    FileStore.create(path, template_state.copy())
    store = FileStore.open(path)
    store.write_pin("jpki-sign", remaining=0)
    store.close()
    fill(fs, leave=2 * PAGE)
    snapshot, journal = path.read_bytes(), FileStore.journal_path(path).read_bytes()
    with pytest.raises(CardStateError, match="cannot write the card state: No space"):
        FileStore.create(path, template_state.copy(), overwrite=True)
    assert main(["card", "new", str(path), "--force"]) == 2
    assert "No space left on device" in one_error_line(capsys.readouterr().err)
    assert path.read_bytes() == snapshot
    assert FileStore.journal_path(path).read_bytes() == journal
    assert not (fs / "card.json.tmp").exists()
    assert loaded(path)["jpki-sign"][0] == 0


# -- 65 81 when the card cannot write -----------------------------------------------------------
class FailingStore(MemoryStore):
    """A store whose ``fail_at``-th write (1-based) fails like a full disk."""

    def __init__(self, state: CardState, fail_at: int | None) -> None:
        super().__init__(state)
        self.fail_at = fail_at or 1 << 30
        self.writes = 0

    def write_pin(self, pin_id: str, *, remaining: int, value: bytes | None = None) -> None:
        self.writes += 1
        if self.writes == self.fail_at:
            raise CardStateError("card.json.journal: journal write failed: No space left on device")
        super().write_pin(pin_id, remaining=remaining, value=value)


@pytest.mark.parametrize(
    ("case", "fail_at"),
    [
        ("wrong PIN, decrement fails", 1),
        ("right PIN, decrement fails", 1),
        ("right PIN, restore fails", 2),
        ("change fails", None),
        ("reset fails", None),
    ],
)
def test_a_failed_state_write_answers_6581(
    fresh_state: CardState,
    card_config: CardConfig,
    caplog: pytest.LogCaptureFixture,
    case: str,
    fail_at: int | None,
) -> None:
    store = FailingStore(fresh_state, fail_at)
    card = EmulatedCard(store)
    card.power_on()
    host = Host(card, card_config)
    host.select_pin("jpki-auth")
    right = host.secrets["jpki-auth"]
    if case.startswith("change"):
        assert host.verify("jpki-auth", b"0000") == SW.retries(2)  # writes 1 (then 2: restore)
        assert host.verify("jpki-auth") == SW.OK
        store.fail_at = store.writes + 1
        apdu, expect_tries = C.change_reference_data(b"8642"), 3
    elif case.startswith("reset"):
        for _ in range(3):
            host.verify("jpki-auth", b"0000")
        store.fail_at = store.writes + 1
        code = card_config.reset_codes["window"].encode()
        apdu, expect_tries = C.reset_retry_counter(code), 0
    elif case.startswith("wrong"):
        apdu, expect_tries = C.verify(b"0000"), 3
    else:
        apdu, expect_tries = C.verify(right), 3 if fail_at == 1 else 2
    caplog.set_level(logging.ERROR, "harness.emulator.card")
    resp = check_apdu(card, apdu.to_bytes())  # the shared card oracle agrees with 65 81
    assert resp.sw == SW.MEMORY_FAILURE, case
    assert card.pin_state("jpki-auth").remaining == expect_tries
    assert card.pin_state("jpki-auth").value == right  # no new value
    if not case.startswith("change"):
        assert "jpki-auth" not in card.verified
    assert "65 81" in caplog.text and "No space left on device" in caplog.text
    # the card goes on once the store works again
    assert host.verify("jpki-auth") == (SW.OK if expect_tries else SW.REFERENCE_DATA_BLOCKED)


def test_a_failed_write_at_power_on_is_logged_not_raised(
    fresh_state: CardState, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_state.pins["jpki-auth"].remaining = 1
    card = EmulatedCard(
        FailingStore(fresh_state, 1), defects=PROFILES["power-cycle-resets-counter"]
    )
    caplog.set_level(logging.ERROR, "harness.emulator.card")
    assert card.power_on() == card.atr
    assert card.pin_state("jpki-auth").remaining == 1
    assert "at power-on.restore failed, power-on goes on: card.json.journal" in caplog.text


def template_state_atr(path: Path) -> bytes:
    return MODELS[json.loads(path.read_text())["model"]].atr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pinloop_emulate_on_a_full_disk_answers_6581_and_logs_why(
    tmpfs: Callable[[int], Path], template_state: CardState, card_config: CardConfig
) -> None:
    """End to end: ``pinloop emulate`` on a full disk, spoken to over its vpcd link (no
    pcscd: this test is the reader's side of the link)."""
    fs = tmpfs(256 * 1024)
    path = fs / "card.json"
    FileStore.create(path, template_state.copy())
    fill(fs)  # the journal is empty: its first line needs a page there is none of
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.settimeout(20)
    log_path = fs.parent / "emulate.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "emulate", f"{path}@socket://127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        conn, _ = listener.accept()
        decoder = Decoder()

        def exchange(payload: bytes, timeout: float = 20) -> bytes:
            conn.settimeout(timeout)
            conn.sendall(encode(payload))
            while chunk := conn.recv(4096):
                for message in decoder.feed(chunk):
                    return message
            raise AssertionError("the emulator closed the link")

        # opening the link discards whatever arrived before: ask for the ATR until it comes
        for _ in range(100):
            with contextlib.suppress(TimeoutError):
                assert exchange(bytes([CTRL_ATR]), timeout=0.2) == template_state_atr(path)
                break
        conn.sendall(encode(bytes([CTRL_ON])))
        jpki = C.select_df(bytes.fromhex("D392F000260100000001"))
        assert exchange(jpki.to_bytes()) == b"\x90\x00"
        assert exchange(C.select_ef(0x0018).to_bytes()) == b"\x90\x00"
        assert exchange(C.verify(b"0000").to_bytes()) == b"\x65\x81"
        assert exchange(C.pin_status().to_bytes()) == b"\x63\xc3"  # no try was spent
        conn.close()
    finally:
        proc.terminate()
        proc.wait(10)
        listener.close()
    log = log_path.read_text()
    assert "answering 65 81" in log and "No space left on device" in log
    assert "card.json.journal" in log and "Traceback" not in log
    assert loaded(path)["jpki-auth"][0] == 3


# -- corruption -----------------------------------------------------------------------------
def committed_card(path: Path, state: CardState, config: CardConfig) -> Pins:
    """A card whose journal holds a line of an older epoch (a compaction whose emptying of the
    journal did not happen) and seven lines of the current one: a PIN blocked, one try spent,
    a VERIFY and a CHANGE; returns the committed counters."""
    FileStore.create(path, state.copy())
    store = FileStore.open(path)
    store.write_pin("juki-pin", remaining=2)
    old = store.journal.read_bytes()
    store.compact()
    host = host_on(store, config)
    host.select_pin("jpki-auth")
    for _ in range(3):
        assert host.verify("jpki-auth", b"0000") != SW.OK
    host.select_pin("kenhojo-pin")
    host.verify("kenhojo-pin", b"0000")
    host.select_pin("jpki-sign")
    assert host.verify("jpki-sign") == SW.OK
    assert host.sw(C.change_reference_data(b"NEWPASS2")) == SW.OK
    committed = pins_of(store.state)
    store.close()
    journal = FileStore.journal_path(path)
    journal.write_bytes(old + journal.read_bytes())
    return committed


MASKS = (0x01, 0x02, 0x10, 0x20, 0x80, 0xFF)


def test_a_flipped_byte_anywhere_in_the_journal_never_gives_back_a_try(
    tmp_path: Path, template_state: CardState, card_config: CardConfig
) -> None:
    path = tmp_path / "card.json"
    committed = committed_card(path, template_state, card_config)
    journal = FileStore.journal_path(path)
    assert committed["jpki-auth"][0] == 0 and committed["kenhojo-pin"][0] == 2
    assert committed["juki-pin"][0] == 2 and committed["jpki-sign"] == (5, b"NEWPASS2")
    assert loaded(path) == committed
    snapshot, raw = path.read_bytes(), journal.read_bytes()
    assert raw.count(b"\n") == 8
    line_of = [raw[:i].count(b"\n") + 1 for i in range(len(raw))]
    outcomes = {"refused": 0, "loaded identical": 0}
    for offset in range(len(raw)):
        for mask in MASKS:
            flipped = bytearray(raw)
            flipped[offset] ^= mask
            journal.write_bytes(flipped)
            try:
                store = FileStore.open(path)
            except CardStateError as exc:
                assert f"{journal}:{line_of[offset]}: " in str(exc), (offset, mask, exc)
                outcomes["refused"] += 1
                continue
            try:
                assert pins_of(store.state) == committed, (offset, mask)
            finally:
                store.close()
            outcomes["loaded identical"] += 1
            path.write_bytes(snapshot)  # the open folded the journal: put the card back
    print(f"journal of {len(raw)} bytes × {len(MASKS)} masks: {outcomes}")
    assert sum(outcomes.values()) == len(raw) * len(MASKS)
    assert path.read_bytes() == snapshot


def test_a_flipped_byte_in_the_snapshot_is_refused_or_harmless(
    tmp_path: Path, template_state: CardState, card_config: CardConfig
) -> None:
    """Every byte of the snapshot but its contents and keys (format, name, identity, PINs,
    reset codes, epoch, SHA-256) with three masks, every 101st byte of the rest with one."""
    path = tmp_path / "card.json"
    committed = committed_card(path, template_state, card_config)
    FileStore.open(path).close()  # fold the journal: every counter is in the snapshot
    raw = path.read_bytes()
    head, tail = raw.index(b'"contents"'), raw.index(b'"epoch"')
    every = [*range(head), *range(tail, len(raw))]
    flips = [(i, m) for i in every for m in (0x01, 0x20, 0x80)]
    flips += [(i, 0x04) for i in range(head, tail, 101)]
    outcomes = {"refused": 0, "loaded identical": 0}
    for offset, mask in flips:
        flipped = bytearray(raw)
        flipped[offset] ^= mask
        path.write_bytes(flipped)
        try:
            pins = loaded(path)
        except CardStateError as exc:
            assert str(exc).startswith(f"{path}: "), exc
            outcomes["refused"] += 1
            continue
        assert pins == committed, (offset, mask)
        outcomes["loaded identical"] += 1
    print(f"snapshot of {len(raw)} bytes, {len(flips)} flips: {outcomes}")
    assert sum(outcomes.values()) == len(flips)


def crc_line(body: bytes) -> bytes:
    return b"%s\t%08x\n" % (body, zlib.crc32(body))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"e":0,"p":"jpki-auth"}', "not a record of e, p, r"),
        (b'{"e":0,"p":"jpki-auth","r":1,"x":1}', "not a record of e, p, r"),
        (b'{"e":0,"p":"jpki-auth","r":"1"}', "counter: an integer expected"),
        (b'{"e":0,"p":"jpki-auth","r":true}', "counter: an integer expected"),
        (b'{"e":"0","p":"jpki-auth","r":1}', "epoch: an integer expected"),
        (b'{"e":0,"p":7,"r":1}', "unknown PIN 7"),
        (b'{"e":0,"p":"nope","r":1}', "unknown PIN 'nope'"),
        (b'{"e":0,"p":"jpki-auth","r":9}', "implausible journal line: .*counter 9/3"),
        (b'{"e":0,"p":"jpki-auth","r":-1}', "counter -1/3"),
        (b'{"e":0,"p":"jpki-auth","r":3,"v":"3132333435"}', "a value of 5 bytes"),
        (b'{"e":0,"p":"jpki-auth","r":3,"v":""}', "a value of 0 bytes"),
        (b'{"e":0,"p":"jpki-auth","r":3,"v":"zz"}', "value: not hex"),
        (b'{"e":0,"p":"jpki-auth","r":3,"v":5}', "value: a hex string expected"),
        (b'{"e":0,"p":', "not JSON"),
        (b"[1, 2]", "not a record"),
        (b'{"e":1,"p":"jpki-auth","r":1}', "epoch 1 is newer than the snapshot"),
        (b'{"e":-1,"p":"jpki-auth","r":1}', "epoch -1 is negative"),
    ],
)
def test_a_journal_line_with_a_valid_crc_but_a_bad_record_is_refused(
    tmp_path: Path, template_state: CardState, body: bytes, message: str
) -> None:
    path = tmp_path / "card.json"
    FileStore.create(path, template_state.copy())
    good = state_mod._journal_line(0, "jpki-auth", 2, None)
    journal = FileStore.journal_path(path)
    journal.write_bytes(good + crc_line(body) + good)
    for readonly in (True, False):
        with pytest.raises(CardStateError, match=rf"^{journal}:2: .*{message}"):
            FileStore.open(path, readonly=readonly)
    assert journal.read_bytes() == good + crc_line(body) + good  # refused, and left alone


def test_a_flipped_byte_in_line_one_does_not_unblock_a_pin(
    tmp_path: Path, template_state: CardState
) -> None:
    """The issue's case: the old replay stopped at the bad line, and every later line (the
    ones that blocked the PIN) was dropped: 3/3 again."""
    path = tmp_path / "card.json"
    FileStore.create(path, template_state.copy())
    store = FileStore.open(path)
    for left in (2, 1, 0):
        store.write_pin("jpki-auth", remaining=left)
    store.close()
    journal = FileStore.journal_path(path)
    raw = bytearray(journal.read_bytes())
    raw[5] ^= 0x01
    journal.write_bytes(raw)
    with pytest.raises(CardStateError, match=rf"{journal}:1: corrupt journal line: CRC mismatch"):
        FileStore.open(path)


def test_lines_of_an_older_epoch_are_ignored_but_checked(
    tmp_path: Path, template_state: CardState
) -> None:
    path = tmp_path / "card.json"
    FileStore.create(path, template_state.copy())
    store = FileStore.open(path)
    store.write_pin("jpki-auth", remaining=0)
    old = store.journal.read_bytes()
    store.compact()  # epoch 1: the line above is in the snapshot
    store.write_pin("jpki-auth", remaining=1)
    store.close()
    journal = FileStore.journal_path(path)
    current = journal.read_bytes()
    journal.write_bytes(old + current)
    assert loaded(path)["jpki-auth"][0] == 1  # the epoch-0 line is skipped
    journal.write_bytes(old.replace(b'"r":0', b'"r":3') + current)
    with pytest.raises(CardStateError, match=rf"{journal}:1: corrupt journal line: CRC"):
        FileStore.open(path)
    journal.write_bytes(current + old)  # epochs must not go back
    with pytest.raises(CardStateError, match=rf"{journal}:2: corrupt journal: epoch 0 after 1"):
        FileStore.open(path)


def test_a_torn_tail_is_dropped_but_a_whole_line_without_newline_is_refused(
    tmp_path: Path, template_state: CardState
) -> None:
    path = tmp_path / "card.json"
    FileStore.create(path, template_state.copy())
    journal = FileStore.journal_path(path)
    first = state_mod._journal_line(0, "jpki-auth", 2, None)
    last = state_mod._journal_line(0, "jpki-auth", 1, None)
    for cut in range(1, len(last) - 1):  # every write cut short, up to the CRC's last digit
        journal.write_bytes(first + last[:cut])
        assert loaded(path)["jpki-auth"][0] == 2
        assert journal.read_bytes() == first + last[:cut]  # a read-only open cuts nothing
        store = FileStore.open(path)
        assert store.state.pins["jpki-auth"].remaining == 2
        assert journal.read_bytes() == b""  # cut off, then folded into the snapshot
        store.close()
        assert loaded(path)["jpki-auth"][0] == 2
        FileStore.create(path, template_state.copy(), overwrite=True)
    journal.write_bytes(first + last[:-1])  # all but the newline: a line that was committed
    for readonly in (True, False):
        with pytest.raises(CardStateError, match=rf"{journal}:2: .*without its newline"):
            FileStore.open(path, readonly=readonly)


def resign(path: Path, edit: Callable[[dict[str, Any]], object]) -> None:
    """Change a snapshot and give it a matching SHA-256: only the plausibility checks stand
    between it and the card."""
    doc = json.loads(path.read_text())
    del doc["sha256"]
    edit(doc)
    doc["sha256"] = state_mod._digest(doc)
    path.write_text(json.dumps(doc, indent=1))


def _pin(pin_id: str, **fields: object) -> Callable[[dict[str, Any]], object]:
    return lambda doc: doc["pins"][pin_id].update(fields)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_pin("jpki-auth", remaining=9), "pins.jpki-auth: counter 9/3 is impossible"),
        (_pin("jpki-auth", remaining=99), "counter 99/3 is impossible"),
        (_pin("jpki-auth", remaining=-1), "counter -1/3 is impossible"),
        (_pin("jpki-auth", remaining=0, max_tries=0), "max_tries 0 outside 1..15"),
        (_pin("kenkaku-a", remaining=16, max_tries=16), "max_tries 16 outside 1..15"),
        (_pin("jpki-auth", remaining="3"), "remaining: an integer expected"),
        (_pin("jpki-auth", remaining=3.0), "remaining: an integer expected"),
        (_pin("jpki-auth", max_tries=True), "max_tries: an integer expected"),
        (_pin("jpki-auth", value=""), "a value of 0 bytes"),
        (_pin("jpki-auth", value="3132333435"), "a value of 5 bytes"),
        (_pin("jpki-sign", value="41" * 17), "a value of 17 bytes"),
        (_pin("jpki-auth", value="zz"), "value: not hex"),
        (_pin("jpki-auth", value=1234), "value: a hex string expected"),
        (lambda d: d["pins"]["jpki-auth"].pop("remaining"), "not an object of value, remai"),
        (lambda d: d["pins"].pop("juki-pin"), r"missing \['juki-pin'\]"),
        (lambda d: d["pins"].update(extra=d["pins"]["juki-pin"]), r"unknown \['extra'\]"),
        (lambda d: d.update(pins=[]), "pins: dict expected, got list"),
        (lambda d: d.pop("name"), "name: missing"),
        (lambda d: d.update(name=3), "name: str expected"),
        (lambda d: d.update(model="jpki-future"), "unknown card model"),
        (lambda d: d.update(epoch=-1), "epoch: -1 is negative"),
        (lambda d: d.update(epoch="1"), "epoch: an integer expected"),
        (lambda d: d.pop("epoch"), "epoch: an integer expected"),
        (lambda d: d["identity"].update(name=1), "identity: not a mapping of strings"),
        (lambda d: d["reset_codes"].pop("kiosk"), "reset_codes: a window and a kiosk code"),
        (lambda d: d["reset_codes"].update(kiosk="00"), "reset_codes: a window and a kiosk"),
        (lambda d: d["contents"].pop("jpki/auth-cert"), r"contents: missing \['jpki/auth-cer"),
        (lambda d: d["keys"].pop("ca"), "keys: .* expected"),
        (lambda d: d["keys"].update(ca="not a key"), "keys.ca: "),
        (lambda d: d["keys"].update(ca=None), "keys.ca: not a PEM string"),
    ],
)
def test_an_implausible_snapshot_is_refused(
    tmp_path: Path,
    template_state: CardState,
    edit: Callable[[dict[str, Any]], object],
    message: str,
) -> None:
    path = tmp_path / "card.json"
    FileStore.create(path, template_state.copy())
    resign(path, edit)
    for readonly in (True, False):
        with pytest.raises(CardStateError, match=rf"^{path}: corrupt card state: .*{message}"):
            FileStore.open(path, readonly=readonly)


def test_the_snapshot_has_an_integrity_check(tmp_path: Path, template_state: CardState) -> None:
    path = tmp_path / "card.json"
    FileStore.create(path, template_state.copy())
    text = path.read_text()
    assert json.loads(text)["format"] == "pinloop-card-state/2"
    path.write_text(text.replace('"remaining": 3', '"remaining": 9', 1))  # hand-edited 9/3
    with pytest.raises(CardStateError, match=rf"{path}: .*integrity check failed .*not match"):
        FileStore.open(path)
    doc = json.loads(text)
    del doc["sha256"]
    path.write_text(json.dumps(doc))
    with pytest.raises(CardStateError, match=r"integrity check failed \(no sha256"):
        FileStore.open(path)


def test_the_old_format_is_refused_with_what_to_do(
    tmp_path: Path, template_state: CardState, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "card.json"
    doc = template_state.to_json() | {"format": "pinloop-card-state/1", "epoch": 3}
    path.write_text(json.dumps(doc))
    assert main(["card", "show", str(path)]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "old format pinloop-card-state/1" in err
    assert f"pinloop card new --force {path}" in err


# -- one process at a time ------------------------------------------------------------------
def test_a_card_in_use_is_not_replaced(
    tmp_path: Path,
    template_state: CardState,
    card_config: CardConfig,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "card.json"
    FileStore.create(path, template_state.copy())
    store = FileStore.open(path)
    store.write_pin("jpki-auth", remaining=0)
    journal = store.journal.read_bytes()
    with pytest.raises(CardStateError, match="in use by another process"):
        FileStore.create(path, template_state.copy(), overwrite=True)
    assert main(["card", "new", str(path), "--force"]) == 2
    assert "in use by another process" in one_error_line(capsys.readouterr().err)
    assert main(["card", "show", str(path)]) == 2  # no half-written state is shown either
    assert "in use by another process" in one_error_line(capsys.readouterr().err)
    assert store.journal.read_bytes() == journal
    store.write_pin("jpki-auth", remaining=0)  # the running card is unharmed
    store.close()
    assert loaded(path)["jpki-auth"][0] == 0
    assert main(["card", "new", str(path), "--force"]) == 0  # once the card is free
    assert loaded(path)["jpki-auth"][0] == 3


def test_a_running_pinloop_emulate_keeps_its_card(
    tmp_path: Path, template_state: CardState, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case, with the emulator as a process of its own (serving a link nobody
    answers: no pcscd is involved)."""
    from tests.emulator_process import EmulatorProcess

    emu = EmulatorProcess(template_state, tmp_path, f"socket://127.0.0.1:{_free_port()}")
    try:
        journal = FileStore.journal_path(emu.state_path)
        assert journal.exists()
        assert main(["card", "new", str(emu.state_path), "--force"]) == 2
        assert "in use by another process" in one_error_line(capsys.readouterr().err)
        assert journal.exists() and emu.proc.poll() is None
    finally:
        emu.stop()
    assert main(["card", "new", str(emu.state_path), "--force"]) == 0


def test_read_only_opens_share_the_card_and_write_nothing(
    tmp_path: Path, template_state: CardState
) -> None:
    path = tmp_path / "card.json"
    FileStore.create(path, template_state.copy())
    store = FileStore.open(path)
    store.write_pin("jpki-auth", remaining=1)
    store.close()
    journal = FileStore.journal_path(path)
    before = path.read_bytes(), journal.read_bytes(), path.stat().st_mtime_ns
    a, b = FileStore.open(path, readonly=True), FileStore.open(path, readonly=True)
    assert a.state.pins["jpki-auth"].remaining == 1 == b.state.pins["jpki-auth"].remaining
    with pytest.raises(CardStateError, match="in use"):
        FileStore.open(path)
    with pytest.raises(CardStateError, match="opened read-only"):
        a.write_pin("jpki-auth", remaining=0)
    with pytest.raises(CardStateError, match="opened read-only"):
        a.compact()
    a.close()
    b.close()
    assert (path.read_bytes(), journal.read_bytes(), path.stat().st_mtime_ns) == before
    journal.unlink()
    FileStore.open(path, readonly=True).close()
    assert not journal.exists()  # a read-only open creates nothing


# -- read-only media and odd paths ------------------------------------------------------------
def test_read_only_media(
    tmpfs: Callable[[int], Path],
    template_state: CardState,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fs = tmpfs(256 * 1024)
    path = fs / "card.json"
    FileStore.create(path, template_state.copy())
    store = FileStore.open(path)
    store.write_pin("jpki-auth", remaining=0)
    store.write_pin("kenhojo-pin", remaining=2)
    store.close()
    remount(fs, "ro")
    try:
        assert main(["card", "show", str(path)]) == 0
        out = capsys.readouterr().out
        assert "jpki-auth" in out and "0/3" in out and "BLOCKED" in out and "2/3" in out
        assert loaded(path)["kenhojo-pin"][0] == 2
        for argv in (
            ["card", "apdu", str(path), "00A4040C0AD392F000260100000001"],
            ["card", "new", str(path), "--force"],
        ):
            assert main(argv) == 2, argv
            err = one_error_line(capsys.readouterr().err)
            assert "Read-only file system" in err and str(fs) in err, err
        r = run_cli("emulate", f"{path}@socket://127.0.0.1:1")
        assert r.returncode == 2 and "Read-only file system" in one_error_line(r.stderr)
        with pytest.raises(CardStateError, match="Read-only file system"):
            FileStore.open(path)
        remount(fs, "rw")
        FileStore.journal_path(path).unlink()  # no journal: a read-only open needs none
        remount(fs, "ro")
        assert main(["card", "show", str(path)]) == 0
        assert "3/3" in capsys.readouterr().out
    finally:
        remount(fs, "rw")


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *argv],
        capture_output=True,
        text=True,
        timeout=30,  # a FIFO opened for reading would wait for a writer for ever
        cwd=ROOT,
        check=False,
    )


def test_a_fifo_or_a_directory_as_state_fails_fast(
    tmp_path: Path, template_state: CardState
) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.json"
    folder.mkdir()
    for path, kind in ((fifo, "a FIFO"), (folder, "a directory")):
        for argv in (
            ("card", "show", str(path)),
            ("card", "apdu", str(path), "00A4040C0AD392F000260100000001"),
            ("card", "new", str(path)),
            ("card", "new", str(path), "--force"),
            ("emulate", f"{path}@socket://127.0.0.1:1"),
        ):
            r = run_cli(*argv)
            assert r.returncode == 2, (argv, r.stderr)
            assert one_error_line(r.stderr) == f"pinloop: {path}: {kind}, not a card state file"
    # the journal a FIFO, or a directory
    path = tmp_path / "card.json"
    FileStore.create(path, template_state.copy())
    journal = FileStore.journal_path(path)
    journal.unlink()
    os.mkfifo(journal)
    for argv in (("card", "show", str(path)), ("card", "apdu", str(path), "00A4000C")):
        r = run_cli(*argv)
        assert r.returncode == 2
        assert f"{journal}: a FIFO" in one_error_line(r.stderr)
    journal.unlink()
    journal.mkdir()
    r = run_cli("card", "apdu", str(path), "00A4000C")
    assert r.returncode == 2 and f"{journal}: a directory" in one_error_line(r.stderr)


def test_any_os_error_of_a_card_command_is_one_line(
    tmp_path: Path, template_state: CardState
) -> None:
    path = tmp_path / "card.json"
    FileStore.create(path, template_state.copy())
    ready = tmp_path / "no-such-folder" / "ready.json"
    r = run_cli("emulate", f"{path}@socket://127.0.0.1:1", "--ready-file", str(ready))
    assert r.returncode == 2
    assert one_error_line(r.stderr) == f"pinloop: {ready}: No such file or directory"
    assert loaded(path)["jpki-auth"][0] == 3
