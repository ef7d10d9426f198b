"""The ``pinloop`` command.

Exit status: 0 success, 1 the card misbehaved (a device defect), 2 bad input or a lab fault.
Errors print as one or a few lines, never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness import __version__
from harness.apdu import render_raw_command, render_response
from harness.apdu import sw as SW
from harness.apdu.model import ResponseAPDU, from_hex, to_hex
from harness.cards.jpki.layout import PINS
from harness.emulator import EmulatedCard, FileStore, load_card_config, parse_profile, personalise
from harness.emulator.config import DEFAULT_CONFIG_PATH
from harness.emulator.models import MODELS
from harness.errors import CardStateError, DeviceDefect, HarnessError


def _state_errors(cmd: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command on card state files: an OSError (read-only or full disk, a directory or a
    FIFO as the state) ends it as a one-line error, like any CardStateError."""

    @functools.wraps(cmd)
    def run(args: argparse.Namespace) -> int:
        try:
            return cmd(args)
        except OSError as exc:
            where = exc.filename if exc.filename is not None else getattr(args, "state", None)
            why = exc.strerror or str(exc)
            raise CardStateError(f"{where}: {why}" if where else why) from None

    return run


def _open_card(state: str, defect: str | None) -> EmulatedCard:
    profile = parse_profile(defect or "faithful")
    card = EmulatedCard(FileStore.open(state), defects=profile)
    card.power_on()
    return card


@_state_errors
def cmd_card_new(args: argparse.Namespace) -> int:
    config = load_card_config(args.config)
    state = personalise(config)
    if args.model:
        state.model = args.model
    FileStore.create(args.state, state, overwrite=args.force)
    print(f"created card {state.name!r} ({state.model}, ATR {to_hex(MODELS[state.model].atr)})")
    print(f"state: {args.state} (+ .journal); PIN values are in it: keep it private")
    return 0


@_state_errors
def cmd_card_show(args: argparse.Namespace) -> int:
    store = FileStore.open(args.state, readonly=True)  # writes nothing: read-only media work
    try:
        st = store.state
        print(f"card {st.name!r}  model {st.model}  ATR {to_hex(MODELS[st.model].atr)}")
        print(f"{'PIN id':15} {'app':8} {'EF':5} {'tries':>7}  state    value")
        for spec in PINS:
            pin = st.pins[spec.id]
            status = "BLOCKED" if pin.blocked else "ok"
            value = pin.value.decode("ascii", "replace") if args.reveal else "*" * len(pin.value)
            print(
                f"{spec.id:15} {spec.app:8} {spec.fid:04X}  {pin.remaining:>3}/{pin.max_tries:<3}"
                f"  {status:8} {value}"
            )
    finally:
        store.close()
    return 0


@_state_errors
def cmd_card_apdu(args: argparse.Namespace) -> int:
    """Send APDUs (hex) to a card; the word POWER power-cycles it in between."""
    card = _open_card(args.state, args.defect)
    try:
        for item in args.apdus:
            if item.upper() == "POWER":
                card.power_off()
                print(f"-- power cycle; ATR {to_hex(card.power_on())}")
                continue
            raw = from_hex(item)
            print(f">> {render_raw_command(raw, reveal=args.reveal)}")
            resp = ResponseAPDU.parse(card.transmit(raw))
            print(f"<< {render_response(resp)}   {SW.describe(resp.sw)}")
    finally:
        card.store.close()
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    from harness.smoke import run_smoke

    result = run_smoke(
        load_card_config(args.config), defect=args.defect, via=args.via, reveal=args.reveal
    )
    print(f"smoke: {result.passed} passed, {len(result.failures)} failed")
    if result.failures:
        more = len(result.failures) - 1
        raise DeviceDefect(result.failures[0] + (f" (and {more} more)" if more else ""))
    return 0


def _serve_until_signal(servers: list[Any], on_ready: Callable[[], None]) -> None:
    """Run each EmulatorServer in a thread until SIGTERM/SIGINT, then stop them cleanly."""
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threads = [threading.Thread(target=s.serve_forever, name=s.url, daemon=True) for s in servers]
    for t in threads:
        t.start()
    on_ready()
    stop.wait()
    for s in servers:
        s.stop()
    for t in threads:
        t.join(2)


class UsageError(HarnessError):
    """A command's arguments are wrong (found before it changes anything)."""


def _regular_state(state: str) -> None:
    """A card state that exists must be a regular file: reading a FIFO blocks for ever."""
    with contextlib.suppress(FileNotFoundError):
        mode = os.stat(state).st_mode
        if not stat.S_ISREG(mode):
            from harness.emulator.state import _kind

            raise UsageError(f"{state}: {_kind(mode)}, not a card state file")


def _servers(
    specs: list[str], urls: list[str], model: str | None, defect: str | None, quickack: bool = True
) -> list[Any]:
    from harness.links.vicc import EmulatorServer

    profile = parse_profile(defect or "faithful")
    servers: list[EmulatorServer] = []
    stores: list[FileStore] = []
    try:
        for spec, default_url in zip(specs, urls, strict=True):
            state, _, url = spec.partition("@")
            _regular_state(state)
            stores.append(FileStore.open(state))
            card = EmulatedCard(stores[-1], model=model, defects=profile)
            servers.append(EmulatorServer(card, url or default_url, quickack=quickack))
    except HarnessError:
        for store in stores:
            store.close()
        raise
    return servers


def _describe(servers: list[Any]) -> list[dict[str, str]]:
    return [
        {
            "state": s.card.store.state.name,
            "url": s.url,
            "instance": s.instance_id.hex(),
            "atr": s.card.atr.hex().upper(),
            "defects": s.card.defects.describe(),
        }
        for s in servers
    ]


@_state_errors
def cmd_emulate(args: argparse.Namespace) -> int:
    """Serve emulated cards on links until SIGTERM/SIGINT; one ``STATE[@URL]`` per card."""
    import json
    import os

    from harness.links.vpcd import first_port

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    urls = [f"socket://127.0.0.1:{first_port() + i}" for i in range(len(args.cards))]
    servers = _servers(args.cards, urls, args.model, args.defect, not args.no_quickack)

    def ready() -> None:
        info = _describe(servers)
        if args.ready_file:  # whole or not at all: a reader polls for it
            tmp = Path(args.ready_file + ".tmp")
            try:
                tmp.write_text(json.dumps(info, indent=1))
            except OSError as exc:  # named as the file the user gave
                raise OSError(exc.errno, exc.strerror, args.ready_file) from None
            os.replace(tmp, args.ready_file)
        for r in info:
            print(
                f"serving {r['state']!r} on {r['url']} (instance {r['instance']}, "
                f"defects {r['defects']})",
                flush=True,
            )

    try:
        _serve_until_signal(servers, ready)
    finally:
        for s in servers:
            s.card.store.close()
    print("stopped", flush=True)
    return 0


#: the run results of the project (./run suite): card states, PINs in hex, never go there
REPORTS_DIR = Path(__file__).resolve().parent.parent / "reports"


def _outside_reports(path: Path, what: str) -> Path:
    """``path`` made absolute; a :class:`UsageError` when it is inside the project's
    ``reports/`` (or the current folder's), which a run publishes."""
    path = path.expanduser().resolve()
    for reports in {REPORTS_DIR, (Path.cwd() / "reports").resolve()}:
        if path.is_relative_to(reports):
            raise UsageError(
                f"{what} {path} is inside {reports}: card states hold PINs and never go "
                "into reports/; choose a folder outside it"
            )
    return path


def cmd_lab(args: argparse.Namespace) -> int:
    """pcscd with virtual readers and emulated cards in them, until SIGTERM/SIGINT."""
    import tempfile

    from harness.lab.pcscd import MAX_SLOTS, Pcscd

    # every argument is checked before anything is written
    parse_profile(args.defect or "faithful")
    slots = max(args.slots, len(args.cards))
    if args.slots < 1 or slots > MAX_SLOTS:
        raise UsageError(
            f"--slots {args.slots} with {len(args.cards)} card(s): between 1 and {MAX_SLOTS} "
            "virtual readers"
        )
    states = [str(_outside_reports(Path(c), "card state")) for c in args.cards]
    for state in states:
        if not Path(state).exists():
            raise UsageError(f"no card state {state}; make one with: pinloop card new {state}")
        _regular_state(state)
    config = load_card_config(args.config) if len(states) < slots else None
    # pcscd does chdir("/") before it reads its --config folder: the workdir is absolute
    if args.workdir:
        workdir = _outside_reports(Path(args.workdir), "--workdir")
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="pinloop-lab-"))
    for i in range(len(states), slots):
        path = workdir / f"card{i}.json"
        if not path.exists():
            assert config is not None
            FileStore.create(path, personalise(config))
        states.append(str(path))
    lab = Pcscd(workdir / "pcscd.log", slots=slots)
    lab.start()
    try:
        servers = _servers(states, [s.url for s in lab.slots[: len(states)]], None, args.defect)

        def ready() -> None:
            print(f"pcscd pid {lab.pid}, log {lab.log_path}", flush=True)
            for slot, r in zip(lab.slots, _describe(servers), strict=False):
                print(
                    f"{slot.reader!r}: card {r['state']!r} (instance {r['instance']}, "
                    f"defects {r['defects']})",
                    flush=True,
                )
            print("Ctrl-C or SIGTERM stops the lab", flush=True)

        try:
            _serve_until_signal(servers, ready)
        finally:
            for s in servers:
                s.card.store.close()
    finally:
        lab.stop()
    print("lab stopped", flush=True)
    return 0


def cmd_readers(args: argparse.Namespace) -> int:
    from harness.capabilities import names
    from harness.targets.reader_profile import (
        BUILTIN_DIR,
        UnknownReader,
        lab_folder,
        load_profiles,
        select_profile,
    )
    from harness.transport.pcsc import reader_states

    folder = lab_folder(Path(args.profiles) if args.profiles else None)
    profiles = load_profiles(folder)
    print(f"profiles: built-in {BUILTIN_DIR}; lab {folder or 'none (no ./readers)'}")
    models = {m.atr: m.name for m in MODELS.values()}
    states = reader_states()
    if not states:
        print("no readers")
    for reader, present, atr in states:
        try:
            found = select_profile(reader, profiles)
            # what the profile gives a real-reader target on it (harness.capabilities)
            can = names(found.capabilities) or "(no reader capabilities)"
            profile = f"{found.name}\n    can:     {can}"
        except UnknownReader as exc:
            profile = f"?? {exc}"
        card = (
            f"{to_hex(atr)} ({models.get(atr, 'not a known My Number ATR')})"
            if present
            else "no card"
        )
        print(f"{reader}\n    card:    {card}\n    profile: {profile}")
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    """Talk to a power relay by hand (checking a lab's wiring), or run the simulated one."""
    from harness.lab.power import SerialRelay

    if args.url == "simulate":
        import time

        from harness.lab.relay_sim import SimulatedRelay

        sim = SimulatedRelay()
        print(f"simulated relay on {sim.path} (Ctrl-C stops it)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
        finally:
            sim.close()
    relay = SerialRelay(args.url, args.channel, deadline=args.deadline)
    try:
        print(relay.describe())
        if args.action == "off":
            relay.cut()
        elif args.action == "on":
            relay.restore()
        if args.action != "ping":
            print(f"channel {args.channel}: {'on' if relay.state() else 'off'}")
    finally:
        relay.close()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report.static import build

    reports = Path(args.reports)
    index = build(
        reports / "allure-results", reports / "allure-report", history=reports / "history.jsonl"
    )
    print(f"report: {index}")
    summary = reports / "summary.html"
    if summary.exists():
        print(f"per-reader summary: {summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pinloop", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument("--version", action="version", version=f"pinloop {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    card = sub.add_parser("card", help="create, inspect and talk to an emulated card")
    csub = card.add_subparsers(dest="card_command", required=True)
    new = csub.add_parser("new", help="personalise a new emulated card into a state file")
    new.add_argument("state", help="state file to create")
    new.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="card config (YAML)")
    new.add_argument("--model", choices=sorted(MODELS), help="override the config's model")
    new.add_argument("--force", action="store_true", help="replace an existing card")
    new.set_defaults(func=cmd_card_new)
    show = csub.add_parser("show", help="PIN objects and their counters")
    show.add_argument("state")
    show.add_argument("--reveal", action="store_true", help="UNSAFE: print PIN values")
    show.set_defaults(func=cmd_card_show)
    apdu = csub.add_parser("apdu", help="send APDUs in hex; POWER power-cycles the card")
    apdu.add_argument("state")
    apdu.add_argument("apdus", nargs="+", metavar="HEX|POWER")
    apdu.add_argument("--defect", help="defect profile, e.g. no-decrement")
    apdu.add_argument("--reveal", action="store_true", help="UNSAFE: do not mask PINs")
    apdu.set_defaults(func=cmd_card_apdu)

    emu = sub.add_parser("emulate", help="serve emulated cards on vpcd links (pcscd, serial)")
    emu.add_argument(
        "cards",
        nargs="+",
        metavar="STATE[@URL]",
        help="card state file, optionally @ a pyserial URL (default: vpcd slot "
        "n on socket://127.0.0.1:3596(3+n))",
    )
    emu.add_argument("--model", choices=sorted(MODELS), help="override the card's model")
    emu.add_argument("--defect", help="defect profile for every card served")
    emu.add_argument("--ready-file", help="write the instance ids (JSON) here once serving")
    emu.add_argument(
        "--no-quickack",
        action="store_true",
        help="measurement only: leave TCP_QUICKACK off (44 ms per APDU on vpcd)",
    )
    emu.add_argument("-v", "--verbose", action="store_true")
    emu.set_defaults(func=cmd_emulate)

    lab = sub.add_parser("lab", help="start pcscd with emulated cards in virtual readers")
    lab.add_argument("cards", nargs="*", metavar="STATE", help="card states (default: new ones)")
    lab.add_argument("--slots", type=int, default=2, help="virtual readers (default 2)")
    lab.add_argument(
        "--workdir",
        help="pcscd log and new card states (default: a new temporary folder; never reports/)",
    )
    lab.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="config of new cards")
    lab.add_argument("--defect", help="defect profile for every card")
    lab.set_defaults(func=cmd_lab)

    readers = sub.add_parser("readers", help="PC/SC readers, their cards and profiles")
    readers.add_argument(
        "--profiles",
        metavar="DIR",
        help="the lab's reader profiles, added to the built-in ones (default: ./readers)",
    )
    readers.set_defaults(func=cmd_readers)

    relay = sub.add_parser(
        "relay", help="switch a power relay by hand (lab wiring check), or simulate one"
    )
    relay.add_argument("url", help="pyserial URL of the relay, or 'simulate' to run one on a pty")
    relay.add_argument("action", nargs="?", default="state", choices=["ping", "state", "on", "off"])
    relay.add_argument("--channel", type=int, default=1)
    relay.add_argument("--deadline", type=float, default=1.0, help="seconds per answer")
    relay.set_defaults(func=cmd_relay)

    report = sub.add_parser("report", help="turn reports/ into a static Allure 3 report")
    report.add_argument("--reports", default="reports", help="the reports folder of a run")
    report.set_defaults(func=cmd_report)

    smoke = sub.add_parser("smoke", help="a short PIN sequence against an in-process card")
    smoke.add_argument("--config", default=str(DEFAULT_CONFIG_PATH))
    smoke.add_argument("--defect", help="defect profile for the emulated card")
    smoke.add_argument(
        "--via",
        choices=["in-process", "pcscd"],
        default="in-process",
        help="pcscd: through pcscd + vpcd + pyscard (starts pcscd; needs root)",
    )
    smoke.add_argument("--reveal", action="store_true", help="UNSAFE: do not mask PINs")
    smoke.set_defaults(func=cmd_smoke)
    return p


def _os_error(exc: OSError, command: str) -> str:
    """``<what>: <strerror>``: the file(s) the call was about, else the command."""
    if exc.filename is None:
        what = command
    elif exc.filename2 is None:
        what = str(exc.filename)
    else:
        what = f"{exc.filename} -> {exc.filename2}"
    return f"{what}: {exc.strerror or exc}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DeviceDefect as exc:
        print(f"pinloop: device defect: {exc}", file=sys.stderr)
        return 1
    except HarnessError as exc:
        print(f"pinloop: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only or full disk, a folder where a file was meant, …
        print(f"pinloop: {_os_error(exc, args.command)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
