"""Device fleets over MQTT with ground truth: generators → fleet schedule → engine (asyncio or
paho) → groundtruth.json. Entry point: ``simulate(scenario, conn, state, ...)``."""

from tbspark.simulate.run import SimulationReport, simulate

__all__ = ["SimulationReport", "simulate"]
