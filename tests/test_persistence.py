"""Persistent state: counters survive power cycles and restarts; writes are atomic and ordered."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest

from harness.apdu import commands as C
from harness.apdu import sw as SW
from harness.emulator import (
    COMPARE_EVENT,
    WRITE_POINTS,
    CardConfig,
    CardState,
    EmulatedCard,
    FileStore,
)
from harness.emulator import state as state_mod
from harness.errors import CardPowerLost, CardStateError
from tests.support import Host


@pytest.fixture
def state_path(tmp_path: Path, fresh_state: CardState) -> Path:
    path = tmp_path / "card.json"
    FileStore.create(path, fresh_state)
    return path


def _open(path: Path, config: CardConfig, **kwargs: object) -> Host:
    card = EmulatedCard(FileStore.open(path), **kwargs)  # type: ignore[arg-type]
    card.power_on()
    return Host(card, config)


def test_counters_survive_a_power_cycle_and_a_restart(
    state_path: Path, card_config: CardConfig
) -> None:
    host = _open(state_path, card_config)
    host.select_pin("jpki-auth")
    host.verify("jpki-auth", b"0000")
    host.select_pin("jpki-sign")
    for _ in range(5):
        host.verify("jpki-sign", b"WRONG1")
    host.card.power_off()
    host.card.power_on()
    host.select_pin("jpki-auth")
    assert host.tries() == 2
    host.card.store.close()  # the emulator process ends

    again = _open(state_path, card_config)
    again.select_pin("jpki-auth")
    assert again.tries() == 2
    again.select_pin("jpki-sign")
    assert again.tries() == 0
    assert again.verify("jpki-sign") == SW.REFERENCE_DATA_BLOCKED
    again.card.store.close()


def test_changed_pin_survives_a_restart(state_path: Path, card_config: CardConfig) -> None:
    host = _open(state_path, card_config)
    host.select_pin("kenhojo-pin")
    assert host.verify("kenhojo-pin") == SW.OK
    assert host.sw(C.change_reference_data(b"7777")) == SW.OK
    host.card.store.close()
    again = _open(state_path, card_config)
    again.select_pin("kenhojo-pin")
    assert again.verify("kenhojo-pin", b"7777") == SW.OK
    again.card.store.close()


def test_a_card_is_used_by_one_process_at_a_time(state_path: Path) -> None:
    first = FileStore.open(state_path)
    with pytest.raises(CardStateError, match="in use"):
        FileStore.open(state_path)
    first.close()
    FileStore.open(state_path).close()


def test_create_refuses_to_overwrite(state_path: Path, fresh_state: CardState) -> None:
    with pytest.raises(CardStateError, match="already exists"):
        FileStore.create(state_path, fresh_state)
    FileStore.create(state_path, fresh_state, overwrite=True)


def test_missing_and_corrupt_state_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CardStateError, match="no card state"):
        FileStore.open(tmp_path / "nothing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CardStateError, match="corrupt"):
        FileStore.open(bad)
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CardStateError, match="corrupt"):
        FileStore.open(bad)


def test_each_write_is_one_journal_line_and_a_torn_line_is_dropped(
    state_path: Path, card_config: CardConfig
) -> None:
    host = _open(state_path, card_config)
    journal = FileStore.journal_path(state_path)
    host.select_pin("jpki-auth")
    host.verify("jpki-auth", b"0000")
    assert journal.read_bytes().count(b"\n") == 1
    host.verify("jpki-auth", b"0000")
    assert journal.read_bytes().count(b"\n") == 2
    host.card.store.close()
    # a write that did not finish leaves part of a line, without its newline
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(lines[0] + b"\n" + lines[1][: len(lines[1]) // 2])
    again = _open(state_path, card_config)
    again.select_pin("jpki-auth")
    assert again.tries() == 2  # the first decrement survived, the torn second did not
    again.card.store.close()


def test_compaction_folds_the_journal(
    state_path: Path, card_config: CardConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_mod, "COMPACT_AFTER", 3)
    host = _open(state_path, card_config)
    host.select_pin("jpki-sign")
    for _ in range(4):
        host.verify("jpki-sign", b"WRONG1")
    journal = FileStore.journal_path(state_path)
    assert journal.read_bytes().count(b"\n") == 1  # 3 folded into the snapshot, 1 pending
    snapshot = json.loads(state_path.read_text())
    assert snapshot["pins"]["jpki-sign"]["remaining"] == 2
    host.card.store.close()
    again = _open(state_path, card_config)
    again.select_pin("jpki-sign")
    assert again.tries() == 1
    again.card.store.close()


def test_state_files_are_private(state_path: Path, card_config: CardConfig) -> None:
    host = _open(state_path, card_config)
    host.card.store.close()
    for p in (state_path, FileStore.journal_path(state_path)):
        assert os.stat(p).st_mode & 0o077 == 0


def test_host_durability_fsyncs_every_write(
    state_path: Path, card_config: CardConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    card = EmulatedCard(FileStore.open(state_path, durability="host"))
    card.power_on()
    host = Host(card, card_config)
    host.select_pin("jpki-auth")
    before = len(synced)
    host.verify("jpki-auth", b"0000")
    assert len(synced) == before + 1
    card.store.close()


# -- write points and power cuts ------------------------------------------------------------


class Recorder:
    def __init__(self, cut: tuple[str, str] | None = None) -> None:
        self.seen: list[tuple[str, str]] = []
        self.cut = cut

    def __call__(self, point: str, phase: str) -> None:
        self.seen.append((point, phase))
        if (point, phase) == self.cut:
            raise CardPowerLost(point, phase)


def test_verify_decrements_before_it_compares(host: Host) -> None:
    rec = Recorder()
    host.card.write_hook = rec
    host.select_pin("jpki-auth")
    host.verify("jpki-auth", b"0000")
    assert rec.seen == [
        ("verify.decrement", "before"),
        ("verify.decrement", "after"),
        ("verify.compare", "after"),  # compared only once the decrement is written
    ]
    rec.seen.clear()
    host.verify("jpki-auth")
    assert rec.seen == [
        ("verify.decrement", "before"),
        ("verify.decrement", "after"),
        ("verify.compare", "after"),
        ("verify.restore", "before"),
        ("verify.restore", "after"),
    ]
    assert {p for p, _ in rec.seen} <= {*WRITE_POINTS, COMPARE_EVENT}


@pytest.mark.parametrize("phase", ["before", "after"])
@pytest.mark.parametrize("right", [True, False])
def test_a_cut_at_any_verify_write_point_never_loses_a_wrong_try(
    state_path: Path, card_config: CardConfig, phase: str, right: bool
) -> None:
    points = ["verify.decrement"] + (["verify.restore"] if right else [])
    for point in points:
        host = _open(state_path, card_config)
        host.select_pin("jpki-auth")
        before = host.tries()
        host.card.write_hook = Recorder((point, phase))
        with pytest.raises(CardPowerLost):
            host.verify("jpki-auth", None if right else b"0000")
        assert not host.card.powered
        host.card.store.close()
        again = _open(state_path, card_config)
        again.select_pin("jpki-auth")
        after = again.tries()
        if point == "verify.decrement" and phase == "before":
            assert after == before  # cut before anything was written or compared
        elif right and point == "verify.restore" and phase == "after":
            assert after == 3
        else:
            assert after == before - 1  # the try was counted (a right PIN may lose one)
        assert again.verify("jpki-auth") == SW.OK  # reset the counter for the next round
        again.card.store.close()


@pytest.mark.parametrize("phase", ["before", "after"])
def test_a_cut_during_change_leaves_exactly_one_valid_pin(
    state_path: Path, card_config: CardConfig, phase: str
) -> None:
    host = _open(state_path, card_config)
    host.select_pin("jpki-auth")
    assert host.verify("jpki-auth") == SW.OK
    host.card.write_hook = Recorder(("change.write", phase))
    with pytest.raises(CardPowerLost):
        host.send(C.change_reference_data(b"8642"))
    host.card.store.close()
    again = _open(state_path, card_config)
    again.select_pin("jpki-auth")
    old_ok = again.verify("jpki-auth") == SW.OK
    again.select_pin("jpki-auth")
    new_ok = again.verify("jpki-auth", b"8642") == SW.OK
    assert old_ok != new_ok
    assert new_ok == (phase == "after")
    again.card.store.close()


def test_journal_lines_are_json_with_a_crc() -> None:
    line = state_mod._journal_line(3, "jpki-sign", 4, b"AB12CD")
    body, crc = line.rstrip(b"\n").split(b"\t")
    assert json.loads(body) == {"e": 3, "p": "jpki-sign", "r": 4, "v": b"AB12CD".hex()}
    assert int(crc, 16) == zlib.crc32(body)
    journal = Path("card.json.journal")
    raw = line + state_mod._journal_line(3, "jpki-auth", 1, None)
    assert state_mod._parse_journal(journal, raw) == (
        [
            state_mod._Record(3, "jpki-sign", 4, b"AB12CD"),
            state_mod._Record(3, "jpki-auth", 1, None),
        ],
        len(raw),
    )
    with pytest.raises(CardStateError, match=r"card.json.journal:1: corrupt journal line: CRC"):
        state_mod._parse_journal(journal, line.replace(b'"r":4', b'"r":5'))
