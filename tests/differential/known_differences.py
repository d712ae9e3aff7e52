"""Where the embedded platform knowingly answers differently from ThingsBoard CE 4.3.1.3, each with its
reason. Mirrored, entry by entry, in docs/thingsboard.md ("## Differential suite"); a test keeps the two
in step. Anything not listed here is a failure of the differential suite; an entry that no longer
matches anything is one too (remove it).

``exchange`` and ``path`` are fnmatch patterns over the exchange name and the difference's path
(``step/field/…``, as the suite prints it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Known:
    exchange: str
    path: str
    reason: str
    owner: str  # who would close it, if anyone


KNOWN: list[Known] = [
    Known("malformed_bodies", "*/body/message",
          "An unreadable entity body gets ThingsBoard's status (500) and errorCode (2) and the start of its "
          "message (\"JSON parse error: …\", \"Required request body is missing\"), not the text of Jackson's "
          "parser or of Spring's method signature that follows", "nobody (by design)"),
    Known("rule_chains", "script nodes saved/*",
          "ThingsBoard saves any node type (script nodes included); the embedded platform refuses script "
          "nodes (JS filter, TBEL log) with a 400", "rule-chain/script helper (issue 16 items 2-3)"),
    Known("rule_chains", "cycle refused/body/message",
          "Both refuse the chain with 400/31, the embedded platform for its script node before it sees the "
          "cycle (\"Can't create circling relations in rule chain.\" on ThingsBoard)",
          "rule-chain/script helper (issue 16 items 3-4)"),
    Known("rule_chains", "self loop refused/*",
          "ThingsBoard refuses a connection from a node to itself (400 \"Can't create the relation to "
          "yourself.\"); the embedded platform saves it", "rule-chain helper (issue 16 item 4)"),
    Known("rule_chains", "delete a chain a profile uses/*",
          "ThingsBoard refuses to delete a chain a device profile uses (400); the embedded platform deletes it "
          "and detaches the profile", "rule-chain helper (issue 16 list)"),
    Known("telemetry_extras", "calendar */*",
          "Calendar aggregation intervals (intervalType WEEK, WEEK_ISO, MONTH, QUARTER with timeZone) are "
          "answered by ThingsBoard; the embedded platform refuses them with a 400",
          "missing behaviours (issue 16 item 6)"),
    Known("telemetry_extras", "*key* of 256 characters/*", "ThingsBoard refuses keys longer than 255 characters "
          "(400 \"Validation error: key length must be equal or less than 255\"); the embedded platform "
          "stores them", "missing behaviours (issue 16 item 6)"),
    Known("telemetry_extras", "*key of 1000 characters/*", "as for 256 characters",
          "missing behaviours (issue 16 item 6)"),
    Known("telemetry_extras", "long keys stored/*", "follows from the key-length limit above",
          "missing behaviours (issue 16 item 6)"),
    Known("attributes_rest", "server scope state keys/*",
          "ThingsBoard keeps device state (active, lastConnectTime, …) as SERVER_SCOPE attributes of every "
          "device; the embedded platform does not yet", "devstate helper (issue 16 item 5)"),
]
