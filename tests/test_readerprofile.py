"""Reader profiles: schema errors with file:line, and exactly-one-match selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.readerprofile import UnknownReader, load_profile, load_profiles, select_profile
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
    from harness.readerprofile import Budget

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
    import shutil

    from harness import readerprofile, target
    from harness.emulator import load_card_config, parse_profile
    from harness.errors import ConfigError

    folder = tmp_path / "readers"
    shutil.copytree(readerprofile.READERS_DIR, folder)
    (folder / "broken.yaml").write_text(
        "name: broken\nmatch: 'x'\ninterface: contact\ntiming: {verify_p50_ms: -1}\n"
    )
    monkeypatch.setattr(target, "load_profiles", lambda: readerprofile.load_profiles(folder))
    with pytest.raises(ConfigError) as err:
        target.InProcessTarget(load_card_config(), parse_profile("faithful"))
    assert "broken.yaml:4" in str(err.value)
