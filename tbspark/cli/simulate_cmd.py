"""`tbspark simulate` — command registration (filled in by the simulate work)."""

from tbspark.cli import app  # noqa: F401
