"""Reader profiles (``*.yaml``): which reader a name is, and what it can do.

A profile names a reader model by a regular expression on its PC/SC reader name, and says what
the reader can do, its latency budgets and its power switch. What it can do becomes the
capabilities of a target on that reader (:attr:`ReaderProfile.capabilities`): ``interface:
contact`` or ``contactless`` (``virtual``: neither), ``extended_apdu: true`` (it carries
extended-length APDUs; without it a scenario that sends one is skipped), and a power switch that
cuts in the middle of a command (``mid-command-cut``). A profile gives only such reader
capabilities, never one that lets a scenario do more to the card: whether a card is pinloop's
emulator is the target's to know, not a profile's to claim. Each reader must match exactly one
profile: none is an unknown reader, two are an ambiguity in the lab's configuration; both are
errors, never a guess.

Where profiles come from (:func:`load_profiles`):

- the built-in ones, shipped in the package (``harness/readers/``: the emulated readers);
- the lab's folder: ``--pinloop-readers DIR`` (or ``pinloop readers --profiles DIR``), else
  ``readers/`` in the working directory if there is one, else none.

The lab's profiles come first: a reader's profile is the one lab profile that matches it,
else the one built-in profile that matches it; two matches in the same place are an error.
A lab profile with a built-in profile's ``name`` replaces that one (e.g. other budgets for
``virtual-pcd`` on a slow machine). Two profiles of one name in one folder are an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import re2

from harness.capabilities import INTERFACES, READER, Capability
from harness.config import LoadedYAML, load_validated
from harness.errors import ConfigError, HarnessError
from harness.lab.power import DEFAULT_KIND, SwitchSpec, switch_kind

#: the built-in profiles (package data)
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "readers"

#: the session's lab folder (``--pinloop-readers``), set by the pytest plugin
_session_folder: Path | None = None

_MS = {
    "type": "number",
    "exclusiveMinimum": 0,
    "maximum": 60000,
    "description": "milliseconds, > 0 and at most 60000",
}
_BUDGET = {
    "description": "a limit in ms, or {limit: ms, marginal: ms} (above marginal: passed, marked)",
    "oneOf": [
        _MS,
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["limit", "marginal"],
            "properties": {"limit": _MS, "marginal": _MS},
        },
    ],
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "match", "interface"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "match": {
            "type": "string",
            "minLength": 1,
            "description": "a regular expression matched against the PC/SC reader name",
        },
        "interface": {"enum": list(INTERFACES)},
        "extended_apdu": {
            "type": "boolean",
            "description": "true when the reader carries extended-length APDUs (default false)",
        },
        "timing": {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: _BUDGET for k in ("verify_p50_ms", "verify_p95_ms", "verify_p99_ms")},
        },
        "power_switch": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind"],
            "description": "how the lab cuts this reader's card power (harness/lab/power.py)",
            "properties": {
                "kind": {
                    "type": "string",
                    "minLength": 1,
                    "description": "pcsc-unpower, operator, relay or a kind a lab package "
                    "registers (entry points pinloop.power_switches)",
                },
                "url": {"type": "string", "minLength": 1, "description": "pyserial URL"},
                "channel": {"type": "integer", "minimum": 1, "maximum": 16},
                "off_ms": {"type": "number", "minimum": 0, "maximum": 60000},
                "deadline_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
                "options": {
                    "type": "object",
                    "description": "what a lab's own kind of switch reads",
                },
            },
        },
        "notes": {"type": "string"},
    },
}


class UnknownReader(HarnessError):
    """A reader that no profile (or more than one) matches."""


_RE2 = re2.Options()
_RE2.log_errors = False  # RE2 would print every compile error on stderr itself


class ReaderPattern:
    """A regular expression on PC/SC reader names, matched anywhere in the name (as
    ``re.search``) by RE2, in time linear in the name whatever the pattern: Python's ``re``
    backtracks, and ``^(a+)+$`` took minutes. RE2 takes Perl's syntax except backreferences
    and lookaround, repetition counts up to 1000; ``\\w`` and ``\\d`` are ASCII."""

    def __init__(self, source: str) -> None:
        """Raises ValueError, saying why, for a pattern RE2 does not take."""
        try:
            self._regexp = re2.compile(source, _RE2)
        except re2.error as exc:
            why = exc.args[0] if exc.args else exc
            text = why.decode("utf-8", "replace") if isinstance(why, bytes) else str(why)
            raise ValueError(text) from None
        self.source = source

    def search(self, name: str) -> bool:
        return self._regexp.search(name) is not None

    def matching(self, names: Iterable[str]) -> list[str]:
        """The names this pattern matches, in order."""
        return [n for n in names if self.search(n)]

    def __repr__(self) -> str:
        return f"ReaderPattern({self.source!r})"


def reader_pattern(source: str, origin: str) -> ReaderPattern:
    """``source`` compiled; a :class:`ConfigError` naming ``origin`` (where the pattern was
    written, e.g. ``--pinloop-target reader:``) when it is not a regular expression."""
    try:
        return ReaderPattern(source)
    except ValueError as exc:
        raise ConfigError(
            f"{origin}{source}: not a regular expression: {exc}",
            expected="a regular expression on the PC/SC reader name (RE2 syntax)",
        ) from None


@dataclass(frozen=True)
class Budget:
    """A latency limit (ms); above ``marginal`` a result passes but is marked marginal."""

    limit: float
    marginal: float | None = None

    def judge(self, ms: float) -> str:
        if ms > self.limit:
            return "over"
        if self.marginal is not None and ms > self.marginal:
            return "marginal"
        return "within"


@dataclass(frozen=True)
class ReaderProfile:
    name: str
    pattern: ReaderPattern
    interface: str  # contact | contactless | virtual
    extended_apdu: bool
    timing: dict[str, Budget]
    source: str
    power_switch: SwitchSpec | None = None
    builtin: bool = False  # shipped in the package; a lab profile comes first

    def matches(self, reader: str) -> bool:
        return self.pattern.search(reader)

    @property
    def capabilities(self) -> frozenset[Capability]:
        """What a target on this reader can do because of the reader (only :data:`READER`
        capabilities): its interface, extended APDUs, a switch that cuts mid-command."""
        found: set[Capability] = set()
        interface = INTERFACES.get(self.interface)
        if interface is not None:
            found.add(interface)
        if self.extended_apdu:
            found.add(Capability.EXTENDED_APDU)
        if switch_kind(self.power_switch.kind if self.power_switch else DEFAULT_KIND).mid_command:
            found.add(Capability.MID_COMMAND_CUT)
        return frozenset(found) & READER


def load_profile(path: Path) -> ReaderProfile:
    doc = load_validated(path, SCHEMA)
    data = doc.data
    try:
        pattern = ReaderPattern(str(data["match"]))
    except ValueError as exc:
        raise doc.error(
            f"match: not a regular expression: {exc}",
            ["match"],
            expected="a regular expression on the PC/SC reader name (RE2 syntax)",
        ) from None
    timing: dict[str, Budget] = {}
    for key, value in (data.get("timing") or {}).items():
        if isinstance(value, dict):
            if value["marginal"] >= value["limit"]:
                raise doc.error(
                    f"timing.{key}: marginal must be below limit",
                    ["timing", key, "marginal"],
                    expected=f"marginal < {value['limit']}",
                )
            timing[str(key)] = Budget(float(value["limit"]), float(value["marginal"]))
        else:
            timing[str(key)] = Budget(float(value))
    switch = _switch(doc, data["power_switch"], path) if "power_switch" in data else None
    return ReaderProfile(
        name=str(data["name"]),
        pattern=pattern,
        interface=str(data["interface"]),
        extended_apdu=bool(data.get("extended_apdu", False)),
        timing=timing,
        source=str(path),
        power_switch=switch,
    )


def _switch(doc: LoadedYAML, ps: dict[str, Any], path: Path) -> SwitchSpec:
    """``power_switch:``: a registered kind (:data:`harness.lab.power.SWITCHES`) with the keys
    that kind needs."""
    kind = str(ps["kind"])
    try:
        found = switch_kind(kind)
    except ConfigError as exc:
        raise doc.error(
            f"power_switch.kind: {exc.message}", ["power_switch", "kind"], expected=exc.expected
        ) from None
    for key, example in found.needs.items():
        if key not in ps:
            raise doc.error(
                f"power_switch: a {kind} needs {key}", ["power_switch"], expected=example
            )
    return SwitchSpec(
        kind=kind,
        url=str(ps.get("url", "")),
        channel=int(ps.get("channel", 1)),
        off_ms=float(ps.get("off_ms", 500.0)),
        deadline_s=float(ps.get("deadline_s", 60.0 if kind == "operator" else 1.0)),
        source=str(path),
        options=dict(ps.get("options") or {}),
    )


def use_lab_folder(folder: Path | None) -> Path | None:
    """Makes ``folder`` the lab's folder for this process (the pytest plugin's
    ``--pinloop-readers``: every target of the session, emulated ones too), or with ``None``
    the working directory's ``readers/`` again. Returns the folder it replaces."""
    global _session_folder
    previous, _session_folder = _session_folder, folder
    return previous


def lab_folder(directory: Path | None = None) -> Path | None:
    """The lab's profile folder: ``directory``, else the session's (``--pinloop-readers``),
    else ``./readers`` if it exists, else ``None``. A folder that was named but does not
    exist is a :class:`ConfigError`, not an empty lab."""
    folder = directory if directory is not None else _session_folder
    if folder is not None:
        if not folder.is_dir():
            raise ConfigError(
                f"{folder}: no such folder of reader profiles",
                expected="a folder of reader profiles (*.yaml)",
            )
        return folder
    here = Path.cwd() / "readers"
    return here if here.is_dir() else None


def load_folder(directory: Path, *, builtin: bool = False) -> list[ReaderProfile]:
    """The profiles of one folder; two of one name are an error."""
    profiles = [replace(load_profile(p), builtin=builtin) for p in sorted(directory.glob("*.yaml"))]
    names: dict[str, str] = {}
    for p in profiles:
        if p.name in names:
            raise ConfigError(f"profile name {p.name!r} is also used by {names[p.name]}")
        names[p.name] = p.source
    return profiles


def load_profiles(directory: Path | None = None) -> list[ReaderProfile]:
    """The built-in profiles with the lab's (:func:`lab_folder` of ``directory``) added; a
    lab profile replaces the built-in one of its name."""
    profiles = {p.name: p for p in load_folder(BUILTIN_DIR, builtin=True)}
    folder = lab_folder(directory)
    if folder is not None and folder.resolve() != BUILTIN_DIR:
        for p in load_folder(folder):
            profiles[p.name] = p
    return list(profiles.values())


def select_profile(reader: str, profiles: list[ReaderProfile]) -> ReaderProfile:
    """The one lab profile matching ``reader``, else the one built-in profile matching it;
    :class:`UnknownReader` for none or several."""
    found = [p for p in profiles if not p.builtin and p.matches(reader)] or [
        p for p in profiles if p.builtin and p.matches(reader)
    ]
    if len(found) == 1:
        return found[0]
    if not found:
        raise UnknownReader(
            f"no reader profile matches {reader!r}; add one to the lab's readers/ "
            f"(known: {', '.join(p.name for p in profiles) or 'none'})"
        )
    which = ", ".join(f"{p.name} ({p.source})" for p in found)
    raise UnknownReader(f"several reader profiles match {reader!r}: {which}")
