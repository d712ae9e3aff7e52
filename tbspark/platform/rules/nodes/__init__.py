"""Rule nodes: small classes keyed by ThingsBoard's class name, each with its config read in both
configuration versions of contract §8.2. ``NODE_TYPES`` is the registry the engine compiles from."""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable

PKG = "org.thingsboard.rule.engine."

Emit = list  # [(relation, TbMsg)]


class NodeConfigError(ValueError):
    """A node configuration the platform cannot execute; the message names what is wrong."""


class Node:
    """Base: ``process(msgs)`` returns ``[(relation, msg)]`` (or an awaitable of it). A node that
    finishes later (Kafka) calls ``self.resume([(relation, msg)])`` from the event loop instead."""

    TYPE = ""
    CURRENT_VERSION = 0

    def __init__(self, node_id: str, name: str, config: dict, version: int, store: Any):
        self.id = node_id
        self.name = name
        self.config = config or {}
        self.version = version
        self.store = store
        self.resume: Callable[[list], None] = lambda items: None
        # Set by the engine before start(): count ``n`` messages out on ``relation`` without routing
        # them (for a relation this node has no connection on), and the relations it has connections on
        # (None: unknown, treat every relation as connected).
        self.resume_count: Callable[[str, int], None] = lambda relation, n: None
        self.routed: frozenset | None = None
        self.engine = None  # the RuleEngine running this node (set when the chain is compiled)

    def shares_input(self) -> bool:
        """True if this node may get the very message objects another target of the same relation
        gets, instead of copies: it never changes a message it receives and passes none on (no
        connection out of it), and it reads everything it needs before its first ``await`` (the
        engine runs such a node's batch before the other targets'). Valid once ``routed`` is set."""
        return False

    def fusable(self) -> bool:
        """True if ``step(m)`` handles one message exactly as ``process([m])`` would (same changes,
        returns its relation), synchronously and independently of the other messages of the batch.
        The engine then runs a straight line of such nodes message by message (Chain.runs)."""
        return False

    def step(self, m) -> str:  # pragma: no cover - only called when fusable()
        raise NotImplementedError

    def process(self, msgs: list) -> Emit | Awaitable[Emit]:  # pragma: no cover - abstract
        raise NotImplementedError

    async def start(self) -> None:
        """Open resources (producers); errors here become Failure routes, not crashes."""

    async def close(self) -> None:
        """Release resources; flush what is in flight."""

    def counters(self) -> dict:
        return {}


class StepNode(Node):
    """A node whose work is one message at a time: ``process`` is ``step`` over the batch."""

    def fusable(self) -> bool:
        return True

    def process(self, msgs):
        step = self.step
        return [(step(m), m) for m in msgs]


def register(cls):
    NODE_TYPES[cls.TYPE] = cls
    return cls


NODE_TYPES: dict[str, type[Node]] = {}

_PATTERN = re.compile(r"\$\{([^}]+)\}|\$\[([^\]]+)\]")


def compile_pattern(pattern: str) -> Callable[[Any], str]:
    """``${metadataKey}`` / ``$[dataKey]`` substitution (TbNodeUtils.processPattern): unknown keys stay
    as written, ``$[a.b]`` walks nested data, non-text data values are JSON text."""
    if "$" not in pattern:
        def constant(msg) -> str:
            return pattern
        constant.constant = pattern  # callers on a hot path may use the text without the call
        return constant
    whole = _PATTERN.fullmatch(pattern)
    if whole is not None and whole.group(1) is not None:  # "${deviceName}": the common key pattern
        key = whole.group(1)

        def metadata_value(msg) -> str:
            v = msg.metadata.get(key)
            return pattern if v is None else v
        # Callers on a hot path may look the key up themselves (the pattern text when it is absent).
        metadata_value.metadata_key = key
        metadata_value.pattern = pattern
        return metadata_value
    import json

    def substitute(msg) -> str:
        def one(m: re.Match) -> str:
            if m.group(1) is not None:
                v = msg.metadata.get(m.group(1))
                return m.group(0) if v is None else v
            cur: Any = msg.data
            for part in m.group(2).split("."):
                if isinstance(cur, dict) and part in cur:
                    cur = cur[part]
                else:
                    return m.group(0)
            if isinstance(cur, str):
                return cur
            if isinstance(cur, bool):
                return "true" if cur else "false"
            return json.dumps(cur, separators=(",", ":"))
        return _PATTERN.sub(one, pattern)

    return substitute


async def gather_light(coros: list) -> list:
    """``asyncio.gather(*coros, return_exceptions=True)`` without one Task per coroutine.

    A batch saves thousands of entities at once and a Task costs more than the store call itself.
    The coroutines are stepped here instead: each runs until it waits on a Future (the store's
    commit), all those Futures are awaited together, then each coroutine is resumed to its end.
    Asyncio coroutines only ever yield a Future or None (a bare yield), both handled.
    """
    import asyncio

    results: list = [None] * len(coros)
    running = list(enumerate(coros))
    while running:
        waiting, still = [], []
        for i, coro in running:
            try:
                fut = coro.send(None)
            except StopIteration as stop:
                results[i] = stop.value
                continue
            except Exception as exc:  # noqa: BLE001 - returned like gather(return_exceptions=True)
                results[i] = exc
                continue
            if fut is not None:
                fut._asyncio_future_blocking = False  # what Task does before waiting on it
                waiting.append(fut)
            still.append((i, coro))
        if waiting:
            await asyncio.wait(waiting)
        elif still:
            await asyncio.sleep(0)
        running = still
    return results


def import_all() -> None:
    """Import every node family so that they register themselves."""
    from tbspark.platform.rules.nodes import filters, kafka, metadata, rpc, script, telemetry, transform  # noqa: F401
