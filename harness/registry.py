"""Registries a lab extends without editing pinloop: targets and power switches.

A registry holds named things of one kind: pinloop's built-in ones, those a process adds with
:meth:`Registry.register`, and those an installed package declares under the registry's
entry-point group (``importlib.metadata``), e.g. in the lab package's ``pyproject.toml``::

    [project.entry-points."pinloop.targets"]
    bench = "lab_bench.targets:BENCH"          # a harness.targets.TargetKind

    [project.entry-points."pinloop.power_switches"]
    usb-hub = "lab_bench.power:USB_HUB"        # a harness.lab.power.SwitchKind

An entry point is loaded when its name is first asked for. A name is taken once: an entry
point or a registration with a built-in's name is an error (a lab package cannot replace the
real-reader target, and with it the guard), and so is an entry point that cannot be loaded or
that is not of the registry's kind. An unknown name is an error that lists the known ones.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Generic, TypeVar

from harness.errors import ConfigError

T = TypeVar("T")


class UnknownName(LookupError):
    """A name no registry entry has; the message lists the known ones."""

    def __init__(self, what: str, name: str, known: list[str]) -> None:
        self.name, self.known = name, known
        super().__init__(f"unknown {what} {name!r}; known: {', '.join(known) or 'none'}")


def of_type(cls: type[T], what: str) -> Callable[[str, object], T]:
    """The check of a registry whose entries are ``cls`` instances (a loaded entry point that
    gives anything else is a ConfigError naming what it gave)."""

    def check(name: str, obj: object) -> T:
        if not isinstance(obj, cls):
            raise ConfigError(
                f"{what} {name!r}: its entry point gives a {type(obj).__name__}, "
                f"not a {cls.__module__}.{cls.__qualname__}"
            )
        return obj

    return check


class Registry(Generic[T]):
    """Named entries of one kind, from pinloop, this process and the entry-point ``group``."""

    def __init__(self, group: str, what: str, check: Callable[[str, object], T]) -> None:
        """``what``: what an entry is, for messages (``target``, ``power switch``);
        ``check(name, obj)``: ``obj`` as an entry (a loaded entry point), or a ConfigError."""
        self.group, self.what, self._check = group, what, check
        self._built_in: dict[str, T] = {}
        self._added: dict[str, T] = {}
        self._points: dict[str, importlib.metadata.EntryPoint] | None = None
        self._loaded: dict[str, T] = {}

    def built_in(self, name: str, entry: T) -> T:
        """One of pinloop's own entries."""
        self._built_in[name] = entry
        return entry

    def register(self, name: str, entry: T) -> T:
        """Add an entry in this process (a name taken already is an error)."""
        if name in self._built_in or (name in self._added and self._added[name] is not entry):
            raise ValueError(f"{self.what} {name!r} is registered already")
        self._added[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry :meth:`register` added (tests)."""
        if name in self._built_in:
            raise ValueError(f"{name!r} is a built-in {self.what}")
        self._added.pop(name, None)

    def refresh(self) -> None:
        """Read the installed packages' entry points again (after installing one)."""
        self._points = None
        self._loaded.clear()

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        if self._points is None:
            points: dict[str, importlib.metadata.EntryPoint] = {}
            for point in importlib.metadata.entry_points(group=self.group):
                if point.name in self._built_in:
                    raise ConfigError(
                        f"entry point {self.group} {point.name} = {point.value}: "
                        f"{point.name!r} is pinloop's built-in {self.what}; choose another name"
                    )
                other = points.get(point.name)
                if other is not None and other.value != point.value:
                    raise ConfigError(
                        f"entry point {self.group} {point.name}: two packages give it "
                        f"({other.value} and {point.value}); uninstall one"
                    )
                points[point.name] = point
            self._points = points
        return self._points

    def names(self) -> list[str]:
        """Every known name: the built-in ones first, then the others in order."""
        others = sorted({*self._added, *self._entry_points()} - set(self._built_in))
        return [*self._built_in, *others]

    def get(self, name: str) -> T:
        """The entry of ``name``; :class:`UnknownName` (listing the known ones) if none."""
        if name in self._built_in:
            return self._built_in[name]
        if name in self._added:
            return self._added[name]
        if name in self._loaded:
            return self._loaded[name]
        point = self._entry_points().get(name)
        if point is None:
            raise UnknownName(self.what, name, self.names())
        try:
            obj = point.load()
        except Exception as exc:  # whatever the lab's module raises on import
            raise ConfigError(
                f"entry point {self.group} {name} = {point.value} cannot be loaded: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        entry = self._loaded[name] = self._check(name, obj)
        return entry
