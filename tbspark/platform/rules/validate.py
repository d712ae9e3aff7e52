"""Chain shape checks, pure functions over a chain's connections: the cycles ThingsBoard's
RuleChainDataValidator refuses at save, and the most node executions one message can cost (the
engine counts per message only on chains where this bound exceeds the cap)."""

from __future__ import annotations

SELF_LOOP = "Can't create the relation to yourself."
CYCLE = "Can't create circling relations in rule chain."


def _edges(connections) -> list[tuple[int, int]]:
    """(from, to) of the well-formed connections (index errors are reported elsewhere)."""
    out = []
    for c in connections or []:
        if isinstance(c, dict):
            a, b = c.get("fromIndex"), c.get("toIndex")
            if type(a) is int and type(b) is int:
                out.append((a, b))
    return out


def cycle_error(connections) -> str | None:
    """ThingsBoard's message for a chain whose connections loop, else None. Like
    RuleChainDataValidator.validateCircles: a connection to itself first, then any cycle.
    (ThingsBoard's recursive walk only detects a cycle through the node it starts from and overflows
    its stack on the others; here every cycle gets the same 400.)"""
    graph: dict[int, set[int]] = {}
    for a, b in _edges(connections):
        if a == b:
            return SELF_LOOP
        graph.setdefault(a, set()).add(b)
    white, grey, black = 0, 1, 2
    colour: dict[int, int] = {}
    for start in graph:
        if colour.get(start, white) != white:
            continue
        # Iterative depth-first search: a chain of thousands of nodes must not hit Python's stack.
        colour[start] = grey
        stack = [(start, iter(graph.get(start, ())))]
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = black
                stack.pop()
                continue
            c = colour.get(nxt, white)
            if c == grey:
                return CYCLE
            if c == white:
                colour[nxt] = grey
                stack.append((nxt, iter(graph.get(nxt, ()))))
    return None


def execution_bound(connections, first: int | None, cap: int) -> int:
    """The most node executions one message entering at ``first`` can cause, when every node sends
    it (or a copy) down every connection once: the number of paths from ``first`` to each node,
    summed. Capped at ``cap + 1``; a cycle reachable from ``first`` also gives ``cap + 1``."""
    if first is None:
        return 0
    graph: dict[int, list[int]] = {}
    for a, b in _edges(connections):
        graph.setdefault(a, []).append(b)
    # Topological order of what ``first`` reaches (Kahn's algorithm); leftovers mean a cycle.
    reach, todo = {first}, [first]
    while todo:
        for b in graph.get(todo.pop(), ()):
            if b not in reach:
                reach.add(b)
                todo.append(b)
    indegree = {n: 0 for n in reach}
    for a in reach:
        for b in graph.get(a, ()):
            indegree[b] += 1
    order, ready = [], [n for n in reach if indegree[n] == 0]
    while ready:
        n = ready.pop()
        order.append(n)
        for b in graph.get(n, ()):
            indegree[b] -= 1
            if indegree[b] == 0:
                ready.append(b)
    if len(order) != len(reach):
        return cap + 1
    paths = {n: 0 for n in reach}
    paths[first] = 1
    total = 0
    for n in order:
        p = min(paths[n], cap + 1)
        total += p
        if total > cap:
            return cap + 1
        for b in graph.get(n, ()):
            paths[b] += p
    return total
