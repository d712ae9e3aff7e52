"""ThingsBoard's MQTT device-API topic names, in one place for both sides of the wire: the embedded
platform's transport (server) and tbspark's clients (simulator, provisioning, sinks). A neutral module,
like the codec: it imports nothing, so the platform does not depend on the client side or back.
Tests and benchmarks spell the topics out on purpose: they assert the wire format."""

TELEMETRY_TOPIC = "v1/devices/me/telemetry"
ATTRIBUTES_TOPIC = "v1/devices/me/attributes"

GATEWAY_CONNECT_TOPIC = "v1/gateway/connect"
GATEWAY_TELEMETRY_TOPIC = "v1/gateway/telemetry"
