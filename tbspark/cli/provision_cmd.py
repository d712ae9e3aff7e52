"""`tbspark provision` — command registration (filled in by the provision work)."""

from tbspark.cli import app  # noqa: F401
