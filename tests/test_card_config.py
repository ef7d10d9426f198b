"""Card configs: defaults, derived codes, and every mistake reported as file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.emulator.config import DEFAULT_CONFIG_PATH, load_card_config, wareki_yymmdd
from harness.errors import ConfigError
from tests.bounded import Outcome, laughs, measure


def test_default_card() -> None:
    cfg = load_card_config(DEFAULT_CONFIG_PATH)
    assert cfg.name == "pinloop-default" and cfg.model == "jpki-contact"
    assert cfg.code_a == "123456789018"
    assert cfg.code_b == "55021720352285"  # 昭和55/02/17, 2035, 2285
    assert cfg.birth_key == "550217"
    assert set(cfg.secrets()) >= {"jpki-auth", "kenkaku-birth"}


@pytest.mark.parametrize(
    ("date", "wareki"),
    [
        ("19261225", "011225"),
        ("19890107", "640107"),
        ("19890108", "010108"),
        ("20190430", "310430"),
        ("20190501", "010501"),
        ("20091029", "211029"),
    ],
)
def test_wareki(date: str, wareki: str) -> None:
    assert wareki_yymmdd(date) == wareki


def test_partial_config_takes_defaults(tmp_path: Path) -> None:
    p = tmp_path / "card.yaml"
    p.write_text('name: lab-card-7\npins:\n  jpki-auth: "9999"\n')
    cfg = load_card_config(p)
    assert cfg.pins["jpki-auth"] == "9999" and cfg.pins["jpki-sign"] == "PINLOOP1"
    assert cfg.verification_code_tries == 10


BAD = [
    ("name: x\nmodel: jpki-contact\nbogus: 1\n", 3, "Additional properties"),
    ('name: x\npins:\n  jpki-auth: "12345"\n', 3, "4 digits"),
    ('name: x\npins:\n  jpki-sign: "lower1"\n', 3, "A-Z"),
    ("name: x\npins:\n  jpki-auth: 1234\n", 3, "string"),
    ("name: x\nmodel: jpki-pink\n", 2, "jpki-contact"),
    ("model: jpki-contact\n", 1, "'name' is a required property"),
    ("name: x\nlimits:\n  verification-code: 99\n", 3, "1-15"),
    ('name: x\nidentity:\n  birth_date: "19800231"\n', 3, "calendar date"),
    ('name: x\nidentity:\n  my_number: "12345"\n', 3, "12 digits"),
    ('name: x\nreset_codes:\n  window: "SHORTCODE"\n  kiosk: "LONGER-CODE"\n', 4, "same length"),
    ('name: x\nreset_codes:\n  window: "SAMECODE"\n  kiosk: "SAMECODE"\n', 4, "differ"),
    ("name: x\nname: y\n", 2, "duplicate"),
    ("name: [x\n", 2, "YAML syntax"),
    ("name: x\n  pins: 1\n", 2, "YAML syntax"),
    ("- just\n- a list\n", 1, "object"),
]


@pytest.mark.parametrize(("text", "line", "words"), BAD)
def test_mistakes_are_reported_with_file_and_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    p = tmp_path / "card.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_card_config(p)
    err = info.value
    assert err.location is not None and err.location.path == str(p)
    assert err.location.line == line, err.render()
    rendered = err.render()
    assert str(p) + f":{line}" in rendered
    assert words.lower() in rendered.lower(), rendered
    assert "Traceback" not in rendered and len(rendered.splitlines()) <= 8


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_card_config(tmp_path / "nope.yaml")


#: small inputs that used to hang or explode: (text, line, words); each is measured in a
#: bounded child process (tests/bounded.py): refused within 2 s and 200 MB
BOUNDED = [
    (
        "name: x\n" + laughs().replace("x-i: &i", "identity:\n  name: &i"),
        6,
        "aliases repeat more than",
    ),
    ("name: x\nidentity: &a\n  name: *a\n", 3, "recursive"),
    ("name: x\nlimits:\n  verification-code: 3.0\n", 3, "3.0 is not of type 'integer'"),
    ("name: x\nlimits:\n  verification-code: true\n", 3, "True is not of type 'integer'"),
    # cryptography counts a CommonName's 64 in UTF-8 bytes: 17 kanji are 51, one too many
    ('name: x\nidentity:\n  name: "' + "試" * 17 + '"\n', 3, "identity.name: 51 UTF-8 bytes"),
    ('name: x\nidentity:\n  name: "' + "試" * 60 + '"\n', 3, "is too long"),
    ("name: " + "n" * 45 + "\n", 1, "1-44 letters"),
    # the default holder (試験 花子, 13 bytes) does not fit after a card name of 40
    ("name: " + "n" * 40 + "\n", 1, "at most 11 UTF-8 bytes"),
]


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Outcome]]:
    tmp = tmp_path_factory.mktemp("bounded")
    paths = []
    for i, (text, _, _) in enumerate(BOUNDED):
        paths.append(tmp / f"card{i}.yaml")
        paths[-1].write_text(text, encoding="utf-8")
    return list(zip(paths, measure([("card", str(p)) for p in paths]), strict=True))


@pytest.mark.parametrize("case", range(len(BOUNDED)))
def test_small_inputs_that_used_to_explode(case: int, bounded: list[tuple[Path, Outcome]]) -> None:
    _, line, words = BOUNDED[case]
    path, out = bounded[case]
    out.check_at(path, line, words)


@pytest.mark.parametrize(
    ("card", "holder"),
    [
        ("x", "試" * 16),
        ("n" * 44, "a" * 7),
        ("x", "𠮷" * 12 + "ab"),
        ("pinloop-default", "試" * 12),
    ],
)
def test_the_longest_names_the_config_takes_make_certificates(
    tmp_path: Path, card: str, holder: str
) -> None:
    """The config's limits are the certificates' own: what it takes, personalisation builds."""
    from harness.emulator import personalise

    p = tmp_path / "card.yaml"
    p.write_text(f'name: {card}\nidentity:\n  name: "{holder}"\n', encoding="utf-8")
    state = personalise(load_card_config(p))
    assert state.identity["name"] == holder
