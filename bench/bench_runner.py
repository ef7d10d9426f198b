"""The scenario runner against raw pyscard, for the same APDU sequence, through pcscd.

1. **Runner vs raw.** Library scenarios (every one without a power step, a tearing sweep or
   a leak test: those are dominated by waits and statistics, not by the path to the card) run
   through :class:`harness.run.runner.Runner` against the emulated card behind pcscd + vpcd. Their
   APDUs and power cycles are captured once; the raw side replays exactly that sequence with
   pyscard's ``SCardTransmit`` / ``SCardReconnect`` on the same connection, from the same card
   state. The two sides run scenario by scenario, back to back in alternating order (so that
   the load of a shared machine falls on both alike), a few times, the fastest of each side
   kept (load only ever adds time); each round over the whole set gives one ratio (runner
   time / raw time), reported as the median with its spread over the rounds (goal: median
   <= 1.10). Each round also compares the overhead measured from outside,
   (runner - raw) / APDUs, with the overhead the harness records per APDU (the record's
   ``total - wire``, averaged). Two set-ups:

   - ``process`` (default): the emulator in its own process, fresh at every cold reset (every
     scenario starts with one), so nothing but the harness differs between the two sides;
   - ``thread``: the main job's set-up, the pcscd target with its emulator served in a thread
     of this process (its Python work shares the interpreter with the runner's).
2. **The link's floor.** Raw ``SCardTransmit`` status queries, in interleaved blocks, to the
   emulator (``pinloop emulate`` in its own process) and to a minimal card stand-in (a few
   lines of Python answering every APDU ``63 C3``) in another slot; with ``strace`` installed,
   the system calls each process makes per APDU (``strace -c -f``).

Needs root (it starts its own pcscd).

    .tox/check/bin/python bench/bench_runner.py [--rounds 9] [--setup process|thread|both]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from smartcard import scard as S

from harness.apdu import commands as C
from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.capabilities import EMULATED, Capability
from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import MemoryStore, load_card_config, personalise
from harness.emulator.config import CardConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for it
from harness.lab.pcscd import Pcscd
from harness.run.runner import Runner
from harness.scenario import load_scenarios
from harness.scenario import model as M
from harness.secret import Secret
from harness.targets import PcscdTarget, Target, _profile_for, make_target
from harness.transport.pcsc import PcscTransport, wait_for_card
from tests.emulator_process import EmulatorProcess

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1.10
#: steps whose time is not the path to the card: tearing sweeps, leak tests, power steps
_SLOW = ("tear", "leak", "power")


def library(*, observable: bool = False) -> list[M.Scenario]:
    """The library's scenarios whose time is the path to the card (no power step, tearing
    sweep or leak test); ``observable``: also none that reads the card's verified state
    (which an emulator in another process does not show)."""
    out = []
    for path in sorted((ROOT / "scenarios").glob("*.pin.yaml")):
        for s in load_scenarios(path, JPKI):
            if any(step.action in _SLOW for step in s.steps):
                continue
            if observable and any(
                step.expect is not None and step.expect.verified is not None for step in s.steps
            ):
                continue
            out.append(s)
    return out


#: an emulator for the process set-up: a fresh card at every power-off (the state a target
#: restores before each scenario)
FRESH_EMULATOR = textwrap.dedent(
    """
    import sys
    from harness.emulator import EmulatedCard, MemoryStore, load_card_config, personalise
    from harness.links.vicc import EmulatorServer
    template = personalise(load_card_config())
    card = EmulatedCard(MemoryStore(template.copy()))
    power_off = card.power_off
    def fresh():
        card.store = MemoryStore(template.copy())
        power_off()
    card.power_off = fresh
    EmulatorServer(card, sys.argv[1]).serve_forever()
    """
)


class ProcessTarget(Target):
    """The emulated card in another process, as a runner sees it (secrets from the config):
    neither its verified state nor its write points are in reach from here."""

    declared = EMULATED - {
        Capability.OBSERVE_VERIFIED,
        Capability.WRITE_POINTS,
        Capability.MID_COMMAND_CUT,
    }
    #: the bench starts this emulator itself (harness.safety.check_target)
    _pinloop_emulator = True

    def __init__(self, reader: str, config: CardConfig) -> None:
        from harness.emulator import EmulatedCard

        self.name = reader
        self.template = personalise(config)
        self.card = EmulatedCard(MemoryStore(self.template))  # its reset codes, for reinit
        self._secrets = {k: Secret(v.encode()) for k, v in config.secrets().items()}
        self.profile = _profile_for(reader)
        self.transport = PcscTransport(reader)

    def secret(self, pin_id: str) -> Secret:
        return self._secrets[pin_id]

    def max_tries(self, pin_id: str) -> int:
        return self.template.pins[pin_id].max_tries

    def _reset_code(self, route: str) -> bytes:
        return self.card.store.state.reset_codes[route]

    def begin(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        self.transport.power_cycle()  # a fresh card


Event = tuple[str, list[int], int]  # ("apdu", bytes as pyscard takes them, SW) | ("power", …)


class Capture:
    """A transport in front of the target's: what the runner sends, in order."""

    def __init__(self, inner: PcscTransport, events: list[Event]) -> None:
        self.inner = inner
        self.events = events
        self.name = inner.name

    @property
    def atr(self) -> bytes:
        return self.inner.atr

    @property
    def last_wire_ns(self) -> int:
        return self.inner.last_wire_ns

    def transmit(self, cmd: CommandAPDU) -> ResponseAPDU:
        resp = self.inner.transmit(cmd)
        self.events.append(("apdu", list(cmd.to_bytes()), resp.sw))
        return resp

    def power_cycle(self) -> bytes:
        self.events.append(("power", [], S.SCARD_UNPOWER_CARD))
        return self.inner.power_cycle()

    def reset(self) -> bytes:
        self.events.append(("power", [], S.SCARD_RESET_CARD))
        return self.inner.reset()

    def close(self) -> None:
        self.inner.close()


def capture(target: Target, scenarios: list[M.Scenario]) -> list[list[Event]]:
    inner = target.transport
    assert isinstance(inner, PcscTransport)
    sequences = []
    try:
        for s in scenarios:
            events: list[Event] = []
            target.transport = Capture(inner, events)  # type: ignore[assignment]
            _run(Runner(target, s, destructive_ok=True))
            sequences.append(events)
    finally:
        target.transport = inner
    return sequences


#: scenario runs that failed (a latency budget missed on a loaded machine): timed all the same
FAILED: list[str] = []


def _run(runner: Runner) -> None:
    try:
        runner.run()
    except AssertionError as exc:  # a check failed; the APDUs were sent as captured
        FAILED.append(str(exc).splitlines()[0])


def runner_one(target: Target, scenario: M.Scenario) -> tuple[int, int, float]:
    """ns for one scenario through the runner, APDUs recorded, µs of overhead recorded."""
    t = time.perf_counter_ns()
    runner = Runner(target, scenario, destructive_ok=True)
    _run(runner)
    ns = time.perf_counter_ns() - t
    return ns, len(runner.session.latencies), sum(a.overhead_us for a in runner.session.latencies)


def raw_one(target: Target, events: list[Event], check: bool = False) -> int:
    """ns for the same sequence with bare pyscard calls; the card reset as ``begin`` does."""
    transport = target.transport
    assert isinstance(transport, PcscTransport)
    handle, proto = transport._card, transport._protocol
    share, protocols = S.SCARD_SHARE_EXCLUSIVE, S.SCARD_PROTOCOL_T0 | S.SCARD_PROTOCOL_T1
    transmit, reconnect = S.SCardTransmit, S.SCardReconnect
    in_thread = isinstance(target, PcscdTarget)
    t = time.perf_counter_ns()
    if in_thread:  # what PcscdTarget.begin does before its power cycle
        target.card.store = MemoryStore(target.template.copy())  # type: ignore[attr-defined]
    reconnect(handle, share, protocols, S.SCARD_UNPOWER_CARD)
    for kind, raw, arg in events:
        if kind == "apdu":
            rv, resp = transmit(handle, proto, raw)
            if check and (rv or (resp[-2] << 8 | resp[-1]) != arg):
                raise AssertionError(f"replay differs at {bytes(raw[:4]).hex()}: {resp}")
        else:
            reconnect(handle, share, protocols, arg)
    return time.perf_counter_ns() - t


def spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return (
        f"median {statistics.median(values):.3f}, IQR {q[0]:.3f}–{q[2]:.3f}, "
        f"min–max {min(values):.3f}–{max(values):.3f}"
    )


def runner_vs_raw(rounds: int, repeat: int, setup: str) -> None:
    with contextlib.ExitStack() as stack:
        if setup == "thread":
            scenarios = library()
            target: Target = make_target("pcscd", load_card_config(), None)
        else:
            scenarios = library(observable=True)
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            lab = Pcscd(tmp / "pcscd.log", slots=1)
            lab.start()
            stack.callback(lab.stop)
            slot = lab.slots[0]
            emu = subprocess.Popen([sys.executable, "-c", FRESH_EMULATOR, slot.url])
            stack.callback(emu.wait)
            stack.callback(emu.kill)
            wait_for_card(slot.reader, 10)
            target = ProcessTarget(slot.reader, load_card_config())
        stack.callback(target.close)
        _rounds(target, scenarios, rounds, repeat, setup)


def _rounds(
    target: Target, scenarios: list[M.Scenario], rounds: int, repeat: int, setup: str
) -> None:
    sequences = capture(target, scenarios)
    n = sum(1 for events in sequences for e in events if e[0] == "apdu")
    for s, events in zip(scenarios, sequences, strict=True):  # warm-up; the replay must
        raw_one(target, events, check=True)  # get the runner's answers
        runner_one(target, s)
    ratios, outside, recorded = [], [], []
    per_apdu: dict[str, list[float]] = {"runner": [], "raw": []}
    for i in range(rounds):
        # scenario by scenario, the two sides back to back (in alternating order) ``repeat``
        # times, the fastest of each kept: the load of a shared machine only ever adds time,
        # and falls on both sides alike
        t_runner = t_raw = rows = 0
        overhead = 0.0
        for j, (s, events) in enumerate(zip(scenarios, sequences, strict=True)):
            best_raw = best_runner = None
            for k in range(repeat):
                if (i + j + k) % 2:
                    ns = raw_one(target, events)
                    best_raw = ns if best_raw is None else min(best_raw, ns)
                ns, rows_k, us = runner_one(target, s)
                if best_runner is None or ns < best_runner[0]:
                    best_runner = (ns, rows_k, us)
                if not (i + j + k) % 2:
                    ns = raw_one(target, events)
                    best_raw = ns if best_raw is None else min(best_raw, ns)
            assert best_raw is not None and best_runner is not None
            t_raw += best_raw
            t_runner += best_runner[0]
            rows += best_runner[1]
            overhead += best_runner[2]
        ratios.append(t_runner / t_raw)
        outside.append((t_runner - t_raw) / n / 1e3)
        recorded.append(overhead / rows)
        per_apdu["runner"].append(t_runner / n / 1e3)
        per_apdu["raw"].append(t_raw / n / 1e3)
    where = {"process": "its own process", "thread": "a thread of the runner's (the main job)"}
    print(
        f"runner vs raw pyscard through pcscd, emulator in {where[setup]}: "
        f"{len(scenarios)} scenarios, {n} APDUs per side and round, {rounds} rounds "
        f"(each scenario's fastest of {repeat} per side)"
    )
    for side, values in per_apdu.items():
        print(f"  {side:7} µs per APDU: {spread(values)}")
    print(f"  runner / raw: {spread(ratios)} (goal: median <= {GOAL:.2f})")
    print(
        f"  overhead per APDU measured from outside, (runner - raw) / APDUs, µs: {spread(outside)}"
    )
    print(f"  overhead per APDU the harness records (total - wire), µs: {spread(recorded)}")
    if FAILED:
        print(f"  ({len(FAILED)} scenario runs failed a check, e.g. {FAILED[0]}; timed as run)")
        FAILED.clear()


STAND_IN = textwrap.dedent(
    """
    import socket, sys
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    atr = bytes.fromhex("3B8880010000000000000000")
    def read(n):
        out = b""
        while len(out) < n:
            chunk = s.recv(n - len(out))
            if not chunk:
                sys.exit(0)
            out += chunk
        return out
    while True:
        n = int.from_bytes(read(2), "big")
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        msg = read(n)
        if n == 1:
            if msg[0] == 4:
                s.sendall(len(atr).to_bytes(2, "big") + atr)
            continue
        s.sendall(b"\\x00\\x02\\x63\\xc3")
    """
)


def syscalls(pid: int, send: Callable[[], None], n: int, tmp: Path) -> float | None:
    """System calls per APDU of process ``pid`` while ``send`` runs ``n`` APDUs."""
    if shutil.which("strace") is None:
        return None
    out = tmp / f"strace-{pid}.txt"
    proc = subprocess.Popen(
        ["strace", "-c", "-f", "-o", str(out), "-p", str(pid)],
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # attached
    send()
    proc.terminate()
    proc.wait()
    total = [line.split() for line in out.read_text().splitlines() if line.endswith("total")]
    return int(total[0][3]) / n if total else None


def link_floor(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        lab = Pcscd(tmp / "pcscd.log", slots=2)
        lab.start()
        emu = stand_in = None
        try:
            a, b = lab.slots
            emu = EmulatorProcess(personalise(load_card_config()), tmp, a.url, name="emu")
            stand_in = subprocess.Popen([sys.executable, "-c", STAND_IN, str(b.port)])
            wait_for_card(a.reader, 5)
            wait_for_card(b.reader, 5)
            query = list(C.pin_status().to_bytes())
            with PcscTransport(a.reader) as ta, PcscTransport(b.reader) as tb:
                ta.transmit(C.select_df(bytes.fromhex("D392F000260100000001")))
                ta.transmit(C.select_ef(0x0018))
                sides = {"emulator": (ta._card, ta._protocol), "stand-in": (tb._card, tb._protocol)}
                samples: dict[str, list[int]] = {name: [] for name in sides}
                names = list(sides)
                for i in range(n // 100 + 2):
                    for name in names if i % 2 == 0 else names[::-1]:
                        handle, proto = sides[name]
                        out = samples[name]
                        for _ in range(100):
                            t = time.perf_counter_ns()
                            S.SCardTransmit(handle, proto, query)
                            out.append(time.perf_counter_ns() - t)
                medians = {k: statistics.median(v[200:]) / 1e3 for k, v in samples.items()}
                pids = {"emulator": emu.proc.pid, "stand-in": stand_in.pid}
                calls = {}
                for name, (handle, proto) in sides.items():

                    def send(handle: int = handle, proto: int = proto) -> None:
                        for _ in range(n):
                            S.SCardTransmit(handle, proto, query)

                    calls[name] = syscalls(pids[name], send, n, tmp)
        finally:
            if stand_in is not None:
                stand_in.kill()
                stand_in.wait()
            if emu is not None:
                emu.stop()
            lab.stop()
    print(f"\nthe link's floor: raw SCardTransmit status queries, {n} per side, interleaved")
    for name, m in medians.items():
        c = calls[name]
        print(
            f"  {name:9} median {m:7.1f} µs"
            + (f", {c:.1f} system calls per APDU" if c is not None else " (no strace)")
        )
    ratio = medians["emulator"] / medians["stand-in"]
    print(
        f"  emulator / stand-in: {ratio:.2f} x "
        f"(+{medians['emulator'] - medians['stand-in']:.1f} µs)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9, help="runner vs raw rounds")
    ap.add_argument("--repeat", type=int, default=3, help="per scenario and round, fastest kept")
    ap.add_argument("--setup", choices=["process", "thread", "both"], default="process")
    ap.add_argument("--apdus", type=int, default=3000, help="per side for the link's floor")
    ap.add_argument("--no-floor", action="store_true", help="runner vs raw only")
    args = ap.parse_args()
    for setup in ("process", "thread") if args.setup == "both" else (args.setup,):
        runner_vs_raw(args.rounds, args.repeat, setup)
    if not args.no_floor:
        link_floor(args.apdus)


if __name__ == "__main__":
    main()
