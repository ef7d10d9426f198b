"""Load YAML with source positions and validate it against a JSON Schema."""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, SequenceNode
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scanner import RoundTripScanner, ScannerError

from harness.errors import ConfigError, SourceLocation, shorten

_SNIPPET_CONTEXT = 1
#: a snippet line longer than this is cut (the error stays one screen)
_SNIPPET_WIDTH = 160
#: the nodes that aliases (``*name``) may repeat in one file, all aliases together. A few
#: hundred bytes of nested aliases (a "billion laughs") expand to 10^9 nodes: gigabytes in
#: memory, and every walk of the data (the schema, the loader) takes as long. The project's
#: own files use no aliases.
ALIAS_BUDGET = 10_000
#: levels of flow collections (``[`` and ``{``) in one another. ruamel's scanner costs the
#: open levels for every token (6 KB of ``[`` took 4 s), and its parser recurses per level.
MAX_FLOW_DEPTH = 100


@dataclass(frozen=True)
class LoadedYAML:
    """A parsed document, its source text, and where it came from."""

    path: str
    text: str
    data: Any

    @functools.cached_property
    def lines(self) -> list[str]:
        """The text's lines, split once (a loader asks for a snippet of every step)."""
        return self.text.splitlines()

    def snippet(self, line: int | None) -> str | None:
        """Lines around ``line`` (1-based), the line itself marked with ``>``."""
        if line is None:
            return None
        lines = self.lines
        lo = max(1, line - _SNIPPET_CONTEXT)
        hi = min(len(lines), line + _SNIPPET_CONTEXT)
        return "\n".join(
            f"{'>' if n == line else ' '}{n:4d}  {shorten(lines[n - 1], _SNIPPET_WIDTH)}"
            for n in range(lo, hi + 1)
        )

    def error(
        self, message: str, path: Sequence[str | int] = (), *, expected: str | None = None
    ) -> ConfigError:
        """A :class:`ConfigError` pointing at the node found by following ``path``."""
        loc = location_of(self.data, path, self.path)
        return ConfigError(message, loc, snippet=self.snippet(loc.line), expected=expected)


def _code(c: object) -> int:
    return ord(c) if isinstance(c, str) else int(c)  # type: ignore[call-overload]


class _TooDeepError(ScannerError):
    """Flow collections nested deeper than :data:`MAX_FLOW_DEPTH`."""


class _DepthScanner(RoundTripScanner):
    """ruamel's round-trip scanner, refusing flow collections nested too deeply."""

    def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:
        if len(self.flow_context) >= MAX_FLOW_DEPTH:
            raise _TooDeepError(
                None,
                None,
                f"nested too deeply (more than {MAX_FLOW_DEPTH} levels of [ ] and {{ }})",
                self.reader.get_mark(),
            )
        super().fetch_flow_collection_start(TokenClass, to_push)


class _AliasBudgetError(ComposerError):
    """Aliases that repeat too much, or a node that contains an alias of itself."""


class _BudgetComposer(Composer):
    """ruamel's composer, charging every alias with the size of the node it repeats.

    An alias makes the loaded data share the node, but everything that walks the data (the
    schema's validator, the loaders, error messages) sees it expanded. Sizes are counted on
    the composed nodes, each node once, so the count itself is linear in the file.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader=loader)
        self._sizes: dict[int, int] = {}
        self._repeated = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.parser.check_event(AliasEvent):
            event = self.parser.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:
                self._charge(event.anchor, node, event.start_mark)
        return super().compose_node(parent, index)

    def _charge(self, anchor: str, node: Any, mark: Any) -> None:
        if isinstance(node, (MappingNode, SequenceNode)) and node.end_mark is None:
            raise _AliasBudgetError(
                None, None, f"alias *{anchor} is inside the node it names (a recursive value)", mark
            )
        size = self._size(node)
        self._repeated += size
        if self._repeated > ALIAS_BUDGET:
            raise _AliasBudgetError(
                None,
                None,
                f"aliases repeat more than {ALIAS_BUDGET} nodes (*{anchor} repeats {size}, "
                f"{self._repeated} in all so far)",
                mark,
            )

    def _size(self, root: Any) -> int:
        """Nodes in ``root`` with aliases expanded (iterative: nesting may be deep)."""
        sizes = self._sizes
        stack: list[tuple[Any, bool]] = [(root, False)]
        while stack:
            node, children_done = stack.pop()
            if id(node) in sizes:
                continue
            children = _children(node)
            if children_done:
                sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            else:
                stack.append((node, True))
                stack.extend((c, False) for c in children if id(c) not in sizes)
        return sizes[id(root)]


def _children(node: Any) -> list[Any]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


class _BadValueError(ConstructorError):
    """A scalar the constructor could not turn into its value."""


class _Constructor(RoundTripConstructor):
    """ruamel's round-trip constructor; a value it cannot convert (an integer of 5000 digits,
    a date like 2001-02-30) is an error at its line, not a ValueError from deep inside."""

    def construct_non_recursive_object(self, node: Any, tag: str | None = None) -> Any:
        try:
            return super().construct_non_recursive_object(node, tag)
        except (ValueError, TypeError, OverflowError) as exc:
            # int("1" * 5000) explains sys.set_int_max_str_digits(): not for a config's author
            why = str(exc).split(";")[0]
            raise _BadValueError(
                None, None, f"cannot read this value: {why}", node.start_mark
            ) from None


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """CPython's cyclic garbage collector off while ruamel builds a tree: it allocates objects
    per token, each full collection walks every live one, and at 100,000 steps the collector
    took a third of the parse (n log n in all). What the parse allocates is the tree it
    returns, not garbage: the peak memory is the same without the collector."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_yaml(path: str | Path) -> LoadedYAML:
    """Parse ``path``; syntax errors and duplicate keys become :class:`ConfigError`."""
    p = Path(path)
    try:
        if not stat.S_ISREG(p.stat().st_mode):  # a FIFO would block the read for ever
            raise ConfigError("not a regular file", SourceLocation(str(p)))
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", SourceLocation(str(p))) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read file: {exc}", SourceLocation(str(p))) from None
    yaml = YAML(typ="rt")
    yaml.Scanner = _DepthScanner
    yaml.Composer = _BudgetComposer
    yaml.Constructor = _Constructor
    try:
        with _collector_paused():
            data = yaml.load(text)
    except (_TooDeepError, _AliasBudgetError, _BadValueError) as exc:
        line = exc.problem_mark.line + 1
        raise ConfigError(
            f"YAML: {exc.problem}",
            SourceLocation(str(p), line, exc.problem_mark.column + 1),
            snippet=LoadedYAML(str(p), text, None).snippet(line),
            expected=(
                "the values written out, or aliases that repeat a few nodes"
                if isinstance(exc, _AliasBudgetError)
                else None
            ),
        ) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        doc = LoadedYAML(str(p), text, None)
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(
            f"YAML syntax: {problem}", SourceLocation(str(p), line, col), snippet=doc.snippet(line)
        ) from None
    except ReaderError as exc:  # found by fuzzing: a control character in the file
        line = text.count("\n", 0, max(0, exc.position)) + 1
        doc = LoadedYAML(str(p), text, None)
        raise ConfigError(
            f"YAML: character U+{_code(exc.character):04X} is not allowed in a YAML file",
            SourceLocation(str(p), line),
            snippet=doc.snippet(line),
        ) from None
    except RecursionError:  # found by fuzzing: [[[[… a few hundred deep
        raise ConfigError("YAML: nested too deeply", SourceLocation(str(p), 1)) from None
    except YAMLError as exc:
        raise ConfigError(f"YAML: {exc}".splitlines()[0], SourceLocation(str(p), 1)) from None
    return LoadedYAML(str(p), text, data)


def location_of(data: Any, path: Sequence[str | int], filename: str) -> SourceLocation:
    """The deepest source position known along ``path`` inside a ruamel round-trip tree."""
    line: int | None = None
    col: int | None = None
    node = data
    if hasattr(node, "lc"):
        line, col = node.lc.line + 1, node.lc.col + 1
    for key in path:
        lc = getattr(node, "lc", None)
        try:
            if isinstance(node, Mapping) and key in node:
                if lc is not None:
                    pos = (
                        lc.value(key) if not isinstance(node[key], (Mapping, list)) else lc.key(key)
                    )
                    line, col = pos[0] + 1, pos[1] + 1
                node = node[key]
            elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
                if lc is not None:
                    pos = lc.item(key)
                    line, col = pos[0] + 1, pos[1] + 1
                node = node[key]
            else:
                break
        except (KeyError, IndexError, TypeError):
            break
    return SourceLocation(filename, line, col)


def _describe_expected(error: jsonschema.ValidationError) -> str | None:
    """What was expected, in the words of the schema: the nearest description up the
    error's chain (a oneOf's own description beats whichever branch failed), else the enum,
    the pattern or the type of the failing node."""
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if str(error.validator) == "additionalProperties" and "properties" in schema:
        return "only these keys: " + ", ".join(schema["properties"])
    e: jsonschema.ValidationError | None = error
    while e is not None:
        if isinstance(e.schema, Mapping) and "description" in e.schema:
            return str(e.schema["description"])
        e = e.parent if isinstance(e.parent, jsonschema.ValidationError) else None
    if str(error.validator) == "maxItems":
        return f"at most {schema['maxItems']} items"
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    if "pattern" in schema:
        return f"a string matching {schema['pattern']}"
    if "type" in schema:
        return f"a value of type {schema['type']}"
    return None


def _error_path(error: jsonschema.ValidationError) -> list[str | int]:
    """Where the error is; for an unexpected key, the key itself rather than its mapping."""
    where = list(error.absolute_path)
    if str(error.validator) == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
        extra = [k for k in error.instance if k not in allowed]
        if extra:
            where.append(extra[0])
    return where


def validate(doc: LoadedYAML, schema: Mapping[str, Any]) -> None:
    """Validate ``doc`` against ``schema``; the first (most relevant) error is raised."""
    validate_at(doc, (), schema)


def node_at(doc: LoadedYAML, path: Sequence[str | int]) -> Any:
    node = doc.data
    for key in path:
        node = node[key]
    return node


def _is_integer(checker: Any, instance: object) -> bool:
    """An int, not a bool, and not a float either: jsonschema takes 3.0 as an integer, and
    ``repeat: 2.0`` or ``tries: 3.0`` reached code that needs an int."""
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(checker: Any, instance: object) -> bool:
    """An int or a finite float: ``.nan`` passes every ``minimum`` and ``maximum`` (each
    comparison with it is false), ``.inf`` is no count or duration either."""
    if isinstance(instance, bool):
        return False
    return isinstance(instance, int) or (isinstance(instance, float) and math.isfinite(instance))


#: how long an array with ``uniqueItems`` and no ``maxItems`` may be
_UNIQUE_MAX = 1000
_BUILTIN_UNIQUE = jsonschema.Draft202012Validator.VALIDATORS["uniqueItems"]


def _unique_items(
    validator: Any, unique: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """jsonschema's ``uniqueItems``, skipped for an array longer than its ``maxItems`` (that
    is the error then): items that do not sort, mappings, are compared pairwise, and 30,000
    of them took minutes."""
    if isinstance(instance, list) and len(instance) > schema.get("maxItems", _UNIQUE_MAX):
        return
    yield from _BUILTIN_UNIQUE(validator, unique, instance, schema)


#: JSON Schema 2020-12 as every schema of the project means it
Validator: type[jsonschema.Draft202012Validator]
Validator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator,
    validators={"uniqueItems": _unique_items},
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}
    ),
)


#: validators by schema, the schema kept with its validator (so that its id is not reused)
_VALIDATORS: dict[int, tuple[Mapping[str, Any], jsonschema.Draft202012Validator]] = {}


def _validator(schema: Mapping[str, Any]) -> jsonschema.Draft202012Validator:
    """One validator per schema object: making one per call cost a scenario of 10,000 steps
    a second."""
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        if len(_VALIDATORS) > 256:
            _VALIDATORS.clear()
        cached = _VALIDATORS[id(schema)] = (schema, Validator(schema))
    return cached[1]


def validate_at(doc: LoadedYAML, path: Sequence[str | int], schema: Mapping[str, Any]) -> None:
    """Validate the node at ``path`` against ``schema``; errors point into the file."""
    validator = _validator(schema)
    errors = list(validator.iter_errors(node_at(doc, path)))
    if not errors:
        return
    best = jsonschema.exceptions.best_match(errors)
    assert best is not None
    where = [*path, *_error_path(best)]
    field = ".".join(str(p) for p in where) or "(top level)"
    raise doc.error(f"{field}: {best.message}", where, expected=_describe_expected(best))


def load_validated(path: str | Path, schema: Mapping[str, Any]) -> LoadedYAML:
    """:func:`load_yaml` then JSON-Schema validation."""
    doc = load_yaml(path)
    validate(doc, schema)
    return doc
