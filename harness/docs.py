"""The tables in README.md and docs/ that are generated from the code.

``python -m harness.docs`` rewrites every generated block of the checkout's Markdown files;
``python -m harness.docs --check`` only says which are out of date (exit 1), as
``tests/test_docs.py`` does. A block is the text between

    <!-- generated: NAME (python -m harness.docs) -->
    <!-- end generated: NAME -->

and NAME is one of :data:`TABLES`: the step kinds and expectations of the scenario language
(its JSON Schema), the PIN sets, the capabilities targets declare and scenarios need, the
rules of the scenario library (``scenarios/*.pin.yaml``) and the emulated card's defect
profiles. What a table does not hold is written by hand around
it; the notes below give each step, expectation and PIN set its one line, and a step or set
the schema gains without a note here fails the check.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from harness.capabilities import EMULATED, MEANING, READER, TAG_REQUIRES, Capability
from harness.cards import card_profile
from harness.config import load_yaml
from harness.emulator import defects
from harness.scenario import load_scenarios, schema
from harness.steps import kinds

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- generated: {name} (python -m harness.docs) -->"
END = "<!-- end generated: {name} -->"
_BLOCK = re.compile(
    r"<!-- generated: (?P<name>[a-z-]+) \(python -m harness\.docs\) -->\n"
    r"(?P<body>.*?)"
    r"<!-- end generated: (?P=name) -->",
    re.DOTALL,
)

#: what each expectation means
EXPECT_NOTES = {
    "sw": "the status word: hex (quote it), `63Cx` any count, or a name (`refused`: any "
    "answer but a success)",
    "tries": "the counter, read with the free status query after the step; a `63 Cx` answer "
    "must agree with it",
    "blocked": "whether the PIN is blocked",
    "verified": "the card's verified state (emulated cards; not observable on a real one)",
    "identical": "every response of the step is the same",
    "length": "the response's data length",
    "signature": "the signature verifies against the card's certificate",
}

#: what each PIN set is
PIN_SET_NOTES = {
    "all": "every PIN object",
    "user": "the PINs a user sets (a card config gives them)",
    "changeable": "the PINs with a change command",
    "settable": "the PINs the window route re-initialises with a new value",
    "card-face": "the numbers derived from the card face (unblocked, never set)",
    "jpki": "the two JPKI PINs",
}

#: which steps need each capability (beyond the tags that stand for it, and ``requires:``)
NEEDED_BY = {
    Capability.EMULATOR: "",
    Capability.LITERAL_PINS: "a `{literal: …}` value",
    Capability.FRESH_PINS: "a `fresh` value; `tear` of `change` or `reinit`",
    Capability.BLOCK_PINS: "",
    Capability.TEST_REINIT: "`reinit`; `tear: {command: reinit}`",
    Capability.OBSERVE_VERIFIED: "nothing: without it `expect: {verified}` is noted as not checked",
    Capability.WRITE_POINTS: "`tear: {command}`",
    Capability.MID_COMMAND_CUT: "`tear: {delays_us}`",
    Capability.EXTENDED_APDU: "`read` of more than 256 bytes, an extended-length `apdu`, `sign`"
    " with `expect: {signature: valid}`",
    Capability.CONTACT: "",
    Capability.CONTACTLESS: "",
}

#: the library and these docs are for the My Number card
CARD = card_profile("jpki")


def _code(text: object) -> str:
    return f"`{text}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = list(head)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _shape(s: dict[str, Any]) -> str:
    """A short form of the values a schema accepts."""
    if "enum" in s:
        return "VALUE" if s["enum"] == schema.VALUE_WORDS else "|".join(map(str, s["enum"]))
    if "const" in s:
        return str(s["const"]).lower() if isinstance(s["const"], bool) else str(s["const"])
    if "oneOf" in s:
        return "|".join(dict.fromkeys(_shape(b) for b in s["oneOf"]))
    kind = s.get("type")
    if kind == "boolean":
        return "true|false"
    if kind in ("integer", "number"):
        return f"{s.get('minimum', '')}-{s.get('maximum', '')}".strip("-") or kind
    if kind == "array":
        return f"[{_shape(s['items'])}, …]"
    if kind == "object":
        props = s.get("properties", {})
        return "{" + ", ".join(f"{k}: {_shape(v)}" for k, v in props.items()) + "}"
    pattern = s.get("pattern", "")
    if pattern == "^[0-9A-Fa-f]{4}$":
        return "FID"
    if pattern.startswith("^([0-9A-Fa-f]{2})"):
        return "HEX"
    if pattern.startswith("^max"):
        return "max|max-N"
    if "PIN id" in s.get("description", ""):
        return "PIN"
    return '"…"'


def steps_table(root: Path, doc_dir: Path) -> str:
    undocumented = [a for a, kind in kinds().items() if not kind.doc]
    if undocumented:
        raise SystemExit(f"step kinds without their doc line (StepKind.doc): {undocumented}")
    rows = []
    for action, body in schema.steps(CARD).items():
        if body.get("type") == "object":
            required = set(body.get("required", ()))
            keys = ", ".join(
                f"{k}: {_shape(v)}" + ("" if k in required else "?")
                for k, v in body["properties"].items()
            )
            form = f"{action}: {{{keys}}}"
        else:
            form = f"{action}: {_shape(body)}"
        rows.append([_code(form), kinds()[action].doc])
    literal = "{literal: …}"
    legend = (
        f"\n`VALUE` is one of {', '.join(_code(w) for w in schema.VALUE_WORDS)} or "
        f"`{literal}`; `PIN` a PIN id or `{{pin}}`; `FID` four hex digits; `?` optional. "
        "Every step may also have `id`, `note` and `expect`.\n"
    )
    return _table(["step", "what it does"], rows) + legend


def expect_table(root: Path, doc_dir: Path) -> str:
    missing = set(schema.EXPECT["properties"]) ^ set(EXPECT_NOTES)
    if missing:
        raise SystemExit(f"harness/docs.py EXPECT_NOTES out of step with the schema: {missing}")
    shown = {
        "sw": "'9000'|63Cx|ok|blocked|wrong-length|denied|not-found|refused",
        "tries": "0-15|max|max-N|unchanged|one-less",
    }
    rows = [
        [_code(k), _code(shown.get(k) or _shape(v)), EXPECT_NOTES[k]]
        for k, v in schema.EXPECT["properties"].items()
    ]
    # the two patterns are written out above; fail if the schema's differ from them
    written = "^([0-9A-Fa-f]{4}|63C[xX]|ok|blocked|wrong-length|denied|not-found|refused)$"
    if written != schema.SW_PATTERN:
        raise SystemExit("harness/docs.py: update the sw values shown for schema.SW_PATTERN")
    if schema.TRIES_PATTERN != "^(max|max-[0-9]+|unchanged|one-less|[0-9]+)$":
        raise SystemExit("harness/docs.py: update the tries values shown for TRIES_PATTERN")
    return _table(["expect", "values", "what"], rows)


def pin_sets_table(root: Path, doc_dir: Path) -> str:
    missing = set(CARD.pin_sets) ^ set(PIN_SET_NOTES)
    if missing:
        raise SystemExit(f"harness/docs.py PIN_SET_NOTES out of step with the schema: {missing}")
    rows = [
        [_code(name), PIN_SET_NOTES[name], ", ".join(_code(p) for p in pins)]
        for name, pins in CARD.pin_sets.items()
    ]
    return _table(["set", "what", "PIN ids"], rows)


def capabilities_table(root: Path, doc_dir: Path) -> str:
    missing = set(Capability) ^ set(NEEDED_BY) | set(Capability) ^ set(MEANING)
    if missing:
        raise SystemExit(f"harness/docs.py NEEDED_BY or capabilities.MEANING lack {missing}")
    from harness.targets.reader_profile import BUILTIN_DIR, load_folder

    built_in = load_folder(BUILTIN_DIR, builtin=True)
    rows = []
    for c in Capability:
        if c in READER and c not in EMULATED:
            real = "its reader profile"
            shipped = "yes" if all(c in p.capabilities for p in built_in) else "no"
            emulated = f"its reader profile (built-in ones: {shipped})"
        else:
            emulated = "yes" if c in EMULATED else "no"
            real = "its reader profile" if c in READER else "no"
        if c is Capability.BLOCK_PINS:
            real = "with `--pinloop-destructive-reader`"
        tags = [f"tag `{t}`" for t, needs in TAG_REQUIRES.items() if c in needs]
        needed = "; ".join([*tags, *([NEEDED_BY[c]] if NEEDED_BY[c] else [])]) or "`requires:`"
        rows.append([_code(c.value), MEANING[c], emulated, real, needed])
    return _table(
        ["capability", "what", "emulated targets", "`reader:`", "a scenario needs it for"], rows
    )


def _pins_of(path: Path, doc: dict[str, Any]) -> str:
    pins = doc.get("for_each", {}).get("pin")
    if isinstance(pins, str):
        return f"`{pins}` ({len(CARD.pin_sets[pins])})"
    if pins:
        return ", ".join(_code(p) for p in pins)
    used = sorted(frozenset().union(*(s.pins for s in load_scenarios(path, CARD))))
    return ", ".join(_code(p) for p in used) or "—"


def rules_table(root: Path, doc_dir: Path) -> str:
    rows = []
    for path in sorted((root / "scenarios").glob("*.pin.yaml")):
        doc = load_yaml(path).data
        what = str(doc["name"])
        if doc.get("description"):
            what += ". " + str(doc["description"]).strip()
        href = Path(os.path.relpath(path, doc_dir)).as_posix()
        link = f"[{path.name.removesuffix('.pin.yaml')}]({href})"
        tags = ", ".join(doc.get("tags", ())) or "—"
        rows.append((str(doc["rule"]), link, what, _pins_of(path, doc), tags))
    rows.sort(key=lambda r: (r[0], r[1]))
    return _table(
        ["rule", "file", "what it checks", "for", "tags"],
        [[_code(r[0]), *r[1:]] for r in rows],
    )


def facts_table(root: Path, doc_dir: Path) -> str:
    """Every fact of the card profile, how far it is established, and the library's rules
    whose checks rest on it (from the scenarios' steps)."""
    resting: dict[str, set[str]] = {}
    for path in sorted((root / "scenarios").glob("*.pin.yaml")):
        for scenario in load_scenarios(path, CARD):
            for fact_id in scenario.facts:
                resting.setdefault(fact_id, set()).add(scenario.rule)
    rows = []
    for fact in CARD.all_facts:
        rules = ", ".join(_code(r) for r in sorted(resting.get(fact.id, ()))) or "—"
        how = f"**{fact.confidence.label}**" + (f"; floor: `{fact.floor}`" if fact.floor else "")
        rows.append([_code(fact.id), fact.statement, how, fact.source, rules])
    return _table(
        ["fact", "what the card does", "confidence", "source", "rules resting on it"], rows
    )


def _field_notes() -> dict[str, str]:
    """The ``#:`` comments above each field of :class:`DefectProfile`, by field name."""
    notes: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(defects.DefectProfile).splitlines():
        text = line.strip()
        if text.startswith("#:"):
            pending.append(text[2:].strip())
        elif m := re.match(r"(\w+): ", text):
            if pending:
                notes[m.group(1)] = " ".join(pending)
            pending = []
        else:
            pending = []
    return notes


def defects_table(root: Path, doc_dir: Path) -> str:
    notes = _field_notes()
    base = defects.DefectProfile()
    rows = []
    for name, profile in defects.PROFILES.items():
        changed = [
            f
            for f in profile.__dataclass_fields__
            if f != "name" and getattr(profile, f) != getattr(base, f)
        ]
        what = "; ".join(notes[f] for f in changed if f in notes) or "no defect (the default)"
        params = ", ".join(
            f"`{f}` (default {getattr(profile, f):g}, at most {defects.TUNABLE[f]:g})"
            for f in changed
            if f in defects.TUNABLE
        )
        rows.append([_code(name), what, params or "—"])
    return _table(["profile", "what the card does wrong", "parameters"], rows)


TABLES: dict[str, Callable[[Path, Path], str]] = {
    "steps": steps_table,
    "expect": expect_table,
    "pin-sets": pin_sets_table,
    "capabilities": capabilities_table,
    "rules": rules_table,
    "defects": defects_table,
    "card-facts": facts_table,
}


def documents(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def render(text: str, root: Path = ROOT, doc_dir: Path | None = None) -> str:
    """``text`` (a document in ``doc_dir``) with every generated block rendered afresh."""

    def block(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise SystemExit(f"unknown generated block {name!r}; known: {', '.join(TABLES)}")
        table = TABLES[name](root, doc_dir or root / "docs")
        return BEGIN.format(name=name) + "\n" + table + END.format(name=name)

    return _BLOCK.sub(block, text)


def stale(root: Path = ROOT) -> list[Path]:
    """The documents whose generated blocks are not what the code gives now."""
    return [p for p in documents(root) if _fresh(p, root) != p.read_text("utf-8")]


def _fresh(path: Path, root: Path) -> str:
    return render(path.read_text("utf-8"), root, path.parent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout (default: this one)")
    args = parser.parse_args(argv)
    root: Path = args.root
    if not (root / "docs").is_dir():
        print(f"{root}: no docs/ folder (run this from a checkout)", file=sys.stderr)
        return 2
    out_of_date = stale(root)
    for path in out_of_date:
        rel = path.relative_to(root)
        if args.check:
            print(f"{rel}: generated tables out of date; run: python -m harness.docs")
        else:
            path.write_text(_fresh(path, root), "utf-8")
            print(f"{rel}: updated")
    return 1 if args.check and out_of_date else 0


if __name__ == "__main__":
    raise SystemExit(main())
