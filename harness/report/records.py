"""The JSON result record of each reader: ``records/<reader>.json`` in the reports directory.

One file per reader (as reports name it), holding the reader's identity as the run saw it and
the record of every scenario item run on it (:class:`harness.run.record.ScenarioRecord`: each
step's APDUs with status words and times, PINs masked; the counters read; verdicts,
measurements, marginal notes), sorted by scenario and parameters. Two runs' files (two
readers, two firmware versions) diff line by line: ``diff -u a.json b.json``, or a JSON tool
that ignores the ``*_us`` and ``*_ms`` figures.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness import __version__

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_name(reader: str) -> str:
    """A file name for a reader's name (``Virtual PCD 00 00`` → ``Virtual-PCD-00-00.json``)."""
    stem = _UNSAFE.sub("-", reader).strip("-.") or "reader"
    return stem[:120] + ".json"


def by_reader(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        out.setdefault(str(record["reader"]), []).append(record)
    for rows in out.values():
        rows.sort(key=lambda r: (r["scenario"], sorted(r.get("params", {}).items()), r["target"]))
    return out


def write_records(
    directory: Path,
    records: list[dict[str, Any]],
    readers: dict[str, dict[str, str]],
) -> list[Path]:
    """One file per reader; ``readers``: the identities the run collected (by target|name)."""
    written: list[Path] = []
    grouped = by_reader(records)
    if not grouped:
        return written
    directory.mkdir(parents=True, exist_ok=True)
    for reader, rows in sorted(grouped.items()):
        identity = [dict(r) for r in readers.values() if r.get("name") == reader]
        data = {
            "pinloop": __version__,
            "reader": reader,
            "identity": identity,
            "outcomes": {
                o: sum(r["outcome"] == o for r in rows)
                for o in ("passed", "failed", "error", "skipped")
            },
            "scenarios": list(rows),
        }
        path = directory / file_name(reader)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written
