"""`tbspark aggregate` — command registration (filled in by the aggregate work)."""

from tbspark.cli import app  # noqa: F401
