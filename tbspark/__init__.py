"""tbspark: ThingsBoard → Kafka → Spark analytics, made real.

The data's path: scenario → provision → simulate → platform (rule engine) → Kafka
→ aggregate (Spark) → zone assets → verify. See docs/architecture.md.
"""

__version__ = "0.1.0"

from tbspark.errors import TbsparkError  # noqa: E402

__all__ = ["TbsparkError", "__version__"]
