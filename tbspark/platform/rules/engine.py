"""The rule engine: routes each TbMsg into its device profile's default chain (else the tenant's root
chain) and runs chain nodes by relation type, one batch per node, so a burst of messages costs one
store transaction and one Kafka produce loop. A straight line of per-message nodes (originator
attributes → check fields → copy → rename in the tutorial chain) runs message by message instead,
with the same results and counters (_fuse, _run_line).

No chain can hold the platform: cycles are refused when a chain is saved (validate.py), and a
message (with every copy made of it) runs at most ``MAX_NODE_EXECUTIONS_PER_MESSAGE`` nodes; only
chains whose shape allows more are counted message by message (Chain.counted), the others run free.
Node types the platform does not execute are kept, and a message reaching one takes Failure."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading

from tbspark.platform.rules.msg import TbMsg
from tbspark.platform.rules.nodes import NODE_TYPES, PKG, Node, NodeConfigError, import_all
from tbspark.platform.rules.script import SCRIPT_TIMEOUT_MS
from tbspark.platform.rules.validate import cycle_error, execution_bound

log = logging.getLogger(__name__)

BUILTIN_ROOT = "builtin-root"
# ThingsBoard's tenant profile setting maxRuleNodeExecutionsPerMessage (0 = no limit in its default
# profile, 50 in its API example). Here every copy of a message counts towards the same total, so an
# acyclic chain that fans out exponentially is stopped too.
MAX_NODE_EXECUTIONS_PER_MESSAGE = 50


def default_root_chain_metadata() -> dict:
    """What ThingsBoard's stock root chain does for device data: save telemetry and client attributes,
    send server-side RPC to the device."""
    return {
        "firstNodeIndex": 0,
        "nodes": [
            {"type": PKG + "filter.TbMsgTypeSwitchNode", "name": "Message Type Switch",
             "configurationVersion": 0, "configuration": {"version": 0}},
            {"type": PKG + "telemetry.TbMsgTimeseriesNode", "name": "Save Timeseries",
             "configurationVersion": 1,
             "configuration": {"defaultTTL": 0, "useServerTs": False,
                               "processingSettings": {"type": "ON_EVERY_MESSAGE"}}},
            {"type": PKG + "telemetry.TbMsgAttributesNode", "name": "Save Client Attributes",
             "configurationVersion": 3,
             "configuration": {"scope": "CLIENT_SCOPE", "notifyDevice": False,
                               "processingSettings": {"type": "ON_EVERY_MESSAGE"},
                               "sendAttributesUpdatedNotification": False,
                               "updateAttributesOnlyOnValueChange": True}},
            {"type": PKG + "rpc.TbSendRPCRequestNode", "name": "RPC Call Request",
             "configurationVersion": 0, "configuration": {"timeoutInSeconds": 60}},
        ],
        "connections": [{"fromIndex": 0, "toIndex": 1, "type": "Post telemetry"},
                        {"fromIndex": 0, "toIndex": 2, "type": "Post attributes"},
                        {"fromIndex": 0, "toIndex": 3, "type": "RPC Request to Device"}],
        "ruleChainConnections": None,
    }


def _node_id(node: dict, index: int) -> str:
    nid = node.get("id")
    if isinstance(nid, dict):
        nid = nid.get("id")
    return str(nid) if nid else f"node-{index}"


def _short(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


class Chain:
    """A compiled chain: node instances plus (node index, relation) → target indexes."""

    def __init__(self, chain_id: str, nodes: list[Node], routes: dict, first: int | None):
        self.id = chain_id
        self.nodes = nodes
        self.routes = routes
        self.first = first
        self.stats = [{"in": 0, "out": {}} for _ in nodes]
        # True when one message could cost more node executions than the cap (or a node makes
        # several messages of one): messages are then counted node by node, and nothing is fused.
        self.counted = False
        self.capped_logged = False
        # (node index, relation) → (targets that share the messages, targets that own them or a copy);
        # filled once the nodes know their connections (RuleEngine._compile).
        self.split: dict = {}
        # First node of a straight line of fusable nodes → [(node index, step, relation to the next
        # node of the line, None for the last)] (see _fuse).
        self.runs: dict[int, list] = {}


class RuleEngine:
    def __init__(self, store, fuse: bool = True, max_node_executions: int = MAX_NODE_EXECUTIONS_PER_MESSAGE,
                 script_timeout_ms: int = SCRIPT_TIMEOUT_MS):
        self.store = store
        self.fuse = fuse  # run straight lines of fusable nodes message by message (False: node by node)
        self.max_node_executions = max_node_executions
        self.script_timeout_ms = script_timeout_ms
        self.rpc = None  # the RPC service (platform/rpc.py) RPC call request nodes deliver through
        self._chains: dict[str, Chain] = {}
        self._compiling: dict[str, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._retired: list[Chain] = []
        self._totals = {"messages_in": 0, "forwarded": 0, "failed": 0, "node_errors": 0, "capped": 0}
        import_all()

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()  # uvloop's loop has no _thread_id
        add = getattr(self.store, "add_chain_listener", None)
        if add is not None:
            add(self._on_chain_changed)

    async def stop(self) -> None:
        """Wait for in-flight continuations, then close every node (Kafka producers flush for up to
        30 s; undelivered messages are logged)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        chains = list(self._chains.values()) + self._retired
        self._chains.clear()
        self._retired.clear()
        for chain in chains:
            await self._close_chain(chain)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _on_chain_changed(self, chain_id: str | None) -> None:
        """Store listener: a chain's metadata (or the root) changed; recompile on next use."""
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._on_chain_changed, chain_id)
            return
        if chain_id is None:
            return  # routing (root / profile default) changed: resolved per batch, nothing cached
        chain = self._chains.pop(chain_id, None)
        if chain is not None:
            self._spawn(self._close_chain(chain))

    async def _close_chain(self, chain: Chain) -> None:
        for node in chain.nodes:
            try:
                await node.close()
            except Exception:  # noqa: BLE001 - a node failing to close must not stop the others
                log.exception("closing rule node %s", node.name)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----------------------------------------------------------------------------- validation

    def _instantiate(self, metadata: dict) -> tuple[list, list[str]]:
        nodes, problems = [], []
        raw_nodes = metadata.get("nodes") or []
        if not isinstance(raw_nodes, list):
            return [], ["nodes must be a list of rule nodes"]
        for i, raw in enumerate(raw_nodes):
            if not isinstance(raw, dict) or not isinstance(raw.get("configuration") or {}, dict):
                problems.append(f"node {i}: a rule node is an object with a type and a configuration object")
                nodes.append(None)
                continue
            type_name = raw.get("type") or ""
            if not isinstance(type_name, str):
                problems.append(f"node {i}: type must be a node class name")
                nodes.append(None)
                continue
            label = f"node {i} '{raw.get('name') or ''}' ({_short(type_name) or 'no type'})"
            cls = NODE_TYPES.get(type_name)
            if cls is None:  # saved as ThingsBoard saves it; its messages take Failure (_Unsupported)
                nodes.append(_Unsupported(_node_id(raw, i), raw.get("name") or _short(type_name), type_name))
                continue
            version = raw.get("configurationVersion") or 0
            if type(version) is not int:
                problems.append(f"{label}: configurationVersion must be a whole number")
                nodes.append(None)
                continue
            try:
                node = cls(_node_id(raw, i), raw.get("name") or _short(type_name), raw.get("configuration") or {},
                           version, self.store)
            except NodeConfigError as exc:
                problems.append(f"{label}: {exc}")
                nodes.append(None)
                continue
            node.engine = self
            if hasattr(node, "timeout_ms"):
                node.timeout_ms = self.script_timeout_ms
            nodes.append(node)
        connections = metadata.get("connections") or []
        if not isinstance(connections, list):
            return nodes, problems + ["connections must be a list"]
        for c in connections:
            if not isinstance(c, dict):
                problems.append(f"connection {c!r}: must be an object with fromIndex, toIndex and type")
                continue
            a, b = c.get("fromIndex"), c.get("toIndex")
            if not (isinstance(a, int) and isinstance(b, int) and 0 <= a < len(raw_nodes) and 0 <= b < len(raw_nodes)):
                problems.append(f"connection {c!r}: fromIndex/toIndex must name nodes 0..{len(raw_nodes) - 1}")
            elif not c.get("type"):
                problems.append(f"connection {a}→{b}: type (the relation) is missing")
        first = metadata.get("firstNodeIndex")
        if raw_nodes and first is not None and not (isinstance(first, int) and 0 <= first < len(raw_nodes)):
            problems.append(f"firstNodeIndex {first!r} does not name a node")
        return nodes, problems

    def validate_chain(self, metadata: dict) -> list[str]:
        """One message per problem that stops a chain from being saved: connections that loop
        (ThingsBoard's exact message, alone), a bad index, a known node's configuration the platform
        cannot execute. Unknown node types are no problem: saved, their messages take Failure."""
        loop = cycle_error(metadata.get("connections"))
        if loop is not None:
            return [loop]
        nodes, problems = self._instantiate(metadata)
        for i, node in enumerate(nodes):
            check = getattr(node, "check", None)
            if check is not None:
                try:
                    check()
                except NodeConfigError as exc:
                    problems.append(f"node {i} '{node.name}' ({_short(node.TYPE)}): {exc}")
        return problems

    async def _compile(self, chain_id: str, metadata: dict | None) -> Chain:
        if not metadata:
            return Chain(chain_id, [], {}, None)
        nodes, problems = self._instantiate(metadata)
        if problems:  # saved before validation existed, or edited behind our back: run what we can
            log.warning("rule chain %s: %s", chain_id, "; ".join(problems))
        routes: dict = {}
        for c in metadata.get("connections") or []:
            a, b = c.get("fromIndex"), c.get("toIndex")
            if isinstance(a, int) and isinstance(b, int) and 0 <= a < len(nodes) and 0 <= b < len(nodes) \
                    and nodes[a] is not None and nodes[b] is not None:
                routes.setdefault((a, c.get("type")), []).append(b)
        first = metadata.get("firstNodeIndex")
        if not (isinstance(first, int) and 0 <= first < len(nodes) and nodes[first] is not None):
            first = None
        chain = Chain(chain_id, [n or _Dead() for n in nodes], routes, first)
        for idx, node in enumerate(chain.nodes):
            node.resume = (lambda items, _c=chain, _i=idx: self._spawn(self._continue(_c, _i, items)))
            node.resume_count = (lambda relation, n, _c=chain, _i=idx: self._count(_c, _i, relation, n))
            node.routed = frozenset(rel for (i, rel) in routes if i == idx)
        for key, targets in routes.items():
            if len(targets) > 1:
                readers = [t for t in targets if chain.nodes[t].shares_input()]
                if readers:
                    chain.split[key] = (readers, [t for t in targets if t not in readers])
        cap = self.max_node_executions
        edges = [{"fromIndex": a, "toIndex": t} for (a, _rel), ts in routes.items() for t in ts]
        chain.counted = cap > 0 and (execution_bound(edges, first, cap) > cap
                                     or any(getattr(n, "MULTIPLIES", False) for n in chain.nodes))
        if self.fuse and not chain.counted:
            chain.runs = _fuse(chain)
        for idx, node in enumerate(chain.nodes):
            try:
                await node.start()
            except Exception:  # noqa: BLE001 - e.g. a producer config librdkafka rejects
                log.exception("rule node %s did not start", node.name)
        return chain

    async def _chain(self, chain_id: str) -> Chain:
        chain = self._chains.get(chain_id)
        if chain is not None:
            return chain
        fut = self._compiling.get(chain_id)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = self._compiling[chain_id] = asyncio.get_running_loop().create_future()
        try:
            if chain_id == BUILTIN_ROOT:
                metadata = default_root_chain_metadata()
            else:
                metadata = self.store.rule_chain_metadata(chain_id)
            chain = await self._compile(chain_id, metadata)
            self._chains[chain_id] = chain
            fut.set_result(chain)
            return chain
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            del self._compiling[chain_id]

    # ----------------------------------------------------------------------------- execution

    def _chain_id_for(self, msg: TbMsg, cache: dict) -> str:
        key = (msg.tenant_id, msg.profile_id)
        cid = cache.get(key)
        if cid is None:
            if msg.profile_id:
                profile = self.store.device_profile(msg.profile_id)
                cid = getattr(profile, "default_rule_chain_id", None) if profile is not None else None
            if not cid:
                cid = self.store.root_rule_chain_id(msg.tenant_id) or BUILTIN_ROOT
            cache[key] = cid
        return cid

    async def process(self, msgs: list[TbMsg]) -> None:
        """Run ``msgs`` through their chains; returns once save nodes have committed and every message
        was handed to its last synchronous node (Kafka delivery continues in the background)."""
        self._totals["messages_in"] += len(msgs)
        by_chain: dict[str, list[TbMsg]] = {}
        cache: dict = {}
        last_cid = last = None  # the previous message's chain and batch: runs of one chain are the rule
        for m in msgs:
            cid = m.chain_id
            if not cid:
                cid = cache.get((m.tenant_id, m.profile_id)) or self._chain_id_for(m, cache)
                m.chain_id = cid
            if cid is not last_cid:
                last = by_chain.get(cid)
                if last is None:
                    last = by_chain[cid] = []
                last_cid = cid
            last.append(m)
        for cid, batch in by_chain.items():
            chain = await self._chain(cid)
            if chain.first is not None:
                await self._run(chain, {chain.first: batch})

    async def _continue(self, chain: Chain, idx: int, items: list) -> None:
        pending: dict[int, list] = {}
        self._route(chain, idx, items, pending)
        if pending:
            await self._run(chain, pending)

    async def _run(self, chain: Chain, pending: dict[int, list]) -> None:
        while pending:
            idx = next(iter(pending))
            batch = pending.pop(idx)
            run = chain.runs.get(idx)
            if run is not None:
                self._run_line(chain, run, batch, pending)
                continue
            if chain.counted:
                batch = self._admit(chain, idx, batch)
                if not batch:
                    continue
            node = chain.nodes[idx]
            chain.stats[idx]["in"] += len(batch)
            try:
                result = node.process(batch)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:  # noqa: BLE001 - a node bug fails its messages, not the platform
                log.exception("rule node %s failed", node.name)
                self._totals["node_errors"] += 1
                for m in batch:
                    m.metadata["error"] = f"{type(exc).__name__}: {exc}"
                result = [("Failure", m) for m in batch]
            self._route(chain, idx, result, pending)

    def _admit(self, chain: Chain, idx: int, batch: list) -> list:
        """The messages of ``batch`` still under the per-message cap, each counted one more node;
        the others are dropped, as ThingsBoard fails a message "processed by more than N rule nodes"."""
        cap = self.max_node_executions
        keep = []
        for m in batch:
            box = m.execs
            if box is None:
                m.execs = box = [0]
            box[0] += 1
            if box[0] <= cap:
                keep.append(m)
        dropped = len(batch) - len(keep)
        if dropped:
            self._totals["capped"] += dropped
            st = chain.stats[idx]
            st["capped"] = st.get("capped", 0) + dropped
            if not chain.capped_logged:
                chain.capped_logged = True
                log.warning("rule chain %s: Message is processed by more than %d rule nodes! (dropped at "
                            "node '%s'; logged once per chain)", chain.id, cap, chain.nodes[idx].name)
        return keep

    def _run_line(self, chain: Chain, run: list, batch: list, pending: dict) -> None:
        """A straight line of fusable nodes, message by message: each message goes through the nodes
        while it leaves on the relation that leads to the next one, and stops at the first node that
        sends it elsewhere. Counters and routes are then those of the node-by-node path: every node's
        ``in``, its ``out`` per relation, and the messages that left it, routed from that node."""
        exits: list[dict] = [{} for _ in run]  # per node of the line: relation → messages leaving there
        failed_node = None
        for m in batch:
            j = 0
            for idx, step, cont in run:
                try:
                    relation = step(m)
                except Exception as exc:  # noqa: BLE001 - a node bug fails the message, as in _run
                    if failed_node != idx:
                        log.exception("rule node %s failed", chain.nodes[idx].name)
                        failed_node = idx
                    self._totals["node_errors"] += 1
                    m.metadata["error"] = f"{type(exc).__name__}: {exc}"
                    relation = "Failure"
                if relation != cont:
                    lst = exits[j].get(relation)
                    if lst is None:
                        exits[j][relation] = [m]
                    else:
                        lst.append(m)
                    break
                j += 1
        n = len(batch)
        stats = chain.stats
        for (idx, _step, cont), by_rel in zip(run, exits):
            stats[idx]["in"] += n
            for msgs in by_rel.values():
                n -= len(msgs)
            if cont is not None and n:
                self._tally(chain, idx, cont, n)
            if by_rel:
                self._route_grouped(chain, idx, by_rel, pending)
            if not n:
                break

    def _count(self, chain: Chain, idx: int, relation: str, n: int) -> None:
        """Counters of ``n`` messages leaving node ``idx`` on ``relation``, which has no connection
        (a node reports such messages by count instead of one by one)."""
        if n <= 0:
            return
        if chain.routes.get((idx, relation)):
            raise ValueError(f"relation {relation!r} of node {idx} is connected: route the messages")
        self._tally(chain, idx, relation, n)

    def _tally(self, chain: Chain, idx: int, relation: str, n: int) -> None:
        """The counters of ``n`` messages leaving node ``idx`` on ``relation``."""
        out = chain.stats[idx]["out"]
        out[relation] = out.get(relation, 0) + n
        if relation == "Failure":
            self._totals["failed"] += n
        elif relation == "Success" and chain.nodes[idx].TYPE.endswith("TbKafkaNode"):
            self._totals["forwarded"] += n

    def _route(self, chain: Chain, idx: int, items: list, pending: dict) -> None:
        # Group by relation first: counters and routing then cost one step per relation, not per message.
        by_rel: dict[str, list] = {}
        for relation, msg in items:
            lst = by_rel.get(relation)
            if lst is None:
                by_rel[relation] = lst = []
            lst.append(msg)
        self._route_grouped(chain, idx, by_rel, pending)

    def _route_grouped(self, chain: Chain, idx: int, by_rel: dict, pending: dict) -> None:
        """Count and route messages leaving node ``idx``, given as relation → messages."""
        for relation, msgs in by_rel.items():
            self._tally(chain, idx, relation, len(msgs))
            targets = chain.routes.get((idx, relation))
            if not targets:
                continue
            split = chain.split.get((idx, relation)) if len(targets) > 1 else None
            if split is not None:
                readers, targets = split
                for t in readers:
                    # Same message objects, no copy: a reader never changes them (Node.shares_input)
                    # and runs first — it goes to the front of ``pending``, before any target that
                    # might change them.
                    lst = pending.pop(t, None)
                    lst = list(msgs) if lst is None else lst + msgs
                    later = list(pending.items())
                    pending.clear()
                    pending[t] = lst
                    pending.update(later)
                if not targets:
                    continue
            first = pending.get(targets[0])
            if first is None:
                pending[targets[0]] = msgs
            else:
                first.extend(msgs)
            for t in targets[1:]:  # every further target gets its own copy, as ThingsBoard does
                pending.setdefault(t, []).extend([m.copy() for m in msgs])

    def counters(self) -> dict:
        nodes = []
        for chain in self._chains.values():
            for node, st in zip(chain.nodes, chain.stats):
                extra = {"capped": st["capped"]} if "capped" in st else {}
                nodes.append({"chain": chain.id, "node": node.name, "type": _short(node.TYPE),
                              "in": st["in"], "out": dict(st["out"]), **extra, **node.counters()})
        return dict(self._totals, nodes=nodes)


def _fuse(chain: Chain) -> dict[int, list]:
    """Straight lines of fusable nodes (Node.fusable): node A continues into B when exactly one of
    A's relations leads to a single node, B, that is fusable and has no other incoming connection.
    A's other relations stay as they are (their messages leave the line and are routed from A). A
    line starts at a fusable node no other fusable node continues into; lines of one node are left
    out. A node inside a line can still take a batch of its own (e.g. the chain's first node): then
    it runs node by node."""
    nodes, routes = chain.nodes, chain.routes
    incoming: dict[int, int] = {}
    for targets in routes.values():
        for t in targets:
            incoming[t] = incoming.get(t, 0) + 1
    fusable = {i for i, node in enumerate(nodes) if node.fusable()}
    cont: dict[int, tuple[str, int]] = {}
    for i in fusable:
        nxt = [(rel, ts[0]) for (a, rel), ts in routes.items()
               if a == i and len(ts) == 1 and ts[0] in fusable and ts[0] != i and incoming[ts[0]] == 1]
        if len(nxt) == 1:
            cont[i] = nxt[0]
    inner = {t for _rel, t in cont.values()}
    runs: dict[int, list] = {}
    for head in sorted(fusable - inner):
        if head not in cont:
            continue
        run, i, seen = [], head, set()
        while True:
            seen.add(i)
            nxt = cont.get(i)
            if nxt is None or nxt[1] in seen:
                run.append((i, nodes[i].step, None))
                break
            run.append((i, nodes[i].step, nxt[0]))
            i = nxt[1]
        runs[head] = run
    return runs


class _Unsupported(Node):
    """A node type the platform does not execute (kept in the chain as ThingsBoard keeps it): its
    messages take Failure, counted in the chain's stats, and the first one is logged."""

    def __init__(self, node_id: str, name: str, type_name: str):
        super().__init__(node_id, name, {}, 0, None)
        self.TYPE = type_name
        self.logged = False

    def process(self, msgs):
        reason = f"IllegalStateException: node type {_short(self.TYPE)} is not supported by the embedded platform"
        if not self.logged:
            self.logged = True
            log.warning("rule node '%s': %s; its messages take the Failure route (logged once)", self.name, reason)
        for m in msgs:
            m.metadata["error"] = reason
        return [("Failure", m) for m in msgs]


class _Dead(Node):
    """Stands in for a node that could not be built: its messages go to Failure."""
    TYPE = "unsupported"

    def __init__(self):
        super().__init__("dead", "unsupported node", {}, 0, None)

    def process(self, msgs):
        for m in msgs:
            m.metadata["error"] = "IllegalStateException: node type not supported by the embedded platform"
        return [("Failure", m) for m in msgs]
