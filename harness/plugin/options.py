"""The plugin's options, ini values and markers, and whether this run writes Allure results."""

from __future__ import annotations

from types import ModuleType

import pytest

DEFAULT_PATTERN = r".+\.pin\.ya?ml$"
MARKERS = {
    "destructive": "may block or change a PIN of the card",
    "emulator_only": "runs on the emulated card only",
    "needs_reinit": "uses the emulator's re-initialisation test mechanism",
    "pinloop_target(name)": "the target a scenario item runs against",
}


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from harness.plugin import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("pinloop", "pinloop: My Number card reader scenarios")
    g.addoption(
        "--pinloop-target",
        action="append",
        default=[],
        metavar="T",
        help="inprocess (default), pcscd, reader:NAME-REGEX, or a kind a lab package "
        "registers (entry points pinloop.targets); repeatable",
    )
    g.addoption("--pinloop-defect", metavar="PROFILE", help="defect profile of the emulated card")
    g.addoption(
        "--pinloop-card",
        default=None,
        metavar="CONFIG",
        help="card config (YAML) of the emulated card (default: the emulator's own)",
    )
    g.addoption(
        "--pinloop-card-profile",
        default="jpki",
        metavar="NAME",
        help="the kind of card the run is for: jpki (default) or module:ATTRIBUTE; or the "
        "lab's card profile of its test card, a *.card.yaml file",
    )
    g.addoption(
        "--pinloop-destructive-reader",
        action="append",
        default=[],
        metavar="NAME",
        help="allow destructive scenarios on this real reader (exact name)",
    )
    g.addoption("--pinloop-reveal", action="store_true", help="UNSAFE: show PINs in traces")
    g.addoption(
        "--pinloop-readers",
        metavar="DIR",
        help="the lab's reader profiles, added to the built-in ones (default: ./readers)",
    )
    g.addoption(
        "--pinloop-reports",
        metavar="DIR",
        help="write the per-reader summary (summary.json, summary.html) and the JSON record "
        "per reader (records/) here",
    )
    parser.addini("pinloop_file_pattern", "regex of scenario file names", default=DEFAULT_PATTERN)


def allure_output(config: pytest.Config) -> ModuleType | None:
    """The Allure output when this run writes Allure results (``--alluredir``); otherwise
    None, and allure is not even imported."""
    if not config.getoption("allure_report_dir", None):
        return None
    from harness.report import allure_report

    return allure_report
