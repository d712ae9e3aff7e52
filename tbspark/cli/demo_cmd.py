"""`tbspark demo` — command registration (filled in by the demo work)."""

from tbspark.cli import app  # noqa: F401
