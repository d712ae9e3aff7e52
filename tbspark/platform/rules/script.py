"""ThingsBoard's rule-node scripts on an embedded V8 (mini-racer), with a time limit.

The script body is wrapped as ThingsBoard's RuleNodeScriptFactory wraps it: a function of
``(msg, metadata, msgType)`` whose result goes through ``JSON.stringify``. A batch of messages is one
call into V8 (a call costs ~70 µs, a message inside a batch ~1.5 µs); V8 runs synchronously, so calls
run on one worker thread, off the event loop. Every call has a time limit: when a batch overruns it,
its messages are run one by one, each with the limit (and if none overran, later calls carry fewer
messages); as in ThingsBoard's script invoke service,
a script that timed out (or did not compile) ``MAX_ERRORS`` times is blocked for ``BLOCK_S``, its
messages failing at once instead of costing the limit each; after the block, one more time-out blocks
it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

SCRIPT_TIMEOUT_MS = 1000     # per call into V8 (ThingsBoard: remote js max_exec_requests_timeout 2000)
MAX_ERRORS = 3               # js.local.max_errors
BLOCK_S = 60                 # js.local.max_black_list_duration_sec
MAX_MEMORY = 128 * 1024 * 1024
CHUNK = 256                  # messages per call into V8

_now = time.monotonic  # the clock of the blocks (a name of its own: tests move it forward)
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()
_v8_loop: asyncio.AbstractEventLoop | None = None


def executor() -> ThreadPoolExecutor:
    """The one thread V8 calls run on (shared by every script node of the process)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tb-script")
        return _executor


def v8_loop() -> asyncio.AbstractEventLoop:
    """The asyncio loop mini-racer delivers V8's callbacks on: one for every context, never closed,
    so a callback V8 sends after a context was closed (e.g. a terminated script's) finds it running
    (by default each context starts a loop of its own and closes it with the context)."""
    global _v8_loop
    with _executor_lock:
        if _v8_loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="tb-script-v8", daemon=True).start()
            _v8_loop = loop
        return _v8_loop


def wrap(body: str, argnames: tuple[str, str, str] = ("msg", "metadata", "msgType")) -> str:
    """The batch entry point ``__tbBatch(json)`` around ThingsBoard's wrapper of ``body``.
    Returns per message ``[0, <JSON text of the result or null>]`` or ``[1, <error text>]``."""
    a, b, c = argnames
    return (
        "var __tbBatch = (function () {\n"
        "function __tbFunc(msgStr, metadataStr, msgType) { "
        "var msg = JSON.parse(msgStr); var metadata = JSON.parse(metadataStr); "
        "return JSON.stringify(ruleNodeFunc(msg, metadata, msgType)); "
        f"function ruleNodeFunc({a}, {b}, {c}) {{{body}\n}}\n}}\n"
        "return function (a) { var out = new Array(a.length);"
        " for (var i = 0; i < a.length; i++) {"
        "  try { var r = __tbFunc(a[i][0], a[i][1], a[i][2]); out[i] = [0, r === undefined ? null : r]; }"
        "  catch (e) { out[i] = [1, (e && e.name ? e.name + ': ' + e.message : String(e))]; } }"
        " return JSON.stringify(out); };\n"
        "})();\n"
    )


class Script:
    """One node's compiled script; ``await run(args)`` with ``args`` = [(data, metadata, type)] as
    JSON text, text, text. Returns per message ``(True, result value)`` or ``(False, error text)``."""

    def __init__(self, body: str, lang: str, timeout_ms: int = SCRIPT_TIMEOUT_MS):
        self.body = body
        self.lang = lang
        self.timeout_ms = timeout_ms
        self._ctx = None
        self._ctx_maker = None
        self._compile_error: str | None = None
        self._errors = 0
        self._blocked_until = 0.0
        self.timeouts = 0
        self.chunk = CHUNK  # messages per call; shrinks for a script too slow for a whole chunk

    # Everything below ``run`` executes on the script thread.

    def _context(self):
        if self._ctx is None and self._compile_error is None:
            from py_mini_racer import JSEvalException, mini_racer

            maker = mini_racer(v8_loop())
            ctx = maker.__enter__()
            try:
                ctx.eval(wrap(self.body), timeout=self.timeout_ms, max_memory=MAX_MEMORY)
            except JSEvalException as exc:
                reason = _first_line(exc)
                if self.lang == "TBEL":
                    reason = (f"TBEL script is not valid JavaScript, and the embedded platform runs TBEL on "
                              f"its JavaScript engine: {reason}")
                else:
                    reason = f"script does not compile: {reason}"
                self._compile_error = reason
                self._errors = MAX_ERRORS
                maker.__exit__(None, None, None)
                log.warning("rule node script: %s", reason)
                return None
            self._ctx, self._ctx_maker = ctx, maker
        return self._ctx

    def _call(self, items: list) -> list:
        from py_mini_racer import JSTimeoutException, JSEvalException, JSOOMException

        arg = json.dumps(items)  # ASCII: lone surrogates and U+2028 stay valid JS source
        try:
            # JSON text is a JavaScript array literal: no second parse inside V8
            raw = self._ctx.eval(f"__tbBatch({arg})", timeout=self.timeout_ms, max_memory=MAX_MEMORY)
        except JSTimeoutException:
            raise
        except JSOOMException:
            return [(False, "script ran out of memory")] * len(items)
        except JSEvalException as exc:  # e.g. the script replaced JSON: fail these messages
            return [(False, _first_line(exc))] * len(items)
        return [(True, r) if flag == 0 else (False, r) for flag, r in json.loads(raw)]

    def _blocked(self) -> str | None:
        if self._compile_error is not None:
            return self._compile_error
        if self._errors >= MAX_ERRORS:
            if _now() < self._blocked_until:
                return f"Script invocation is blocked due to maximum error count {MAX_ERRORS}!"
            # One more try after the block (ThingsBoard starts counting afresh): a script that still
            # overruns is blocked again after one time-out, not three — in one process, every time-out
            # holds the MQTT batch it is in.
            self._errors = MAX_ERRORS - 1
        return None

    def _timed_out(self) -> None:
        self.timeouts += 1
        self._errors += 1
        if self._errors >= MAX_ERRORS:
            self._blocked_until = _now() + BLOCK_S
            log.warning("rule node script timed out %d times: blocked for %d s", MAX_ERRORS, BLOCK_S)

    def run_sync(self, items: list) -> list:
        from py_mini_racer import JSTimeoutException

        out: list = []
        i = 0
        while i < len(items):
            chunk = items[i:i + self.chunk]
            i += len(chunk)
            reason = self._blocked() or (None if self._context() is not None else self._compile_error)
            if reason is not None:
                out.extend([(False, reason)] * len(chunk))
                continue
            try:
                results = self._call(chunk)
            except JSTimeoutException:
                if len(chunk) == 1:
                    self._timed_out()
                    results = [(False, "Script timeout!")]
                else:  # one message may loop, or all are slow: each on its own, each with the limit
                    results, overran = [], False
                    for one in chunk:
                        reason = self._blocked()
                        if reason is not None:
                            results.append((False, reason))
                            continue
                        try:
                            results.extend(self._call([one]))
                        except JSTimeoutException:
                            overran = True
                            self._timed_out()
                            results.append((False, "Script timeout!"))
                    if not overran:  # slow, not stuck: smaller calls from now on
                        self.chunk = max(1, len(chunk) // 4)
            out.extend((ok, _parse(v)) if ok else (ok, v) for ok, v in results)
        return out

    async def run(self, items: list) -> list:
        return await asyncio.get_running_loop().run_in_executor(executor(), self.run_sync, items)

    def close(self) -> None:
        maker, self._ctx_maker, self._ctx = self._ctx_maker, None, None
        if maker is not None:
            executor().submit(maker.__exit__, None, None, None)


def _parse(text):
    """The script's result: JSON text from ``JSON.stringify`` (None when it returned undefined)."""
    if text is None:
        return None
    return json.loads(text)


def _first_line(exc: Exception) -> str:
    """V8's message without the source excerpt mini-racer appends (its last non-empty line)."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln and not ln.startswith("    at "):
            return ln.strip()
    return lines[0].strip() if lines else type(exc).__name__


def json_type(value) -> str:
    """Jackson's node type name of a result (for ThingsBoard's "Wrong result type: X")."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, (int, float)):
        return "NUMBER"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, list):
        return "ARRAY"
    return "OBJECT"
