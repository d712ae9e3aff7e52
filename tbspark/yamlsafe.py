"""Bounded YAML loading for scenario files: whatever the bytes, one ``ScenarioError`` line
``<file>:<line>: <what> — <hint>`` or the document's data, in time and memory bounded by the limits
below. PyYAML alone is not enough: its safe loader expands aliases without limit (a nine-level
"billion laughs" file never finishes), recurses once per nesting level (a deep file is a
RecursionError, or overflows libyaml's C stack), and hands a 5,000-digit integer to ``int()``
(Python refuses it with a ValueError). So a first pass over the parser's events — no nodes built —
measures nesting, the size the document has once its aliases are expanded and the length of every
integer, and only a document within the limits is composed and constructed."""

from __future__ import annotations

from typing import Any

import yaml

from tbspark.errors import ScenarioError

MAX_BYTES = 256 * 1024  # a scenario is a hand-written file; the largest shipped one is ~2 KB
MAX_DEPTH = 32  # a scenario nests 6 levels deep
MAX_NODES = 150_000  # values with every alias expanded (a 256 KiB file has at most ~131,000 of its own)
MAX_INT_CHARS = 30  # an integer's text (the largest meaningful one, a seed, has 20 digits)

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~20x faster
_INT = "tag:yaml.org,2002:int"
_OPEN = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSE = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


class _Refused(Exception):
    def __init__(self, line: int, what: str, hint: str):
        super().__init__(what)
        self.line, self.what, self.hint = line, what, hint


def decode(raw: bytes, where: str) -> str:
    """The file's text (UTF-8, an optional BOM dropped), or an error naming the line of the first
    byte that is not UTF-8."""
    if len(raw) > MAX_BYTES:
        raise _error(where, 1, f"the file has {len(raw):,} bytes, more than a scenario may have "
                               f"({MAX_BYTES // 1024} KiB)",
                     "generate large fleets with count and a name pattern instead of listing them")
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise _error(where, line, f"byte 0x{raw[exc.start]:02x} at offset {exc.start} is not UTF-8",
                     "save the file as UTF-8") from None


def load(text: str, where: str) -> tuple[Any, yaml.Node | None]:
    """(data, root node) of a one-document YAML text; (None, None) for an empty one."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise _error(where, 1, f"the text is longer than a scenario may be ({MAX_BYTES // 1024} KiB)",
                     "generate large fleets with count and a name pattern instead of listing them")
    try:
        _prescan(text)
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except _Refused as exc:
        raise _error(where, exc.line, exc.what, exc.hint) from None
    except yaml.YAMLError as exc:
        raise _error(where, _line_of(exc, text), _problem(exc), _hint_for(exc)) from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        # not expected after the pre-scan; still one line, never a traceback
        raise _error(where, 1, f"cannot be read ({type(exc).__name__}: {_one_line(str(exc))})",
                     "simplify the file") from None
    return data, root


def _prescan(text: str) -> None:
    """Walk the parser's events once, refusing a document nested deeper than MAX_DEPTH, larger than
    MAX_NODES once its aliases are expanded, with an alias inside its own anchor, or with an integer
    longer than MAX_INT_CHARS. Costs one event parse (libyaml: ~0.1 s per MB)."""
    loader = _Loader(text)
    try:
        open_: list[tuple[str | None, int]] = []  # (anchor, expanded size at the start) per level
        sizes: dict[str, int] = {}  # anchor -> expanded size of its node (once complete)
        total = 0
        while loader.check_event():
            ev = loader.get_event()
            if isinstance(ev, yaml.ScalarEvent):
                total += 1
                if len(ev.value) > MAX_INT_CHARS and _is_int(loader, ev):
                    raise _Refused(ev.start_mark.line + 1,
                                   f"an integer of {len(ev.value):,} characters",
                                   f"integers may have at most {MAX_INT_CHARS} digits")
                if ev.anchor:
                    sizes[ev.anchor] = 1
            elif isinstance(ev, _OPEN):
                total += 1
                open_.append((ev.anchor, total))
                if len(open_) > MAX_DEPTH:
                    raise _Refused(ev.start_mark.line + 1, f"nested deeper than {MAX_DEPTH} levels",
                                   "a scenario nests a few levels; flatten the structure")
                if ev.anchor:
                    sizes.pop(ev.anchor, None)  # redefined: incomplete until its end
            elif isinstance(ev, _CLOSE):
                anchor, start = open_.pop()
                if anchor:
                    sizes[anchor] = total - start + 1
            elif isinstance(ev, yaml.AliasEvent):
                size = sizes.get(ev.anchor)
                if size is None:
                    what = (f"alias *{ev.anchor} refers to a node that contains it"
                            if any(a == ev.anchor for a, _ in open_) else f"alias *{ev.anchor} has no anchor")
                    raise _Refused(ev.start_mark.line + 1, what, "define the anchor (&name) before its aliases")
                total += size
            if total > MAX_NODES:
                raise _Refused(ev.start_mark.line + 1,
                               f"more than {MAX_NODES:,} values once its aliases are expanded",
                               "use fewer aliases (&anchor / *alias) or a smaller file")
    finally:
        loader.dispose()


def _is_int(loader: Any, ev: yaml.ScalarEvent) -> bool:
    if ev.tag not in (None, "!"):
        return ev.tag == _INT
    return ev.implicit[0] and loader.resolve(yaml.ScalarNode, ev.value, ev.implicit) == _INT


def _error(where: str, line: int, what: str, hint: str) -> ScenarioError:
    return ScenarioError(f"{where} cannot be read", [f"{where}:{line}: {what} — {hint}"])


def _line_of(exc: yaml.YAMLError, text: str) -> int:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return mark.line + 1
    position = getattr(exc, "position", None)  # ReaderError: a character (or byte) position
    if isinstance(position, int):
        return text[:position].count("\n") + 1
    return 1


def _problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character
        code = ord(char) if isinstance(char, str) else char
        return f"character #x{code:04x} is not allowed in YAML ({_one_line(exc.reason)})"
    problem = getattr(exc, "problem", None) or str(exc)
    if isinstance(exc, yaml.constructor.ConstructorError) and "could not determine a constructor" in problem:
        return f"tag {problem.split('tag ', 1)[-1]} is not allowed"
    context = getattr(exc, "context", None)
    return _one_line(f"{context}: {problem}" if context and isinstance(exc, yaml.MarkedYAMLError)
                     and not isinstance(exc, yaml.constructor.ConstructorError) else problem)


def _hint_for(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.constructor.ConstructorError):
        return "scenarios are plain YAML: mappings, lists, strings, numbers and booleans"
    if isinstance(exc, yaml.composer.ComposerError):
        return "a scenario file holds one YAML document; define each anchor before its aliases"
    return "fix the YAML syntax at that line"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
