"""The pinloop command: create, inspect and talk to a card; smoke run; errors without tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main


def test_card_new_show_apdu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "c.json"
    assert main(["card", "new", str(state), "--model", "jpki-extended"]) == 0
    assert "3B DA 13 FF" in capsys.readouterr().out
    jpki = "00A4040C0AD392F000260100000001"
    assert (
        main(
            [
                "card",
                "apdu",
                str(state),
                jpki,
                "00A4020C020018",
                "0020008004 30303030",
                "POWER",
                jpki,
                "00A4020C020018",
                "00200080",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "00 20 00 80 04 ** ** ** **" in out and "30 30 30 30" not in out
    assert "<< 63 C2" in out and "-- power cycle" in out
    assert out.rstrip().endswith("2 tries left)")  # the decrement survived the power cycle
    assert main(["card", "show", str(state)]) == 0
    out = capsys.readouterr().out
    assert "jpki-auth" in out and "2/3" in out and "1234" not in out
    assert main(["card", "show", str(state), "--reveal"]) == 0
    assert "1234" in capsys.readouterr().out


def test_smoke_passes_on_the_faithful_card(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["smoke"]) == 0
    out = capsys.readouterr().out
    assert "24 passed, 0 failed" in out and "31 32 33 34" not in out


@pytest.mark.parametrize(
    "profile", ["no-decrement", "ok-when-blocked", "power-cycle-resets-counter", "query-costs-try"]
)
def test_smoke_fails_on_a_defective_card(profile: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["smoke", "--defect", profile]) == 1
    captured = capsys.readouterr()
    assert "device defect" in captured.err and "Traceback" not in captured.err


def test_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "c.json"
    assert main(["card", "show", str(state)]) == 2
    assert "no card state" in capsys.readouterr().err
    main(["card", "new", str(state)])
    capsys.readouterr()
    assert main(["card", "new", str(state)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["card", "apdu", str(state), "00A4 0"]) == 2
    assert "odd number of hex digits" in capsys.readouterr().err
    assert main(["smoke", "--defect", "nonsense"]) == 2
    assert "unknown defect profile" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npins:\n  jpki-auth: '12'\n")
    assert main(["smoke", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3" in err and "Traceback" not in err


def test_relay_by_hand(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.lab.relay_sim import SimulatedRelay

    sim = SimulatedRelay()
    try:
        assert main(["relay", sim.path, "off", "--channel", "3"]) == 0
        out = capsys.readouterr().out
        assert "pinloop simulated relay" in out and "channel 3: off" in out
        assert sim.powered[3] is False
        assert main(["relay", sim.path, "on", "--channel", "3"]) == 0
        assert "channel 3: on" in capsys.readouterr().out
        sim.mute = True
        assert main(["relay", sim.path, "--deadline", "0.2"]) == 2
        assert "no answer to 'PING' within 0.2 s" in capsys.readouterr().err
    finally:
        sim.close()
    assert main(["relay", "/dev/no-such-relay"]) == 2
    assert "cannot open" in capsys.readouterr().err


class _StopLab(Exception):
    pass


@pytest.fixture
def pcscd_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """pcscd never starts here: Pcscd.start records the log path it was given and stops."""
    from harness.lab import pcscd
    from harness.lab.pcscd import LabError

    calls: list[Path] = []

    def start(self: pcscd.Pcscd, timeout: float = 10.0) -> None:
        calls.append(self.log_path)
        calls.append(self.config_dir)
        raise LabError("pcscd not started in this test")

    monkeypatch.setattr(pcscd.Pcscd, "start", start)
    return calls


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--slots", "17"], "--slots 17 with 0 card(s): between 1 and 16"),
        (["--slots", "0"], "between 1 and 16"),
        (["--defect", "fixed-delay:fixed_delay_ms=nan"], "finite"),
        (["--config", "/nonexistent/card.yaml"], "file not found"),
        (["nosuch.json"], "no card state"),
    ],
)
def test_lab_checks_every_argument_before_writing_anything(
    tmp_path: Path, argv: list[str], words: str
) -> None:
    """--slots 17 created 17 card states before refusing (pcscd cannot start in the child)."""
    from tests.bounded import measure

    workdir = tmp_path / "lab"
    (out,) = measure([("cli", "lab", "--workdir", str(workdir), *argv)])
    out.check("exit 2", lines=1)
    assert out.text.startswith("pinloop: ") and words in out.text, out.text
    assert not workdir.exists()


def test_lab_workdir_is_a_fresh_temporary_folder_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pcscd_calls: list[Path]
) -> None:
    import tempfile

    from harness.cli import REPORTS_DIR

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["lab", "--slots", "1"]) == 2
    log, config_dir = pcscd_calls
    assert log.is_absolute() and log.parent.parent == tmp_path, log
    assert log.parent.name.startswith("pinloop-lab-") and (log.parent / "card0.json").is_file()
    assert not log.is_relative_to(REPORTS_DIR) and config_dir.is_absolute()
    assert not (tmp_path / "reports").exists()


def test_lab_workdir_given_relative_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pcscd_calls: list[Path]
) -> None:
    """pcscd does chdir("/") before it reads --config: a relative folder was not found."""
    monkeypatch.chdir(tmp_path)
    assert main(["lab", "--slots", "1", "--workdir", "w"]) == 2
    log, config_dir = pcscd_calls
    assert log == tmp_path / "w" / "pcscd.log"
    assert config_dir == tmp_path / "w" / "reader.conf.d"


def test_lab_refuses_reports(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pcscd_calls: list[Path],
) -> None:
    """Card states hold PINs in hex: never under the project's reports/ (nor ./reports)."""
    from harness.cli import REPORTS_DIR

    inside = REPORTS_DIR / "lab-test-never-made"
    assert main(["lab", "--workdir", str(inside)]) == 2
    assert "card states hold PINs" in capsys.readouterr().err
    assert not inside.exists()
    monkeypatch.chdir(tmp_path)
    state = tmp_path / "reports" / "c.json"
    state.parent.mkdir()
    state.write_text("{}")
    assert main(["lab", str(state)]) == 2
    err = capsys.readouterr().err
    assert f"card state {state} is inside {tmp_path / 'reports'}" in err
    assert main(["lab", "--workdir", "reports/lab"]) == 2
    assert not (tmp_path / "reports" / "lab").exists()
    assert not pcscd_calls


@pytest.mark.parametrize(
    ("errno_", "filename", "shown"),
    [
        (30, "/mnt/ro/lab", "pinloop: /mnt/ro/lab: Read-only file system"),
        (28, "/mnt/full/lab", "pinloop: /mnt/full/lab: No space left on device"),
        (5, None, "pinloop: lab: Input/output error"),
    ],
)
def test_an_os_error_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    errno_: int,
    filename: str | None,
    shown: str,
) -> None:
    """Any OSError that escapes a command (a read-only or full disk, …) was a traceback."""
    import os

    def fail(*_: object, **__: object) -> None:
        raise OSError(errno_, os.strerror(errno_), filename)

    monkeypatch.setattr(Path, "mkdir", fail)
    assert main(["lab", "--slots", "1", "--workdir", filename or "/mnt/x"]) == 2
    err = capsys.readouterr().err
    assert err == shown + "\n", err


def test_files_that_are_not_files(tmp_path: Path) -> None:
    """A FIFO as a config or a card state hung the read; a folder where a file is meant is
    one line."""
    import os

    from tests.bounded import measure

    fifo = tmp_path / "card.yaml"
    os.mkfifo(fifo)
    state = tmp_path / "card.json"
    os.mkfifo(state)

    outs = measure(
        [
            ("cli", "smoke", "--config", str(fifo)),
            ("cli", "smoke", "--config", str(tmp_path)),
            ("cli", "emulate", str(tmp_path)),
            ("cli", "emulate", str(state)),
            ("cli", "lab", str(state), "--workdir", str(tmp_path / "lab")),
        ]
    )
    expected = [
        f"{fifo}: not a regular file",
        f"{tmp_path}: not a regular file",
        f"{tmp_path}: a directory, not a card state file",
        f"{state}: a FIFO, not a card state file",
        f"{state}: a FIFO, not a card state file",
    ]
    for out, words in zip(outs, expected, strict=True):
        out.check("exit 2", lines=1)
        assert words in out.text, out.text
