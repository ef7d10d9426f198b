"""Run a scenario's steps on a target, checking every expectation.

Safety on real cards is not the runner's job: every APDU it sends to a card that is not the
emulator passes the target's guard (:mod:`harness.guard`), which refuses what could block,
change or leave a PIN short. The runner tells the target what the scenario declares
(:func:`harness.scenario.spend.declared_spend`) when it begins, and lets it restore the card
when the scenario ends. What only the emulator has (literal and fresh PINs, the test
re-initialisation) is refused on a real card here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import random
import secrets
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from harness.apdu import commands as C
from harness.apdu import render_command
from harness.apdu import sw as SW
from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.cards.profile import CardProfile, PinSpec
from harness.checks import ExpectationFailed, describe_sw, sw_matches, tries_expected
from harness.errors import ConfigError, HarnessError, SourceLocation, TransportError
from harness.guard import UnsafeStep
from harness.scenario import model as M
from harness.scenario.spend import declared_spend
from harness.secret import Secret
from harness.target import Target
from harness.timing import ApduTime, CpuWait
from harness.transport.base import Transport

_INS = [f"{i:02X}" for i in range(256)]
_clock = time.perf_counter_ns


@functools.lru_cache(maxsize=1024)
def _partial(e: M.Expect) -> M.Expect:
    """What of ``e`` holds after each repetition but the last (made once per expectation)."""
    relative = e.tries in ("unchanged", "one-less")
    return M.Expect(sw=e.sw, tries=e.tries if relative else None, length=e.length)


def _other_char(c: int, letters: bool) -> int:
    if letters:
        return ord("B") if c != ord("B") else ord("C")
    return ord("0") if c != ord("0") else ord("1")


def _variant(right: bytes, v: str, spec: PinSpec, pin: str) -> Secret:
    """A value derived from the PIN ``right``: not the PIN (wrong, lower, short ...)."""
    letters = spec.format.letters
    if v in ("wrong", "wrong-first"):
        return Secret(bytes((_other_char(right[0], letters),)) + right[1:])
    if v == "wrong-last":
        return Secret(right[:-1] + bytes((_other_char(right[-1], letters),)))
    if v == "lower":
        if right.lower() == right:
            raise HarnessError(f"{pin} has no letters: its lower case is the right PIN")
        return Secret(right.lower())
    if v == "short":
        return Secret(right[: spec.format.min_len - 1])
    if v == "long":
        return Secret((right * 3)[: spec.format.max_len + 1])
    if v == "bad-charset":
        return Secret((b"a" if letters else b"A") * len(right))
    raise ValueError(f"unknown value {v!r}")


def _fresh(right: Secret, letters: bool) -> Secret:
    """A random valid PIN that is not ``right`` (emulated cards only)."""
    while True:
        fresh = Secret(
            b"PL%06d" % secrets.randbelow(10**6)
            if letters
            else b"%0*d" % (len(right), secrets.randbelow(10 ** len(right)))
        )
        if fresh != right:
            return fresh


class Runner:
    def __init__(
        self,
        target: Target,
        scenario: M.Scenario,
        *,
        destructive_ok: bool = False,
        reveal: bool = False,
    ) -> None:
        self.target = target
        self.scenario = scenario
        #: what the runner knows of the card: the target's profile
        self.card: CardProfile = target.card_profile
        if scenario.card and scenario.card != self.card.name:
            raise ConfigError(
                f"{scenario.name}: loaded for the {scenario.card} card, run on {target.name}, "
                f"which holds the {self.card.name} card",
                SourceLocation(scenario.path, scenario.line),
            )
        self.destructive_ok = destructive_ok
        self.reveal = reveal
        self.values: dict[str, Secret] = {}  # PIN values after change / reinit
        self.new: dict[str, Secret] = {}
        self.app: str | None = None
        self.ef: int | None = None
        self.trace: list[str] = []
        self.step: M.Step | None = None
        self.start_counters: dict[str, int] = {}
        #: every APDU sent while this runner runs, each with its kind (timing.KINDS): the
        #: steps', timing samples, warm-ups and restores, cuts, and what the target and the
        #: guard send on their own (the target records into the same list)
        self.latencies: list[ApduTime] = target.new_record()
        #: when the harness's path to the next APDU began: the previous response, or the end
        #: of the last lab operation (power, reconnection) or analysis, which are not its path
        self._mark = _clock()
        self.marginal: list[str] = []  # budgets met only marginally
        self.timing_series: dict[str, list[float]] = {}  # classes of a leak test, µs
        #: wraps each step (the pytest plugin puts an Allure step around it)
        self.step_context: Callable[[int, M.Step], AbstractContextManager[object]] = (
            lambda index, step: contextlib.nullcontext()
        )

    # -- plumbing ---------------------------------------------------------------------------
    def fail(self, what: str, expected: str, actual: str) -> ExpectationFailed:
        assert self.step is not None
        return ExpectationFailed(
            self.scenario, self.step, what, expected, actual, self.trace, self.target.name
        )

    def tx(self, cmd: CommandAPDU, kind: str = "step") -> ResponseAPDU:
        resp, us = self._sample(cmd, kind)
        shown = render_command(cmd, reveal=self.reveal)
        if len(shown) > 60:
            shown = shown[:50] + f"… ({len(cmd.to_bytes())} B)"
        data = f" +{len(resp.data)} B" if resp.data else ""
        self.trace.append(f">> {shown}  << {resp.sw:04X}{data}  ({us:.0f} µs)")
        return resp

    def note(self, text: str) -> None:
        self.trace.append(f"-- {text}")

    def lab_done(self) -> None:
        """A lab operation (power, reconnection) or an analysis ended: the harness's path to
        the next APDU starts now."""
        self._mark = _clock()

    def select_app(self, app: str) -> None:
        resp = self.tx(C.select_df(self.card.apps_by_id[app].aid))
        if not resp.ok:
            raise self.fail(f"SELECT {app}", "9000", SW.describe(resp.sw))
        self.app, self.ef = app, None

    def select_pin(self, pin: str, *, keep_app: bool = True) -> None:
        """Make ``pin``'s EF current; re-selects the DF only when another one is selected."""
        spec = self.card.pins_by_id[pin]
        if self.app != spec.app or not keep_app:
            self.select_app(spec.app)
        if self.ef != spec.fid:
            resp = self.tx(C.select_ef(spec.fid))
            if not resp.ok:
                raise self.fail(f"SELECT EF {spec.fid:04X}", "9000", SW.describe(resp.sw))
            self.ef = spec.fid

    def tries(self, pin: str, *, sfi: bool = False) -> int:
        spec = self.card.pins_by_id[pin]
        if sfi:
            if self.app != spec.app:
                self.select_app(spec.app)
            resp = self.tx(C.pin_status(sfi=spec.fid))
        else:
            self.select_pin(pin)
            resp = self.tx(C.pin_status())
        left = SW.retries_left(resp.sw)
        if left is None:
            raise self.fail(f"status query of {pin}", "63Cx", SW.describe(resp.sw))
        return left

    def value(self, pin: str, v: M.Value) -> Secret:
        """The bytes ``v`` stands for, as a :class:`Secret` (wrong variants of a PIN give away
        most of it, so they are secrets too)."""
        spec = self.card.pins_by_id[pin]
        if isinstance(v, M.Literal):
            if not self.target.emulated:
                raise UnsafeStep("literal PIN values are for emulated cards only")
            return Secret(v.value.encode())
        if v == "new":
            if pin not in self.new:
                assert self.step is not None
                raise ConfigError(
                    f"value new for {pin} before any change or reinit",
                    self.step.where,
                    snippet=self.step.snippet,
                )
            return self.new[pin]
        right = self.values.get(pin) or self.target.secret(pin)
        if v == "right":
            return right
        if v == "fresh":
            if not self.target.emulated:
                raise UnsafeStep("a fresh PIN on a real card would be unknown to the lab")
            return _fresh(right, spec.format.letters)
        return _variant(right.reveal(), v, spec, pin)

    # -- expectations -------------------------------------------------------------------------
    def check(
        self,
        step: M.Step,
        resp: ResponseAPDU | None,
        pin: str | None,
        before: int | None,
        *,
        sfi: bool = False,
        final: bool = True,
    ) -> None:
        """Check ``step``'s expectations. With ``repeat``, the status word and relative tries
        (``one-less``, ``unchanged``) hold for every repetition; absolute tries, ``blocked``
        and ``verified`` describe the state after the last one (``final``)."""
        e = step.expect
        if e is None:
            return
        if not final:
            e = _partial(e)
        if e.sw is not None and resp is not None and not sw_matches(e.sw, resp.sw):
            raise self.fail("status word", describe_sw(e.sw), SW.describe(resp.sw))
        if e.length is not None and resp is not None and len(resp.data) != e.length:
            raise self.fail("response length", str(e.length), str(len(resp.data)))
        after: int | None = None
        if pin is not None and (e.tries is not None or e.blocked is not None):
            after = self.tries(pin, sfi=sfi)
        if e.tries is not None and pin is not None:
            assert after is not None
            want = tries_expected(e.tries, before, self.target.max_tries(pin))
            if after != want:
                raise self.fail(f"tries left of {pin}", f"{want} ({e.tries})", str(after))
            left = SW.retries_left(resp.sw) if resp is not None else None
            if left is not None and isinstance(step, M.Verify) and left != after:
                raise self.fail(
                    f"63Cx of {pin} against the status query",
                    f"x = {after} (what the query says)",
                    f"x = {left}",
                )
        if e.blocked is not None and pin is not None:
            assert after is not None
            if (after == 0) != e.blocked:
                raise self.fail(f"{pin} blocked", str(e.blocked), f"{after} tries left")
        if e.verified is not None and pin is not None:
            if not self.target.emulated:
                self.note(f"verified state of {pin} is not observable on a real card: not checked")
            elif self.target.verified(pin) != e.verified:
                raise self.fail(f"{pin} verified", str(e.verified), str(not e.verified))

    def _before(self, step: M.Step, pin: str, sfi: bool) -> int | None:
        e = step.expect
        if e is not None and e.tries in ("unchanged", "one-less"):
            return self.tries(pin, sfi=sfi)
        return None

    # -- steps --------------------------------------------------------------------------------
    def run(self) -> None:
        """Begin (the target brings the card to the scenario's start), the steps, then the
        end (a real card's counters and values put back), unless the connection failed."""
        spend = declared_spend(
            self.scenario, {p: self.target.max_tries(p) for p in self.card.pin_ids}
        )
        try:
            self.target.begin(
                self.scenario.pins, spend=spend, destructive_ok=self.destructive_ok, log=self.note
            )
            self.lab_done()
            try:
                self._steps()
            except TransportError:
                raise  # the card's state is unknown: the next scenario sets the target up afresh
            except BaseException:
                try:
                    self.target.end()
                except Exception as exc:  # the scenario's own failure is the one reported
                    self.note(f"after the failure, putting the card back failed too: {exc}")
                raise
            self.target.end()
        finally:
            self.target.end_record()  # what the target sends from now on is the next one's

    def _steps(self) -> None:
        if any(isinstance(s, M.OthersUnchanged) for s in self.scenario.steps):
            self.step = self.scenario.steps[0]  # a failed read is reported at the first step
            self.start_counters = {p.id: self.tries(p.id) for p in self.card.pins}
        for index, step in enumerate(self.scenario.steps, 1):
            self.step = step
            self.trace = []
            with self.step_context(index, step):
                getattr(self, "do_" + step.action)(step)

    def do_select(self, s: M.Select) -> None:
        if s.pin is not None:
            self.select_pin(s.pin, keep_app=False)
            self.check(s, None, s.pin, None)
            return
        if s.aid is not None:
            resp = self.tx(C.select_df(s.aid))
            self.app = self.ef = None
            self.check(s, resp, None, None)
            return
        assert s.app is not None
        resp = self.tx(C.select_df(self.card.apps_by_id[s.app].aid))
        self.app, self.ef = (s.app, None) if resp.ok else (None, None)
        if s.ef is not None and resp.ok:
            resp = self.tx(C.select_ef(s.ef))
            self.ef = s.ef if resp.ok else None
        self.check(s, resp, None, None)

    def do_verify(self, s: M.Verify) -> None:
        spec = self.card.pins_by_id[s.pin]
        for i in range(s.repeat):
            if not s.sfi:
                self.select_pin(s.pin)
            elif self.app != spec.app:
                self.select_app(spec.app)
            before = self._before(s, s.pin, s.sfi)
            responses = []
            for v in s.values:
                value = self.value(s.pin, v)
                responses.append(self.tx(C.verify(value, sfi=spec.fid if s.sfi else None)))
            if s.expect is not None and s.expect.identical:
                first = responses[0]
                if any((r.data, r.sw) != (first.data, first.sw) for r in responses[1:]):
                    shown = [v if isinstance(v, str) else "a literal" for v in s.values]
                    raise self.fail(
                        "identical answers to " + ", ".join(shown),
                        "one and the same answer to every value",
                        ", ".join(
                            f"{v} → {r.sw:04X}" + (f" +{len(r.data)} B" if r.data else "")
                            for v, r in zip(shown, responses, strict=True)
                        ),
                    )
            self.check(s, responses[-1], s.pin, before, sfi=s.sfi, final=i == s.repeat - 1)

    def do_status(self, s: M.Status) -> None:
        for i in range(s.repeat):
            before = self._before(s, s.pin, s.sfi)
            if s.sfi:
                spec = self.card.pins_by_id[s.pin]
                if self.app != spec.app:
                    self.select_app(spec.app)
                resp = self.tx(C.pin_status(sfi=spec.fid))
            else:
                self.select_pin(s.pin)
                resp = self.tx(C.pin_status())
            self.check(s, resp, s.pin, before, sfi=s.sfi, final=i == s.repeat - 1)

    def do_change(self, s: M.Change) -> None:
        spec = self.card.pins_by_id[s.pin]
        self.select_pin(s.pin)
        before = self._before(s, s.pin, False)
        new = self.value(s.pin, s.new)
        if spec.change is None:  # the loader refuses such a step
            raise HarnessError(f"{s.pin} cannot be changed")
        resp = self.tx(spec.change.command(new))
        if resp.ok:
            self.values[s.pin] = self.new[s.pin] = new
        self.check(s, resp, s.pin, before)

    def do_reinit(self, s: M.Reinit) -> None:
        if not self.target.emulated:
            raise UnsafeStep("reinit is the emulator's test mechanism; a real card has none")
        self.select_pin(s.pin)
        before = self._before(s, s.pin, False)
        code = self.target.card.store.state.reset_codes[s.route]  # type: ignore[attr-defined]
        new = None if s.new == "none" else self.value(s.pin, s.new)
        resp = self.tx(C.reset_retry_counter(code, new))
        if resp.ok and new is not None:
            self.values[s.pin] = self.new[s.pin] = new
        self.check(s, resp, s.pin, before)

    def do_power(self, s: M.Power) -> None:
        if s.how == "cycle":
            self.note("power cycle (cold reset)")
            self.target.transport.power_cycle()
        elif s.how == "reset":
            self.note("warm reset")
            self.target.transport.reset()
        elif s.how == "cut":
            self._power_cut()
        else:
            self.note("card removed and reinserted")
            self.target.reinsert()
        self.app = self.ef = None
        self.lab_done()

    def _power_cut(self) -> None:
        switch = self.target.power_switch()
        try:
            self.note(f"power cut by {switch.describe()}, {self.target.power_off_ms:.0f} ms off")
            switch.cut()
            time.sleep(self.target.power_off_ms / 1000)
            switch.restore()
        finally:
            switch.close()
        self.target.recover()

    def do_read(self, s: M.Read) -> None:
        if s.sfi:
            resp = self.tx(C.read_binary(s.offset, s.length, sfi=s.ef))
            self.ef = s.ef if self.app else None
        else:
            if self.ef != s.ef:
                sel = self.tx(C.select_ef(s.ef))
                self.ef = s.ef if sel.ok else None
            resp = self.tx(C.read_binary(s.offset, s.length))
        self.check(s, resp, None, None)

    def do_sign(self, s: M.Sign) -> None:
        key = self.card.sign_keys[s.key]
        key_fid, cert_fid = key.key_fid, key.cert_fid
        if self.app != key.app:
            self.select_app(key.app)
        self.tx(C.select_ef(key_fid))
        self.ef = key_fid
        message = os.urandom(32)
        resp = self.tx(C.compute_signature(C.sha256_digest_info(hashlib.sha256(message).digest())))
        self.check(s, resp, None, None)
        if s.expect is not None and s.expect.signature == "valid":
            self._verify_signature(resp, message, cert_fid)

    def _verify_signature(self, resp: ResponseAPDU, message: bytes, cert_fid: int) -> None:
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        cert_resp = self.tx(C.read_binary(0, 65536, sfi=cert_fid))
        self.ef = cert_fid
        try:
            key = x509.load_der_x509_certificate(cert_resp.data).public_key()
            assert isinstance(key, rsa.RSAPublicKey)
            key.verify(resp.data, message, padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, AssertionError, InvalidSignature) as exc:
            raise self.fail(
                "signature against the card's certificate",
                "valid",
                f"{type(exc).__name__} ({len(resp.data)} bytes)",
            ) from None

    def do_apdu(self, s: M.Apdu) -> None:
        cmd = CommandAPDU.parse(s.raw)
        resp = self.tx(cmd)
        if cmd.ins == 0xA4:  # the runner no longer knows what is selected
            self.app = self.ef = None
        self.check(s, resp, None, None)

    def do_othersunchanged(self, s: M.OthersUnchanged) -> None:
        for p in self.card.pins:
            if p.id == s.pin:
                continue
            now = self.tries(p.id)
            if now != self.start_counters[p.id]:
                raise self.fail(
                    f"counter of {p.id} (untouched by this scenario)",
                    str(self.start_counters[p.id]),
                    str(now),
                )

    def _sample(self, cmd: CommandAPDU, kind: str = "step") -> tuple[ResponseAPDU, float]:
        """One APDU and its time at the transport (µs, monotonic ns clock), recorded with the
        harness's whole path to it (from the previous response, less what the guard sent on
        its own, which has rows of its own). A failed APDU is recorded too, unless the guard
        refused it (then nothing was sent)."""
        transport = self.target.transport
        try:
            resp = transport.transmit(cmd)
        except BaseException:
            if getattr(transport, "last_sent", True):
                self._row(transport, cmd, kind, answered=False)
            raise
        return resp, self._row(transport, cmd, kind)

    def _row(
        self, transport: Transport, cmd: CommandAPDU, kind: str, answered: bool = True
    ) -> float:
        now = _clock()
        total = now - self._mark - getattr(transport, "last_extra_ns", 0)
        self._mark = now
        wire = transport.last_wire_ns / 1e3
        self.latencies.append(
            ApduTime(
                _INS[cmd.ins], cmd.ins == 0x20 and not cmd.data, wire, total / 1e3, kind, answered
            )
        )
        return wire

    def do_latency(self, s: M.Latency) -> None:
        profile = self.target.profile
        if profile is None or not profile.timing:
            raise HarnessError(f"no latency budget for {self.target.name} in readers/")
        self.select_pin(s.pin)
        right = self.value(s.pin, "right")
        cmd = (
            C.pin_status()
            if s.of == "status"
            else C.verify(right if s.of == "right" else self.value(s.pin, "wrong"))
        )
        restore = C.verify(right)
        got = self._latency_figures(s, cmd, restore)
        over = [k for k, budget in profile.timing.items() if budget.judge(got[k]) == "over"]
        if over:
            # a budget broken must be broken again in an independent run before it is a
            # defect: one stall of the host (seen in-process under load: p99 12.7 ms, p95
            # 0.017 ms) is not the reader's, a reader that is slow is slow again
            first = got
            got = self._latency_figures(s, cmd, restore)
            again = [k for k in over if profile.timing[k].judge(got[k]) == "over"]
            if again:
                key = again[0]
                raise self.fail(
                    f"VERIFY latency {key} ({profile.name} budget)",
                    f"<= {profile.timing[key].limit} ms",
                    f"{first[key]:.3f} ms, then {got[key]:.3f} ms in an independent run, over "
                    f"{s.samples} samples each",
                )
            self.note(f"the first run's {', '.join(over)} over budget did not replicate")
        for key, budget in profile.timing.items():
            verdict = budget.judge(got[key])
            if verdict == "over":
                raise self.fail(
                    f"VERIFY latency {key} ({profile.name} budget)",
                    f"<= {budget.limit} ms",
                    f"{got[key]:.3f} ms over {s.samples} samples",
                )
            if verdict == "marginal":
                mark = (
                    f"{key} {got[key]:.3f} ms is marginal (limit {budget.limit}, "
                    f"marginal above {budget.marginal} ms)"
                )
                self.note("MARGINAL: " + mark)
                self.marginal.append(mark)

    def _latency_figures(
        self, s: M.Latency, cmd: CommandAPDU, restore: CommandAPDU
    ) -> dict[str, float]:
        """One run of ``s.samples`` timed commands: its p50, p95 and p99 in ms (noted).

        Each sample is taken less the time the threads on its path (this one, and those of
        the target's :meth:`~harness.target.Target.path_threads` that carry an answer)
        waited for a CPU meanwhile (:class:`~harness.timing.CpuWait`): a busy host, not the
        reader, made that wait. The figures as measured are noted beside them."""
        samples, raw = [], []
        waited_us = 0.0
        first = len(self.latencies)
        with CpuWait(self.target.path_threads()) as cpu:
            if cpu.others:  # which of them carry an answer: a few free status queries tell
                runs = cpu.runs()
                for _ in range(_PATH_PROBES):
                    self._sample(C.pin_status(), "warm-up")
                cpu.keep_on_path(runs, _PATH_PROBES)
            for _ in range(s.samples):
                before = cpu.mark()
                wire = self._sample(cmd)[1]
                wait = cpu.since(before) / 1e3
                raw.append(wire)
                samples.append(max(0.0, wire - wait))
                waited_us += wait
                if s.of == "wrong":
                    self._sample(restore, "restore")
            known = cpu.available
        overhead = sorted(a.overhead_us for a in self.latencies[first:] if a.kind == "step")
        got, measured = _percentiles_ms(samples), _percentiles_ms(raw)
        host = (
            f"this thread{f' and {cpu.others} on the path' if cpu.others else ''} waited "
            f"{waited_us / 1e3:.3f} ms for a CPU in all, taken out; as "
            f"measured: " + ", ".join(f"{k} {v:.3f}" for k, v in measured.items())
            if known
            else "this host does not say how long a thread waits for a CPU: as measured"
        )
        self.note(
            f"latency of {s.of} (ms, at the transport): "
            + ", ".join(f"{k} {v:.3f}" for k, v in got.items())
            + f" ({host}); harness overhead per APDU (not included): median "
            f"{statistics.median(overhead):.1f} µs, max {overhead[-1]:.1f} µs"
        )
        return got

    def do_tear(self, s: M.Tear) -> None:
        from harness.tearing import Tearing

        Tearing(self).run(s)

    def do_leak(self, s: M.Leak) -> None:
        """Two classes of VERIFY inputs, interleaved at random; Welch t raw and cropped.

        ``first-vs-last``: wrong at the first vs at the last character (the counter is put back
        with the right PIN after every wrong try); ``right-vs-wrong``; ``blocked``: the PIN is
        blocked first, then the right and a wrong value (no NVM write in either: a difference
        means the card still compares). A verdict other than pass is measured again, fresh: a
        leak is a leak only when an independent run finds it too (same sign).
        """
        from harness.timing import ALPHA, MIN_LEAK_US, leak_test

        self.select_pin(s.pin)
        right = self.value(s.pin, "right")
        restore = C.verify(right)
        if s.classes == "first-vs-last":
            classes = {
                "wrong at the first character": C.verify(self.value(s.pin, "wrong-first")),
                "wrong at the last character": C.verify(self.value(s.pin, "wrong-last")),
            }
        elif s.classes == "right-vs-wrong":
            classes = {"right": restore, "wrong": C.verify(self.value(s.pin, "wrong"))}
        else:
            wrong = C.verify(self.value(s.pin, "wrong"))
            tries = self.target.max_tries(s.pin)
            for _ in range(tries + 1):  # bounded: a card that never blocks must not hang us
                if self.tx(wrong).sw == SW.REFERENCE_DATA_BLOCKED:
                    break
            else:
                raise self.fail(
                    f"{s.pin} blocked by wrong tries before the leak test",
                    f"69 84 within {tries + 1} wrong tries",
                    "never blocked",
                )
            classes = {"blocked, right": restore, "blocked, wrong": wrong}
            restore = None  # type: ignore[assignment]
        names = list(classes)
        samples = self._measure(classes, restore, s.samples)
        self.timing_series = samples
        result = leak_test(samples[names[0]], samples[names[1]])
        self.lab_done()
        self.note(f"leak test {s.classes} ({names[0]} vs {names[1]}): {result.describe()}")
        if result.verdict != "pass":
            # a verdict other than pass must replicate in an independent run (fresh samples, a
            # new random order) before it is one: a device defect is the worst false verdict
            again = self._measure(classes, restore, s.samples)
            second = leak_test(again[names[0]], again[names[1]])
            self.lab_done()
            self.note(f"independent repeat: {second.describe()}")
            # the direction of the statistic the verdict rests on (the largest |t|, often a
            # crop of the fastest samples), not of the raw means: one stall of a few ms in
            # one class turns the raw mean difference round while the leak stays
            same_sign = (second.t_max > 0) == (result.t_max > 0)
            if second.verdict == "pass":
                self.note(f"the first run's {result.verdict} did not replicate: pass")
                return
            if not (result.verdict == "leak" and second.verdict == "leak" and same_sign):
                both = " in opposite directions" if result.verdict == second.verdict else ""
                raise HarnessError(
                    f"timing bench too noisy: {result.verdict}, then {second.verdict}{both} in "
                    f"an independent run (A/A control |t| = {abs(result.t_aa):.1f}, then "
                    f"{abs(second.t_aa):.1f}); nothing can be concluded"
                )
        if result.verdict == "leak":
            raise self.fail(
                f"VERIFY time depends on the input ({names[0]} vs {names[1]})",
                f"permutation p >= {ALPHA:g} for max |t| over raw and 100 crops, or a "
                f"difference below {MIN_LEAK_US:g} µs (no leak above "
                f"{max(result.mde_us, MIN_LEAK_US):.1f} µs)",
                f"|t| = {abs(result.t_max):.1f}, difference {result.effect_us:+.1f} µs where "
                f"|t| is largest (raw {result.mean_difference_us:+.1f} µs), replicated in an "
                "independent run",
            )

    def _measure(
        self, classes: dict[str, CommandAPDU], restore: CommandAPDU | None, n: int
    ) -> dict[str, list[float]]:
        """``n`` samples of each class, interleaved in a random order, after 20 warm-ups; the
        counter put back with ``restore`` after every wrong try."""
        names = list(classes)
        order = names * n
        random.shuffle(order)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for name in order[:20]:  # warm-up, discarded
            self._sample(classes[name], "warm-up")
            if restore is not None:
                self._sample(restore, "restore")
        for name in order:
            cmd = classes[name]
            resp, us = self._sample(cmd)
            samples[name].append(us)
            if (
                restore is not None
                and cmd is not restore
                and not resp.ok
                and not self._sample(restore, "restore")[0].ok
            ):
                raise self.fail("restoring the counter with the right PIN", "9000", "not 9000")
        return samples


#: status queries that tell which threads of the PC/SC daemon and the emulator carry an answer
_PATH_PROBES = 8


def _percentiles_ms(samples: list[float]) -> dict[str, float]:
    """p50, p95 and p99 of samples in µs, in ms."""
    q = statistics.quantiles(samples, n=100)
    return {
        "verify_p50_ms": statistics.median(samples) / 1e3,
        "verify_p95_ms": q[94] / 1e3,
        "verify_p99_ms": q[98] / 1e3,
    }
