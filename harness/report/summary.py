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
    verify_us: list[float] = field(default_factory=list)


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

    def as_json(self) -> dict[str, object]:
        readers = {}
        for reader in self.readers():
            rows = [r for r in self.rows if r.reader == reader]
            samples = [us for r in rows for us in r.verify_us]
            readers[reader] = {
                "outcomes": {
                    o: sum(r.outcome == o for r in rows)
                    for o in ("passed", "failed", "error", "skipped")
                },
                "verify_latency": {"samples": len(samples), **percentiles(samples)},
            }
        return {
            "pinloop": __version__,
            "readers": readers,
            "results": [
                {k: v for k, v in asdict(r).items() if k != "verify_us"}
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
            "<th>error</th><th>skipped</th><th>VERIFY samples</th><th>p50 ms</th>"
            "<th>p95 ms</th><th>p99 ms</th></tr>",
        ]
        reader_data: dict[str, dict[str, dict[str, float]]] = data["readers"]  # type: ignore[assignment]
        for reader in readers:
            d = reader_data[reader]
            o, lat = d["outcomes"], d["verify_latency"]
            parts.append(
                f"<tr><td>{esc(reader)}</td><td>{o['passed']:.0f}</td><td>{o['failed']:.0f}</td>"
                f"<td>{o['error']:.0f}</td><td>{o['skipped']:.0f}</td>"
                f"<td>{lat.get('samples', 0):.0f}</td>"
                + "".join(
                    f"<td>{lat[k]:.3f}</td>" if k in lat else "<td>-</td>"
                    for k in ("p50_ms", "p95_ms", "p99_ms")
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
                parts.append(
                    f"<td style='background:{cell.get(outcome, '#fff')}'>{esc(outcome)}</td>"
                )
            parts.append("</tr>")
        parts.append("</table><h2>VERIFY latency</h2>")
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
