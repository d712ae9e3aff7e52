"""The scripted exchanges. Each is ``fn(t: Target, tr: Transcript)``: it talks to one server and
records, step by step, what a user of that server would see. Entities are named ``tbdiff-<u>-…``
(``<u>`` unique per run) and deleted at the end; nothing else on a shared ThingsBoard is touched.

``rest`` (auth, devices, paging, bodies, credentials, assets, telemetry, attributes), ``mqtt`` (device
and gateway API over MQTT 3.1.1 and 5, server-side RPC), ``http`` (the HTTP device API), ``chain``
(tbspark's forwarding chain to Kafka), ``chains`` (what rule chains ThingsBoard saves).
"""

from __future__ import annotations

from typing import Callable

from tests.differential.harness import Target, Transcript

EXCHANGES: dict[str, Callable[[Target, Transcript], None]] = {}
NEEDS_KAFKA = {"chain_to_kafka"}  # exchanges whose target needs ``kafka_bootstrap``


def exchange(fn):
    EXCHANGES[fn.__name__] = fn
    return fn


from tests.differential.exchanges import chain, chains, http, mqtt, rest  # noqa: E402,F401  (they register)
