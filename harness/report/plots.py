"""Latency plots as PNG bytes (matplotlib, no display needed), drawn where the files are
written, at the end of the session.

A scenario item does not draw: matplotlib costs ~0.5 s to import and 0.15-0.3 s a figure,
in every process that draws. The item attaches a *plot request* instead: a PNG attachment
whose bytes are, for now, the figure's data as JSON (:func:`plot_request`). The process that
writes the session's files (the only one, or the xdist controller) draws every request in
the Allure results folder in place (:func:`draw_requests`), once all items have run.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: how a plot request starts (a PNG starts with 89 50 4E 47)
_REQUEST = b'{"pinloop_plot": 1,'


def latency_histogram(series: Mapping[str, Sequence[float]], title: str) -> bytes:
    """One histogram per series (µs), overlaid, with each series' median marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for label, values in series.items():
        if not values:
            continue
        # one filled outline per series, not 40 bars: the same picture, drawn 2x faster
        ax.hist(
            values,
            bins=40,
            alpha=0.55,
            histtype="stepfilled",
            label=f"{label} (n={len(values)})",
        )
        median = sorted(values)[len(values) // 2]
        ax.axvline(median, linestyle="--", linewidth=1)
    ax.set_xlabel("latency per APDU (µs)")
    ax.set_ylabel("APDUs")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def plot_request(series: Mapping[str, Sequence[float]], title: str) -> bytes:
    """What :func:`draw_requests` turns into ``latency_histogram(series, title)``."""
    body = {"title": title, "series": {k: list(vs) for k, vs in series.items()}}
    return _REQUEST + json.dumps(body, ensure_ascii=False)[1:].encode()


def pending_requests(folder: Path) -> list[Path]:
    """The PNG attachments in ``folder`` that are still plot requests."""
    found = []
    for path in sorted(folder.glob("*-attachment.png")):
        try:
            with path.open("rb") as f:
                if f.read(len(_REQUEST)) == _REQUEST:
                    found.append(path)
        except OSError:
            continue
    return found


def draw_requests(folder: Path) -> int:
    """Draw every plot request in an Allure results folder in place; returns how many."""
    paths = pending_requests(folder)
    for path in paths:
        body: dict[str, Any] = json.loads(path.read_bytes())
        png = latency_histogram(body["series"], body["title"])
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(png)
        os.replace(tmp, path)
    return len(paths)
