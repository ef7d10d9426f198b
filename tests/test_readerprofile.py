"""Reader profiles: schema errors with file:line, and exactly-one-match selection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.targets import reader_profile
from harness.targets.reader_profile import (
    BUILTIN_DIR,
    ReaderProfile,
    UnknownReader,
    lab_folder,
    load_profile,
    load_profiles,
    select_profile,
)
from tests.bounded import Outcome, laughs, measure


def test_the_shipped_profiles_load_and_match_virtual_readers() -> None:
    profiles = load_profiles()
    for reader in ("Virtual PCD 00 00", "Virtual PCD 00 01", "Virtual PCD A 00 01"):
        assert select_profile(reader, profiles).name == "virtual-pcd"


def _write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / f"{name}.yaml"
    p.write_text(text)
    return p


def test_none_or_several_matches_are_errors(tmp_path: Path) -> None:
    _write(tmp_path, "a", "name: a\nmatch: '^ACS'\ninterface: contact\n")
    _write(tmp_path, "b", "name: b\nmatch: 'ACR1252'\ninterface: contactless\n")
    profiles = load_profiles(tmp_path)
    assert select_profile("ACS ACR39U ICC Reader 00 00", profiles).name == "a"
    with pytest.raises(UnknownReader, match="several reader profiles"):
        select_profile("ACS ACR1252 1S CL Reader PICC 00 00", profiles)
    with pytest.raises(UnknownReader, match="no reader profile matches"):
        select_profile("SCM Microsystems SCR 3310 00 00", profiles)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("name: x\nmatch: '('\ninterface: contact\n", 2, "regular expression"),
        ("name: x\nmatch: '(a)\\1'\ninterface: contact\n", 2, "invalid escape sequence"),
        ("name: x\nmatch: 'a(?=b)'\ninterface: contact\n", 2, "invalid perl operator"),
        ("name: x\nmatch: a\ninterface: usb\n", 3, "contactless"),
        ("name: x\nmatch: a\ninterface: contact\ntiming:\n  verify_p50_ms: 0\n", 5, "> 0"),
        (
            "name: x\nmatch: a\ninterface: contact\ntiming:\n"
            "  verify_p95_ms: {limit: 2, marginal: 3}\n",
            5,
            "marginal must be below limit",
        ),
        (
            "name: x\nmatch: a\ninterface: contact\ntiming:\n  verify_p95_ms: {limit: 2}\n",
            5,
            "verify_p95_ms",
        ),
        ("name: x\ninterface: contact\n", 1, "'match' is a required property"),
    ],
)
def test_profile_mistakes(tmp_path: Path, text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_profile(_write(tmp_path, "p", text))
    assert info.value.location is not None and info.value.location.line == line
    assert words in info.value.render()


def test_duplicate_profile_names(tmp_path: Path) -> None:
    _write(tmp_path, "a", "name: same\nmatch: a\ninterface: contact\n")
    _write(tmp_path, "b", "name: same\nmatch: b\ninterface: contact\n")
    with pytest.raises(ConfigError, match="also used"):
        load_profiles(tmp_path)


def test_budgets_with_a_marginal_zone() -> None:
    from harness.targets.reader_profile import Budget

    b = Budget(2.0, 1.0)
    assert [b.judge(ms) for ms in (0.5, 1.0, 1.5, 2.0, 2.01)] == [
        "within",
        "within",
        "marginal",
        "marginal",
        "over",
    ]
    assert Budget(2.0).judge(1.99) == "within"


_HEAD = "name: x\nmatch: a\ninterface: contact\n"
#: small inputs that used to hang or explode: (text, line, words), each measured in a bounded
#: child process (tests/bounded.py): refused within 2 s and 200 MB
BOUNDED = [
    (
        _HEAD + laughs().replace("x-i: &i", "notes: &i"),
        8,
        "aliases",
    ),
    (
        _HEAD + "power_switch: {kind: relay, url: x, channel: 2.0}\n",
        4,
        "2.0 is not of type 'integer'",
    ),
    (_HEAD + "timing:\n  verify_p50_ms: .inf\n", 5, "inf"),
    ("name: x\nmatch: '('\ninterface: contact\n", 2, "match: not a regular expression"),
    (_HEAD + "timing:\n  verify_p95_ms: 1e12\n", 5, "greater than the maximum of 60000"),
    (
        _HEAD + "power_switch: {kind: relay, url: x, off_ms: .nan}\n",
        4,
        "nan is not of type 'number'",
    ),
]


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Outcome]]:
    tmp = tmp_path_factory.mktemp("bounded")
    paths = [_write(tmp, f"p{i}", text) for i, (text, _, _) in enumerate(BOUNDED)]
    return list(zip(paths, measure([("reader", str(p)) for p in paths]), strict=True))


@pytest.mark.parametrize("case", range(len(BOUNDED)))
def test_small_inputs_that_used_to_explode(case: int, bounded: list[tuple[Path, Outcome]]) -> None:
    _, line, words = BOUNDED[case]
    path, out = bounded[case]
    out.check_at(path, line, words)


def test_a_backtracking_pattern_matches_in_linear_time(tmp_path: Path) -> None:
    """^(a+)+$ took Python's re minutes on a name of 40 a's and a '!' (tests/bounded.py
    matches every profile it loads against such a name); RE2 takes microseconds."""
    path = _write(tmp_path, "p", "name: x\nmatch: '^(a+)+$'\ninterface: contact\n")
    (out,) = measure([("reader", str(path))])
    out.check("returned")
    profile = load_profile(path)
    assert not profile.matches("a" * 40 + "!") and profile.matches("a" * 40)


@pytest.mark.parametrize(
    ("pattern", "raised", "words"),
    [
        ("reader:(", "ConfigError", "--pinloop-target reader:(: not a regular expression"),
        ("reader:^(a+)+$", "TargetError", "matches 0 readers"),
        ("reader:(?P<x>a)(?P=x)", "ConfigError", "not a regular expression"),
    ],
)
def test_a_target_pattern_is_checked_before_any_reader_is_used(
    pattern: str, raised: str, words: str
) -> None:
    """--pinloop-target reader:( printed a 1,044-line traceback (re's parser, through pytest)."""
    (out,) = measure([("target", pattern)])
    out.check(raised)
    assert words in out.text, out.text


def test_a_broken_profile_is_named_not_silently_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One broken, unrelated profile used to make the in-process target lose its own profile
    ("no latency budget for emulated (in-process)"); now it is the error, at its line."""
    from harness import targets as target
    from harness.emulator import load_card_config, parse_profile
    from harness.errors import ConfigError

    folder = tmp_path / "readers"
    folder.mkdir()
    (folder / "broken.yaml").write_text(
        "name: broken\nmatch: 'x'\ninterface: contact\ntiming: {verify_p50_ms: -1}\n"
    )
    monkeypatch.chdir(tmp_path)  # the lab's folder: ./readers
    with pytest.raises(ConfigError) as err:
        target.InProcessTarget(load_card_config(), parse_profile("faithful"))
    assert "broken.yaml:4" in str(err.value)


# Where profiles come from: built-in ones (the package), the lab's (./readers or
# --pinloop-readers DIR), the lab's first.

_ACR = "name: acr39u\nmatch: '^ACS ACR39U'\ninterface: contact\n"


def _sources(profiles: list[ReaderProfile]) -> dict[str, str]:
    return {p.name: p.source for p in profiles}


def test_built_in_profiles_come_from_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./readers
    assert lab_folder() is None
    profiles = load_profiles()
    assert sorted(_sources(profiles)) == ["in-process", "virtual-pcd"]
    assert all(p.builtin and Path(p.source).parent == BUILTIN_DIR for p in profiles)
    assert BUILTIN_DIR.parent == Path(reader_profile.__file__).resolve().parent.parent
    with pytest.raises(UnknownReader, match="no reader profile matches 'ACS ACR39U"):
        select_profile("ACS ACR39U ICC Reader 00 00", profiles)


def test_the_working_directory_readers_folder_is_the_lab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "readers").mkdir()
    _write(tmp_path / "readers", "acr39u", _ACR)
    monkeypatch.chdir(tmp_path)
    assert lab_folder() == tmp_path / "readers"
    profiles = load_profiles()
    assert _sources(profiles)["acr39u"] == str(tmp_path / "readers" / "acr39u.yaml")
    assert select_profile("ACS ACR39U ICC Reader 00 00", profiles).name == "acr39u"
    assert select_profile("Virtual PCD 00 00", profiles).name == "virtual-pcd"  # built-in


def test_a_named_folder_comes_before_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "readers").mkdir()
    _write(tmp_path / "readers", "cwd", "name: cwd\nmatch: '^SCM'\ninterface: contact\n")
    (tmp_path / "lab").mkdir()
    _write(tmp_path / "lab", "acr39u", _ACR)
    monkeypatch.chdir(tmp_path)
    names = sorted(_sources(load_profiles(tmp_path / "lab")))
    assert names == ["acr39u", "in-process", "virtual-pcd"]
    previous = reader_profile.use_lab_folder(tmp_path / "lab")  # --pinloop-readers
    try:
        assert sorted(_sources(load_profiles())) == names
    finally:
        reader_profile.use_lab_folder(previous)
    assert "cwd" in _sources(load_profiles())
    with pytest.raises(ConfigError, match="no such folder of reader profiles"):
        load_profiles(tmp_path / "missing")


def test_the_lab_comes_first_and_replaces_by_name(tmp_path: Path) -> None:
    # a lab profile for one virtual slot (e.g. with a relay): it, not the built-in, for that
    # slot; the built-in for the other slot
    _write(tmp_path, "bench", "name: bench\nmatch: '^Virtual PCD 00 00$'\ninterface: contact\n")
    # the lab's own budgets for the emulated card in-process: replaces the built-in one
    _write(
        tmp_path,
        "slow",
        "name: in-process\nmatch: '^emulated \\(in-process\\)$'\ninterface: virtual\n"
        "timing: {verify_p50_ms: 50}\n",
    )
    profiles = load_profiles(tmp_path)
    assert sorted(_sources(profiles)) == ["bench", "in-process", "virtual-pcd"]
    assert select_profile("Virtual PCD 00 00", profiles).name == "bench"
    assert select_profile("Virtual PCD 00 01", profiles).name == "virtual-pcd"
    mine = select_profile("emulated (in-process)", profiles)
    assert mine.source == str(tmp_path / "slow.yaml") and mine.timing["verify_p50_ms"].limit == 50
    # two lab profiles for one reader: an error, as ever
    _write(tmp_path, "also", "name: also\nmatch: 'PCD 00 00'\ninterface: contact\n")
    with pytest.raises(UnknownReader, match="several reader profiles match 'Virtual PCD 00 00'"):
        select_profile("Virtual PCD 00 00", load_profiles(tmp_path))


def test_pinloop_readers_reaches_the_emulated_targets(tmp_path: Path) -> None:
    """--pinloop-readers is the lab's folder for the whole session: a lab profile that
    replaces the built-in in-process one, with a budget no card meets, fails the latency
    scenario; without the option the built-in one holds."""
    import subprocess
    import sys

    lab = tmp_path / "lab"
    lab.mkdir()
    _write(
        lab,
        "in-process",
        "name: in-process\nmatch: '^emulated \\(in-process\\)$'\ninterface: virtual\n"
        "timing: {verify_p50_ms: 0.000001}\n",
    )
    root = Path(__file__).resolve().parents[1]
    scenario = root / "scenarios" / "verify-latency.pin.yaml"
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(scenario)]
    env = {**os.environ, "PYTHONPATH": str(root)}  # this checkout's harness, from any folder

    def pytest(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*run, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    plain = pytest()
    assert plain.returncode == 0, plain.stdout[-2000:]
    tight = pytest("--pinloop-readers", "lab")
    assert tight.returncode == 1, tight.stdout[-2000:]
    assert "verify_p50_ms (in-process budget)" in tight.stdout
    assert "expected: <= 1e-06 ms" in tight.stdout
