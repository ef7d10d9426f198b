"""Latency plots as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def latency_histogram(series: Mapping[str, Sequence[float]], title: str) -> bytes:
    """One histogram per series (µs), overlaid, with each series' median marked."""
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    try:
        for label, values in series.items():
            if not values:
                continue
            ax.hist(values, bins=40, alpha=0.55, label=f"{label} (n={len(values)})")
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
    finally:
        plt.close(fig)
