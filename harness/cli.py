"""The ``pinloop`` command.

Exit status: 0 success, 1 the card misbehaved (a device defect), 2 bad input or a lab fault.
Errors print as one or a few lines, never as a traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness import __version__
from harness.apdu import commands as C
from harness.apdu import render_command, render_raw_command, render_response
from harness.apdu import sw as SW
from harness.apdu.model import CommandAPDU, ResponseAPDU, from_hex, to_hex
from harness.emulator import EmulatedCard, FileStore, load_card_config, parse_profile, personalise
from harness.emulator.config import DEFAULT_CONFIG_PATH
from harness.emulator.layout import APPS_BY_ID, PINS, PINS_BY_ID
from harness.emulator.models import MODELS
from harness.errors import DeviceDefect, HarnessError


def _open_card(state: str, defect: str | None) -> EmulatedCard:
    profile = parse_profile(defect or "faithful")
    card = EmulatedCard(FileStore.open(state), defects=profile)
    card.power_on()
    return card


def cmd_card_new(args: argparse.Namespace) -> int:
    config = load_card_config(args.config)
    state = personalise(config)
    if args.model:
        state.model = args.model
    FileStore.create(args.state, state, overwrite=args.force)
    print(f"created card {state.name!r} ({state.model}, ATR {to_hex(MODELS[state.model].atr)})")
    print(f"state: {args.state} (+ .journal); PIN values are in it: keep it private")
    return 0


def cmd_card_show(args: argparse.Namespace) -> int:
    store = FileStore.open(args.state)
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


class _Smoke:
    """A fixed PIN sequence with expectations; a stand-in for the scenario suite."""

    def __init__(self, card: EmulatedCard, secrets: dict[str, bytes], reveal: bool) -> None:
        self.card = card
        self.secrets = secrets
        self.reveal = reveal
        self.failures: list[str] = []
        self.checks = 0

    def send(self, cmd: CommandAPDU, expect: int | None = None) -> ResponseAPDU:
        resp = ResponseAPDU.parse(self.card.transmit(cmd.to_bytes()))
        verdict = ""
        if expect is not None:
            self.checks += 1
            if resp.sw == expect:
                verdict = "ok"
            else:
                verdict = f"FAIL: expected {SW.describe(expect)}"
                self.failures.append(
                    f"{render_command(cmd)} → {SW.describe(resp.sw)}; "
                    f"expected {SW.describe(expect)}"
                )
        shown = render_command(cmd, reveal=self.reveal)
        if len(shown) > 46:
            shown = shown[:36] + f"… ({len(cmd.to_bytes())} B)"
        print(f"  >> {shown:46} << {resp.sw:04X}  {verdict}")
        return resp

    def goto(self, pin_id: str) -> None:
        spec = PINS_BY_ID[pin_id]
        self.send(C.select_df(APPS_BY_ID[spec.app].aid), SW.OK)
        self.send(C.select_ef(spec.fid), SW.OK)

    def run(self) -> None:
        wrong = b"0000" if self.secrets["jpki-auth"] != b"0000" else b"1111"
        print("JPKI auth PIN: wrong x2, right, status query, sign")
        self.goto("jpki-auth")
        self.send(C.pin_status(), SW.retries(3))
        self.send(C.verify(wrong), SW.retries(2))
        self.send(C.verify(wrong), SW.retries(1))
        self.send(C.pin_status(), SW.retries(1))
        self.send(C.verify(self.secrets["jpki-auth"]), SW.OK)
        self.send(C.pin_status(), SW.retries(3))
        self.send(C.select_ef(0x0017), SW.OK)
        digest = hashlib.sha256(b"pinloop smoke").digest()
        sig = self.send(C.compute_signature(C.sha256_digest_info(digest)), SW.OK)
        self.checks += 1
        if len(sig.data) != 256:
            self.failures.append(f"signature of {len(sig.data)} bytes, expected 256")
        print("JPKI auth PIN: wrong x3 locks; power cycle keeps the lock")
        self.goto("jpki-auth")
        for left in (2, 1, 0):
            self.send(C.verify(wrong), SW.retries(left))
        self.send(C.verify(self.secrets["jpki-auth"]), SW.REFERENCE_DATA_BLOCKED)
        self.card.power_off()
        self.card.power_on()
        self.goto("jpki-auth")
        self.send(C.pin_status(), SW.retries(0))
        print("sign password untouched; its certificate needs it")
        self.goto("jpki-sign")
        self.send(C.pin_status(), SW.retries(5))
        self.send(C.read_binary(0, 4, sfi=0x01), SW.SECURITY_STATUS_NOT_SATISFIED)


def cmd_smoke(args: argparse.Namespace) -> int:
    config = load_card_config(args.config)
    secrets = {k: v.encode() for k, v in config.secrets().items()}
    with tempfile.TemporaryDirectory(prefix="pinloop-smoke-") as tmp:
        path = Path(tmp) / "card.json"
        FileStore.create(path, personalise(config))
        card = _open_card(str(path), args.defect)
        print(
            f"smoke run on emulated card {config.name!r} ({card.model.name}), "
            f"defects: {card.defects.describe()}, in-process"
        )
        smoke = _Smoke(card, secrets, args.reveal)
        try:
            smoke.run()
        finally:
            card.store.close()
    passed = smoke.checks - len(smoke.failures)
    print(f"smoke: {passed} passed, {len(smoke.failures)} failed")
    if smoke.failures:
        more = len(smoke.failures) - 1
        raise DeviceDefect(smoke.failures[0] + (f" (and {more} more)" if more else ""))
    return 0


def cmd_emulate(args: argparse.Namespace) -> int:
    """Serve emulated cards on links until SIGTERM/SIGINT; one ``STATE[@URL]`` per card."""
    import json
    import signal
    import threading

    from harness.links.vicc import EmulatorServer
    from harness.links.vpcd import DEFAULT_PORT

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    profile = parse_profile(args.defect or "faithful")
    servers: list[EmulatorServer] = []
    try:
        for slot, spec in enumerate(args.cards):
            state, _, url = spec.partition("@")
            url = url or f"socket://127.0.0.1:{DEFAULT_PORT + slot}"
            card = EmulatedCard(FileStore.open(state), model=args.model, defects=profile)
            servers.append(EmulatorServer(card, url, quickack=not args.no_quickack))
    except HarnessError:
        for s in servers:
            s.card.store.close()
        raise
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threads = [threading.Thread(target=s.serve_forever, name=s.url, daemon=True) for s in servers]
    for t in threads:
        t.start()
    ready = [
        {
            "state": s.card.store.state.name,
            "url": s.url,
            "instance": s.instance_id.hex(),
            "atr": s.card.atr.hex().upper(),
            "defects": s.card.defects.describe(),
        }
        for s in servers
    ]
    if args.ready_file:
        Path(args.ready_file).write_text(json.dumps(ready, indent=1))
    for r in ready:
        print(
            f"serving {r['state']!r} on {r['url']} (instance {r['instance']}, "
            f"defects {r['defects']})",
            flush=True,
        )
    stop.wait()
    for s in servers:
        s.stop()
    for t in threads:
        t.join(2)
    for s in servers:
        s.card.store.close()
    print("stopped", flush=True)
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

    smoke = sub.add_parser("smoke", help="a short PIN sequence against an in-process card")
    smoke.add_argument("--config", default=str(DEFAULT_CONFIG_PATH))
    smoke.add_argument("--defect", help="defect profile for the emulated card")
    smoke.add_argument("--reveal", action="store_true", help="UNSAFE: do not mask PINs")
    smoke.set_defaults(func=cmd_smoke)
    return p


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


if __name__ == "__main__":
    sys.exit(main())
