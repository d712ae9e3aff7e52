"""The harness shared by tbspark's tests and benchmarks (not used by the tool itself).

Both sides start services, wait on conditions and measure CPU the same way, from here:

- ``wait.wait_until``: poll a condition with a deadline; a timeout names what was awaited.
- ``cpu``: CPU seconds of a process by PID (``cpu_seconds``), or of a process tree over an
  interval (``CpuMeter``).
- ``platform.start_platform``: ``tbspark platform serve`` on free ports, ready when its endpoint
  file exists and ``/tbspark/health`` answers; stopped by PID. The broker and the whole stack start
  through the project's own ``tbspark.stack`` (``stack_up``, ``start_broker``), whose readiness
  checks are the product's.
- ``pipeline``: the whole pipeline as separate processes (stack, job, simulator) that a benchmark
  or a fault drill measures, kills and restarts one by one.
- ``paced``: a fixed-rate Kafka producer of forwarding-chain records; ``mosquitto``: a plain MQTT
  broker as a reference.

tests/ and bench/ import these modules; nothing here imports tests/ or bench/.
"""
