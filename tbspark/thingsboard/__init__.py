"""Clients for any ThingsBoard (real or embedded): REST (rest.py), device MQTT sessions
(mqtt.py), the forwarding rule chain (rulechain.py)."""
