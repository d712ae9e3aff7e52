"""`tbspark stack` — command registration (filled in by the stack work)."""

from tbspark.cli import app  # noqa: F401
