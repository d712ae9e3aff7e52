"""JSON as ThingsBoard reads device payloads: Gson's ``JsonParser.parseString``, which parses leniently.

ThingsBoard parses every telemetry/attributes body (MQTT device and gateway API, the HTTP device API,
the telemetry controller's REST writes) with Gson in LENIENT mode, so a device sending ``{'t': 21}``
or ``{temperature: 21}`` is served there. The platform parses strictly first (the hot path is
untouched) and calls :func:`loads` here only when that fails.

What Gson 2.13 (ThingsBoard 4.3.1.3's) accepts in LENIENT mode, as recorded from the real parser
(tests/differential/expected/gson_lenient.json): single-quoted strings and names; unquoted names and
values (an unquoted value that is not a JSON number is a string: ``01``, ``+1``, ``NaN``); keywords
in any case (``True``, ``NULL``); ``=`` or ``=>`` for ``:``; ``;`` for ``,``; comments (``//``,
``#``, ``/* */``) before and inside the document; the ``)]}'`` prefix; missing array elements as
null (``[1,]`` → ``[1, null]``); raw control characters in strings; an empty document is null. Not
accepted: a trailing comma in an object, anything but whitespace after the document, bad escapes.

Numbers keep their spelling through :func:`tbspark.platform.values.loads` (``1e5`` LONG, ``1.0``
DOUBLE). Errors are ``ValueError`` with Gson's message. Cost: linear in the input, one pass.
"""

from __future__ import annotations

import re
from typing import Any

MAX_DEPTH = 200  # Gson has none (a deep document overflows its stack); ours is an error, not a crash

_WS = " \t\n\r"
# nextUnquotedValue stops at these (the first five only in lenient mode; same result for us).
_NOT_LITERAL = frozenset("/\\;#={}[]:, \t\f\r\n")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_ESCAPES = {"t": "\t", "b": "\b", "n": "\n", "r": "\r", "f": "\f", "'": "'", '"': '"', "\\": "\\", "/": "/",
            "\n": "\n"}
_NON_EXECUTE = ")]}'\n"


def loads(data: str | bytes | bytearray) -> Any:
    """Parse ``data`` as Gson's lenient ``JsonParser.parseString`` does. Raises ValueError."""
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8")
    try:
        return _Reader(data).document()
    except RecursionError:  # belt and braces: MAX_DEPTH keeps us well under Python's limit
        raise ValueError("JSON nested too deeply") from None


_MALFORMED = "com.google.gson.stream.MalformedJsonException: "
_SEE = "\nSee https://github.com/google/gson/blob/main/Troubleshooting.md#malformed-json"


class _Reader:
    __slots__ = ("s", "pos", "n", "path")

    def __init__(self, text: str) -> None:
        self.s = text[1:] if text.startswith("\ufeff") else text
        self.pos = 0
        self.n = len(self.s)
        self.path: list[list] = []  # Gson's path: ["o", name | None] or ["a", index] per open scope

    # -- errors and whitespace -------------------------------------------------------------------

    def where(self) -> str:
        line = self.s.count("\n", 0, self.pos) + 1
        column = self.pos - (self.s.rfind("\n", 0, self.pos) + 1) + 1
        path = "$" + "".join(f".{v if v is not None else ''}" if k == "o" else f"[{v}]" for k, v in self.path)
        return f"at line {line} column {column} path {path}"

    def error(self, what: str) -> ValueError:
        """Gson's JsonSyntaxException message (what ThingsBoard's HTTP device API answers with)."""
        return ValueError(f"{_MALFORMED}{what} {self.where()}{_SEE}")

    def eof(self) -> ValueError:
        return ValueError(f"java.io.EOFException: End of input {self.where()}")

    def next_non_ws(self, eof_ok: bool = False) -> str:
        """The next significant character (consumed), skipping whitespace and comments; '' at EOF."""
        s, n = self.s, self.n
        while self.pos < n:
            c = s[self.pos]
            self.pos += 1
            if c in _WS:
                continue
            if c == "/" and self.pos < n and s[self.pos] in "*/":
                if s[self.pos] == "*":
                    end = s.find("*/", self.pos + 1)
                    if end < 0:
                        self.pos = self.n - 1  # where Gson's skipTo("*/") gives up
                        raise self.error("Unterminated comment")
                    self.pos = end + 2
                else:
                    self._skip_line()
                continue
            if c == "#":
                self._skip_line()
                continue
            return c
        if eof_ok:
            return ""
        raise self.eof()

    def _skip_line(self) -> None:
        end = self.s.find("\n", self.pos)
        self.pos = self.n if end < 0 else end + 1

    # -- document and values ---------------------------------------------------------------------

    def document(self) -> Any:
        c = self.next_non_ws(eof_ok=True)
        if not c:
            return None  # Gson: an empty document is JsonNull
        self.pos -= 1
        if self.s.startswith(_NON_EXECUTE, self.pos):
            self.pos += len(_NON_EXECUTE)
            c = self.next_non_ws(eof_ok=True)
            if not c:
                return None
            self.pos -= 1
        value = self.value(self.next_non_ws(), 0)
        # After the document the reader is strict again: only plain whitespace may follow.
        rest = self.s[self.pos:]
        if rest.strip(_WS):
            self.pos += len(rest) - len(rest.lstrip(_WS)) + 1  # Gson reports after the character
            raise self.error("Use JsonReader.setStrictness(Strictness.LENIENT) to accept malformed JSON")
        return value

    def value(self, c: str, depth: int) -> Any:
        if c == "{":
            return self.obj(depth + 1)
        if c == "[":
            return self.arr(depth + 1)
        if c == '"' or c == "'":
            return self.string(c)
        self.pos -= 1
        return self.literal()

    def literal(self) -> Any:
        start = self.pos
        s, n = self.s, self.n
        end = start
        while end < n and s[end] not in _NOT_LITERAL:
            end += 1
        if end == start:
            raise self.error("Expected value")
        self.pos = end
        word = s[start:end]
        low = word.lower()
        if low == "true":
            return True
        if low == "false":
            return False
        if low == "null":
            return None
        if _NUMBER.fullmatch(word):  # Gson's peekNumber: no leading zeros, no '+', no bare '.'
            from tbspark.platform import values  # lazy: values calls this module on its failure path

            return values.loads(word)
        return word

    def string(self, quote: str) -> str:
        s, n = self.s, self.n
        out: list[str] = []
        while True:
            end = self.pos
            while end < n and s[end] != quote and s[end] != "\\":
                end += 1
            if end >= n:
                self.pos = end
                raise self.error("Unterminated string")
            out.append(s[self.pos:end])
            self.pos = end + 1
            if s[end] == quote:
                return "".join(out)
            if self.pos >= n:
                raise self.error("Unterminated escape sequence")
            e = s[self.pos]
            self.pos += 1
            if e == "u":
                hexits = s[self.pos:self.pos + 4]
                if len(hexits) < 4:
                    raise self.error("Unterminated escape sequence")
                if not all(h in "0123456789abcdefABCDEF" for h in hexits):
                    raise self.error("Malformed Unicode escape \\u" + hexits)
                out.append(chr(int(hexits, 16)))
                self.pos += 4
            elif e in _ESCAPES:
                out.append(_ESCAPES[e])
            else:
                raise self.error("Invalid escape sequence")

    def arr(self, depth: int) -> list:
        if depth > MAX_DEPTH:
            raise self.error("JSON nested too deeply")
        out: list = []
        scope = ["a", 0]
        self.path.append(scope)
        c = self.next_non_ws()
        if c == "]":
            self._close()
            return out
        while True:
            if c in ",;]":
                out.append(None)  # a missing element is null (the separator is not consumed)
                self.pos -= 1
            else:
                out.append(self.value(c, depth))
            scope[1] += 1
            c = self.next_non_ws()
            if c == "]":
                self._close()
                return out
            if c not in ",;":
                raise self.error("Unterminated array")
            c = self.next_non_ws()

    def obj(self, depth: int) -> dict:
        if depth > MAX_DEPTH:
            raise self.error("JSON nested too deeply")
        out: dict = {}
        scope = ["o", None]
        self.path.append(scope)
        c = self.next_non_ws()
        if c == "}":
            self._close()
            return out
        while True:
            if c == '"' or c == "'":
                name = self.string(c)
            elif c and c not in _NOT_LITERAL:
                self.pos -= 1
                start = self.pos
                while self.pos < self.n and self.s[self.pos] not in _NOT_LITERAL:
                    self.pos += 1
                name = self.s[start:self.pos]
            else:
                if c != "}":
                    self.pos -= 1  # Gson looks at it without consuming it
                raise self.error("Expected name")
            scope[1] = name
            c = self.next_non_ws()
            if c == "=":
                if self.pos < self.n and self.s[self.pos] == ">":
                    self.pos += 1
            elif c != ":":
                raise self.error("Expected ':'")
            out[name] = self.value(self.next_non_ws(), depth)
            c = self.next_non_ws()
            if c == "}":
                self._close()
                return out
            if c not in ",;":
                raise self.error("Unterminated object")
            c = self.next_non_ws()
            if c == "}":
                raise self.error("Expected name")

    def _close(self) -> None:
        self.path.pop()
