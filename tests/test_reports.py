"""Reports: Allure results, categories, environment, the per-reader summary, the static
report - and no PIN of the run in any file under the reports folder."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from harness.cards.jpki import PROFILE as JPKI
from tests.support import run_pytest

ROOT = Path(__file__).resolve().parent.parent
CARD = """name: report-card
pins:
  jpki-auth: "0739"
  jpki-sign: "QZXWV9PL"
  kenhojo-pin: "0826"
  juki-pin: "0517"
  common-pin: "0608"
reset_codes:
  window: "WINDOWCODE-ZQX81"
  kiosk: "KIOSKCODE-ZQX812"
identity:
  my_number: "908172635443"
  birth_date: "19711109"
  expiry_year: "2031"
  security_code: "4817"
"""
#: every secret of that card: PINs, derived codes (照合番号A/B, birth key), reset codes. The
#: 4-digit PINs start with 0: the reports are full of integers (µs of an APDU in the trace,
#: "(7391 µs)" under load; ports; pids), and a formatted integer never does
SECRETS = [
    "0739",
    "QZXWV9PL",
    "0826",
    "0517",
    "0608",
    "908172635443",
    "46110920314817",
    "461109",
    "WINDOWCODE-ZQX81",
    "KIOSKCODE-ZQX812",
]


def _pytest(
    reports: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    card = reports.parent / "card.yaml"
    card.write_text(CARD)
    return run_pytest(
        str(ROOT / "scenarios"),
        "--pinloop-card",
        str(card),
        "--alluredir",
        str(reports / "allure-results"),
        "--pinloop-reports",
        str(reports),
        "--junitxml",
        str(reports / "junit.xml"),
        *args,
        env=env,
    )


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "reports"
    proc = _pytest(out)
    assert proc.returncode == 0, proc.stdout[-2000:]
    return out


def _results(reports: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in (reports / "allure-results").glob("*-result.json")]


def _label(result: dict[str, object], name: str) -> list[str]:
    return [lb["value"] for lb in result["labels"] if lb["name"] == name]  # type: ignore[attr-defined,index]


def test_labels_parameters_and_steps(reports: Path) -> None:
    results = _results(reports)
    assert len(results) >= 100
    one = next(
        r
        for r in results
        if _label(r, "story") == ["wrong ×N locks at exactly N"]
        and {"name": "pin", "value": "'jpki-sign'"} in r["parameters"]
    )  # type: ignore[operator]
    assert _label(one, "epic") == ["公的個人認証AP (JPKI)"]
    assert _label(one, "feature") == ["jpki-sign (署名用電子証明書 パスワード)"]
    assert _label(one, "severity") == ["critical"]
    assert {"lock-at-exactly-n", "destructive"} <= set(_label(one, "tag"))
    params = {p["name"]: p["value"] for p in one["parameters"]}  # type: ignore[attr-defined,index]
    assert params == {
        "reader": "'emulated (in-process)'",
        "card": "'report-card (jpki-contact)'",
        "pin": "'jpki-sign'",
    }
    steps = one["steps"]
    assert [s["name"] for s in steps] == [  # type: ignore[attr-defined,index]
        "1. select: pin=jpki-sign; expect tries=max",
        "2. verify: pin=jpki-sign, values=[wrong], repeat=max-1; "
        "expect sw=63Cx, tries=one-less, blocked=false",
        "3. verify: pin=jpki-sign, values=[wrong]; expect sw=63C0, tries=0, blocked=true",
        "4. verify: pin=jpki-sign, values=[right]; expect sw=blocked, tries=0",
    ]
    trace = reports / "allure-results" / steps[1]["attachments"][0]["source"]  # type: ignore[index]
    text = trace.read_text()
    assert ">> 00 20 00 80 08 ** ** ** ** ** ** ** **  << 63C4" in text
    attachments = {a["name"] for a in one["attachments"]}  # type: ignore[attr-defined,index]
    assert "latency samples (CSV)" in attachments
    timing = next(r for r in results if _label(r, "tag").count("verify-latency-budget"))
    kinds = {a["type"] for a in timing["attachments"]}  # type: ignore[attr-defined,index]
    assert {"text/csv", "image/png"} <= kinds
    # drawn at the end of the session from the items' plot requests: real PNGs, every one
    pngs = list((reports / "allure-results").glob("*-attachment.png"))
    assert len(pngs) == 12 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_environment_and_categories(reports: Path) -> None:
    env = dict(
        line.split("=", 1)
        for line in (reports / "allure-results" / "environment.properties").read_text().splitlines()
    )
    assert {
        "pinloop",
        "host",
        "python",
        "pyscard",
        "pcscd",
        "vsmartcard-vpcd",
        "reader.0.name",
        "reader.0.atr",
        "reader.0.profile",
    } <= set(env)
    assert env["reader.0.atr"] == "3B E0 00 FF 81 31 FE 45 14"
    cats = json.loads((reports / "allure-results" / "categories.json").read_text())
    assert [c["name"] for c in cats] == [
        "Timing failures (device)",
        "Device defects",
        "Lab faults (reader, daemon, emulator, configuration)",
    ]
    # the timing rules are those of the library's scenarios with a latency or leak step
    timing = re.fullmatch(r"\(\?s\)\.\*rule '\((.*)\)' broken\.\*", cats[0]["messageRegex"])
    assert timing is not None
    assert set(timing.group(1).replace("\\", "").split("|")) == {
        "verify-latency-budget",
        "verify-constant-time",
    }


def test_categories_separate_defects_timing_and_lab_faults(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    proc = _pytest(
        reports,
        "-k",
        "lock-at-exactly-n and jpki-auth or latency and jpki-auth",
        "--pinloop-defect",
        "fixed-delay:fixed_delay_ms=2",
        "--pinloop-target",
        "inprocess",
        "--pinloop-target",
        "reader:^Nope$",
    )
    assert proc.returncode == 1, proc.stdout[-2000:]
    cats = json.loads((reports / "allure-results" / "categories.json").read_text())

    def category(result: dict[str, object]) -> str:
        message = result.get("statusDetails", {}).get("message", "")  # type: ignore[attr-defined]
        for c in cats:
            if result["status"] in c["matchedStatuses"] and re.fullmatch(
                c.get("messageRegex", "(?s).*"), message
            ):  # type: ignore[arg-type]
                return str(c["name"])
        return "none"

    def rule(result: dict[str, object]) -> str:
        kinds = {"destructive", "emulator-only", "needs-reinit"}
        return next(t for t in _label(result, "tag") if t not in kinds)

    got = {(rule(r), str(r["status"]), category(r)) for r in _results(reports)}
    assert ("verify-latency-budget", "failed", "Timing failures (device)") in got, got
    assert ("lock-at-exactly-n", "passed", "none") in got, got
    assert any(s == "broken" and c.startswith("Lab faults") for _, s, c in got), got


def test_summary(reports: Path) -> None:
    data = json.loads((reports / "summary.json").read_text())
    reader = data["readers"]["emulated (in-process)"]
    assert reader["outcomes"]["passed"] >= 100 and reader["outcomes"]["failed"] == 0
    latency = reader["verify_latency"]
    assert (
        latency["samples"] > 500 and 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
    )
    queries = reader["status_query_latency"]
    assert queries["samples"] > 100 and 0 < queries["p50_ms"] <= queries["p99_ms"]
    overhead = reader["harness_overhead_us"]  # measured around every APDU, not estimated
    assert overhead["apdus"] > latency["samples"] + queries["samples"]
    # no bound in µs or ms here: how long the host takes is not what this test is about
    assert 0 < overhead["median"] <= overhead["p99"] and math.isfinite(overhead["p99"])
    assert "marginal" in reader["outcomes"]
    html = (reports / "summary.html").read_text()
    assert "VERIFY latency" in html and "data:image/png;base64," in html
    assert "harness overhead per APDU" in html


def test_a_marginal_latency_passes_marked(tmp_path: Path) -> None:
    """0.7 ms per command sits between the in-process profile's marginal (0.5 ms) and its
    limit (1 ms) for p50: passed, and marked so in JUnit, Allure and the summary."""
    reports = tmp_path / "reports"
    proc = _pytest(
        reports,
        "-k",
        "latency and jpki-auth",
        "--pinloop-defect",
        "fixed-delay:fixed_delay_ms=0.7",
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    data = json.loads((reports / "summary.json").read_text())
    (row,) = data["results"]
    assert row["outcome"] == "passed" and "verify_p50_ms" in row["marginal"][0]
    assert data["readers"]["emulated (in-process)"]["outcomes"]["marginal"] == 1
    assert "passed (marginal)" in (reports / "summary.html").read_text()
    assert 'name="marginal"' in (reports / "junit.xml").read_text()
    (result,) = _results(reports)
    assert "marginal" in _label(result, "tag")


_NOT_IN_A_TOKEN_BEFORE = rb"(?<![0-9A-Za-z_-])(?<![0-9]\.)"
_NOT_IN_A_TOKEN_AFTER = rb"(?![0-9A-Za-z_-])(?!\.[0-9])"


def _leaks(folder: Path) -> list[str]:
    found = []
    # a token bounded by anything but letters, digits, "_" and "-": Allure writes thousands of
    # UUIDs, whose groups are 4 hex digits between hyphens (the 4th one starts with 8-b), and a
    # 4-digit PIN matches one of them in a good share of runs. Nor part of a decimal number
    # ("0.0608" ms in a latency CSV)
    patterns = [
        re.compile(_NOT_IN_A_TOKEN_BEFORE + re.escape(s.encode()) + _NOT_IN_A_TOKEN_AFTER)
        for s in SECRETS
    ]
    patterns += [re.compile(re.escape(s.encode().hex(" ").upper().encode()), re.I) for s in SECRETS]
    patterns += [re.compile(re.escape(s.encode().hex().encode()), re.I) for s in SECRETS]
    # inside a Python bytes repr, after an escaped byte: b'\x00 \x00\x80\x040739'
    patterns += [re.compile(rb"\\x[0-9a-f]{2}" + re.escape(s.encode())) for s in SECRETS]
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [
                f"{path.relative_to(folder)}: {p.pattern!r}" for p in patterns if p.search(data)
            ]
    return found


def test_no_pin_in_any_file_under_reports(reports: Path) -> None:
    files = [p for p in reports.rglob("*") if p.is_file()]
    assert len(files) > 200
    assert _leaks(reports) == []


def test_the_grep_would_see_a_pin(tmp_path: Path) -> None:
    (tmp_path / "log.txt").write_text("VERIFY 00 20 00 80 04 30 37 33 39\n")
    (tmp_path / "b.json").write_text('{"pin": "QZXWV9PL", "code": 0739}')
    (tmp_path / "uuid.json").write_text('{"source": "a1046e16-44ec-4ac8-0826-9775e88168b9"}')
    (tmp_path / "repr.txt").write_text("raw = b'\\x00 \\x00\\x80\\x040739'")
    assert sorted(x.split(":")[0] for x in _leaks(tmp_path)) == [
        "b.json",
        "b.json",
        "log.txt",
        "repr.txt",
    ]


def test_static_report_without_java(reports: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (./run report installs nodejs and npm)")
    from harness.report.static import ALLURE_VERSION, COMPLETE, allure_dir, build

    if not (allure_dir() / COMPLETE).exists():  # not installed, or an install cut off
        # the first build installs Allure 3 from the npm registry: a registry that does not
        # answer in 10 s is the machine's network, not a fault of the report. Asked over
        # HTTP, not with `npm view`, which answers from npm's cache when offline.
        registry = (
            subprocess.run(
                [npm, "config", "get", "registry"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
            or "https://registry.npmjs.org/"
        )
        url = f"{registry.rstrip('/')}/allure/{ALLURE_VERSION}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                why = None if answer.status == 200 else f"HTTP {answer.status}"
        except (OSError, ValueError) as exc:
            why = str(exc)
        if why is not None:
            pytest.skip(
                f"the npm registry gave no answer in 10 s ({url}: {why}); Allure 3 not installed"
            )

    index = build(
        reports / "allure-results", reports / "allure-report", history=reports / "history.jsonl"
    )
    assert index.exists() and "<html" in index.read_text().lower()
    assert (reports / "history.jsonl").exists()  # trends across nightly runs
    assert _leaks(reports) == []


@pytest.mark.parametrize(
    ("target", "fault"),
    [
        ("inprocess", "typeerror"),
        ("inprocess", "card-crash"),
        ("pcscd", "typeerror"),
        ("reader", "typeerror"),
        ("reader", "kill"),
    ],
)
def test_no_pin_with_showlocals_when_a_run_fails_unexpectedly(
    tmp_path: Path, target: str, fault: str
) -> None:
    """``-l --tb=long -vv``: pytest would print every frame's locals and arguments; none of
    the card's secrets may reach the terminal, JUnit, Allure or the summary."""
    from harness.emulator import load_card_config, personalise

    out = tmp_path / "reports"
    env = {"PINLOOP_TEST_FAULT": fault, "PINLOOP_TEST_FAULT_ON": "0739"}
    args = ["-p", "tests.host_faults", "-l", "--tb=long", "-vv", "-k", "jpki-auth"]
    emu = None
    if target == "inprocess":
        args += ["--pinloop-target", "inprocess"]
    else:
        from tests.pcsc_lab import require_pcsc

        require_pcsc()
        args += ["--pinloop-target", target]
    if target == "reader":
        from harness.lab.pcscd import Pcscd
        from harness.targets import env_name
        from harness.transport.pcsc import wait_for_card
        from tests.pcsc_lab import EmulatorProcess

        daemon = Pcscd(tmp_path / "pcscd.log", slots=1)
        daemon.start()
        card = tmp_path / "card.yaml"
        card.write_text(CARD)
        emu = EmulatorProcess(personalise(load_card_config(card)), tmp_path, daemon.slots[0].url)
        wait_for_card(daemon.slots[0].reader, 15)
        args[-2:] = ["--pinloop-target", f"reader:^{daemon.slots[0].reader}$"]
        env |= {env_name("jpki-auth", JPKI): "0739", "PINLOOP_TEST_KILL_PID": str(emu.proc.pid)}
    try:
        proc = _pytest(out, *args, env=env)
    finally:
        if emu is not None:
            emu.stop()
            daemon.stop()
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-3000:]  # the run failed, and reports were written
    assert "injected fault" in text or "crashed" in text or "CardRemoved" in text, text[-3000:]
    (out / "stdout.txt").write_text(text)
    assert (out / "junit.xml").exists() and list((out / "allure-results").glob("*.json"))
    assert _leaks(out) == []


def test_a_full_allure_disk_loses_no_other_result(tmp_path: Path) -> None:
    """Allure results on a 16 KiB tmpfs that fills up mid-run: the run ends normally with
    every result in JUnit and the summary, and says once what Allure lost."""
    import os

    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)], check=True)
    try:
        out = tmp_path / "reports"
        card = tmp_path / "card.yaml"
        card.write_text(CARD)
        proc = run_pytest(
            str(ROOT / "scenarios"),
            "--pinloop-card",
            str(card),
            "--alluredir",
            str(mnt / "allure-results"),
            "--pinloop-reports",
            str(out),
            "--junitxml",
            str(out / "junit.xml"),
            "-k",
            "jpki-auth",
        )
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "INTERNALERROR" not in text
    assert text.count("Allure results could not be written") == 1, text[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["results"]) == 18
    assert (out / "junit.xml").read_text().count("<testcase") == 18
