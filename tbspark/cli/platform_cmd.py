"""`tbspark platform` — command registration (filled in by the platform work)."""

from tbspark.cli import app  # noqa: F401
