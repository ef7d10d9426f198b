"""The per-reader summary: readers × scenarios with outcomes, and VERIFY latency per reader.

Written as ``summary.json`` (for machines) and ``summary.html`` (one self-contained page with
the latency histograms embedded) into the reports directory.
"""

from __future__ import annotations

import base64
import html
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import __version__


@dataclass
class Row:
    reader: str
    scenario: str
    rule: str
    outcome: str  # passed, failed, error, skipped
    verify_us: list[float] = field(default_factory=list)  # VERIFY with a value, at the transport
    query_us: list[float] = field(default_factory=list)  # status queries (VERIFY without data)
    overhead_us: list[float] = field(default_factory=list)  # the harness's, every APDU
    marginal: list[str] = field(default_factory=list)  # budgets met only marginally
    apdus: dict[str, int] = field(default_factory=dict)  # rows recorded, by kind
    unanswered: int = 0  # of those, APDUs whose transport raised (a cut, a lost connection)
    card_apdus: int | None = None  # APDUs the card received (the emulator counts them)
    #: card facts not established, as the card showed them (ObservationRecord as dicts)
    observations: list[dict[str, object]] = field(default_factory=list)


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return (
            {"p50_ms": values[0] / 1e3, "p95_ms": values[0] / 1e3, "p99_ms": values[0] / 1e3}
            if values
            else {}
        )
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(values) / 1e3, 4),
        "p95_ms": round(q[94] / 1e3, 4),
        "p99_ms": round(q[98] / 1e3, 4),
    }


class Summary:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def readers(self) -> list[str]:
        return sorted({r.reader for r in self.rows})

    def observed(self, reader: str) -> list[dict[str, object]]:
        """The card facts observed on ``reader``: each fact, kind and observation once, with
        the scenarios that showed it."""
        seen: dict[tuple[object, ...], dict[str, object]] = {}
        for r in self.rows:
            if r.reader != reader:
                continue
            for o in r.observations:
                key = (o["fact"], o["kind"], o["observed"])
                entry = seen.setdefault(key, {**o, "scenarios": []})
                scenarios = entry["scenarios"]
                assert isinstance(scenarios, list)
                if r.scenario not in scenarios:
                    scenarios.append(r.scenario)
        return sorted(seen.values(), key=lambda o: (str(o["fact"]), str(o["observed"])))

    def as_json(self) -> dict[str, object]:
        readers: dict[str, dict[str, object]] = {}
        for reader in self.readers():
            rows = [r for r in self.rows if r.reader == reader]
            samples = [us for r in rows for us in r.verify_us]
            queries = [us for r in rows for us in r.query_us]
            overhead = [us for r in rows for us in r.overhead_us]
            kinds: dict[str, int] = {}
            for r in rows:
                for kind, n in r.apdus.items():
                    kinds[kind] = kinds.get(kind, 0) + n
            counted = [r.card_apdus for r in rows if r.card_apdus is not None]
            readers[reader] = {
                "outcomes": {
                    o: sum(r.outcome == o for r in rows)
                    for o in ("passed", "failed", "error", "skipped")
                }
                | {"marginal": sum(bool(r.marginal) for r in rows)},
                # facts nobody has established, as this reader's card showed them: what the
                # lab may promote in its card profile (never a device defect)
                "card_facts_observed": self.observed(reader),
                "verify_latency": {"samples": len(samples), **percentiles(samples)},
                "status_query_latency": {"samples": len(queries), **percentiles(queries)},
                "apdus": {
                    "recorded": sum(kinds.values()),
                    "unanswered": sum(r.unanswered for r in rows),
                    "by_kind": dict(sorted(kinds.items())),
                    # None on a real card: only the emulator counts what it received
                    "card_received": sum(counted) if counted else None,
                },
                "harness_overhead_us": {
                    "apdus": len(overhead),
                    **(
                        {
                            "median": round(statistics.median(overhead), 2),
                            "p99": round(
                                statistics.quantiles(overhead, n=100, method="inclusive")[98], 2
                            ),
                        }
                        if len(overhead) >= 2
                        else {}
                    ),
                },
            }
        return {
            "pinloop": __version__,
            "readers": readers,
            "results": [
                {k: v for k, v in asdict(r).items() if not k.endswith("_us")}
                | {"verify_samples": len(r.verify_us)}
                for r in self.rows
            ],
        }

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        data = self.as_json()
        (directory / "summary.json").write_text(json.dumps(data, indent=1, ensure_ascii=False))
        (directory / "summary.html").write_text(self._html(data), encoding="utf-8")

    def _html(self, data: dict[str, object]) -> str:
        from harness.report.plots import latency_histogram

        readers = self.readers()
        esc = html.escape
        cell = {"passed": "#c8f0c8", "failed": "#f6b8b8", "error": "#f3d29b", "skipped": "#e4e4e4"}
        parts = [
            "<!doctype html><meta charset='utf-8'><title>pinloop summary</title>",
            "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
            "td,th{border:1px solid #999;padding:3px 8px;font-size:13px}"
            "th{background:#eee}</style>",
            f"<h1>pinloop summary</h1><p>pinloop {esc(__version__)}; "
            f"{len(self.rows)} results on {len(readers)} reader(s)</p>",
            "<h2>Readers</h2><table><tr><th>reader</th><th>passed</th><th>failed</th>"
            "<th>error</th><th>skipped</th><th>marginal</th><th>VERIFY samples</th>"
            "<th>p50 ms</th><th>p95 ms</th><th>p99 ms</th>"
            "<th>harness overhead per APDU, median / p99 µs</th></tr>",
        ]
        reader_data: dict[str, dict[str, dict[str, float]]] = data["readers"]  # type: ignore[assignment]
        for reader in readers:
            d = reader_data[reader]
            o, lat, ov = d["outcomes"], d["verify_latency"], d["harness_overhead_us"]
            parts.append(
                f"<tr><td>{esc(reader)}</td><td>{o['passed']:.0f}</td><td>{o['failed']:.0f}</td>"
                f"<td>{o['error']:.0f}</td><td>{o['skipped']:.0f}</td>"
                f"<td>{o['marginal']:.0f}</td><td>{lat.get('samples', 0):.0f}</td>"
                + "".join(
                    f"<td>{lat[k]:.3f}</td>" if k in lat else "<td>-</td>"
                    for k in ("p50_ms", "p95_ms", "p99_ms")
                )
                + (
                    f"<td>{ov['median']:.1f} / {ov['p99']:.1f}</td>"
                    if "p99" in ov
                    else "<td>-</td>"
                )
                + "</tr>"
            )
        parts.append(
            "</table><h2>Scenarios</h2><table><tr><th>scenario</th><th>rule</th>"
            + "".join(f"<th>{esc(r)}</th>" for r in readers)
            + "</tr>"
        )
        by_key: dict[tuple[str, str], Row] = {(r.scenario, r.reader): r for r in self.rows}
        for scenario in sorted({r.scenario for r in self.rows}):
            rule = next(r.rule for r in self.rows if r.scenario == scenario)
            parts.append(f"<tr><td>{esc(scenario)}</td><td>{esc(rule)}</td>")
            for reader in readers:
                row = by_key.get((scenario, reader))
                outcome = row.outcome if row else "-"
                shown, colour = outcome, cell.get(outcome, "#fff")
                if row is not None and row.marginal and outcome == "passed":
                    shown, colour = "passed (marginal)", "#f0f0a0"
                title = esc("; ".join(row.marginal)) if row is not None else ""
                parts.append(f"<td style='background:{colour}' title='{title}'>{esc(shown)}</td>")
            parts.append("</tr>")
        parts.append("</table>")
        observed = [(reader, o) for reader in readers for o in self.observed(reader)]
        if observed:
            parts.append(
                "<h2>Card facts observed</h2><p>Facts that no public source establishes, as "
                "the card showed them: observations, never device defects. A lab that has "
                "established one for its card may say so in its card profile.</p><table><tr>"
                "<th>reader</th><th>fact</th><th>confidence</th><th>what the card did</th>"
                "<th>the model says</th><th>scenarios</th></tr>"
            )
            for reader, seen in observed:
                kind = str(seen["kind"])
                did = str(seen["observed"]) if kind != "as-modelled" else "as modelled"
                scenarios = seen["scenarios"]
                assert isinstance(scenarios, list)
                parts.append(
                    f"<tr><td>{esc(reader)}</td><td>{esc(str(seen['fact']))}</td>"
                    f"<td>{esc(str(seen['confidence']))}</td><td>{esc(did)}</td>"
                    f"<td>{esc(str(seen['statement']))}</td>"
                    f"<td>{esc(', '.join(map(str, scenarios)))}</td></tr>"
                )
            parts.append("</table>")
        parts.append("<h2>VERIFY latency</h2>")
        series = {
            r: [us for row in self.rows if row.reader == r for us in row.verify_us] for r in readers
        }
        if any(series.values()):
            png = latency_histogram(series, "VERIFY latency per reader")
            parts.append(
                f"<img alt='VERIFY latency histogram' "
                f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            )
        return "\n".join(parts)
