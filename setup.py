"""Only the simulator's optional C hot path; everything else is in pyproject.toml.

``optional=True``: where no C compiler is found the package still installs and the simulator uses
its pure-Python engine (see docs/scenarios.md, "The simulator's engines")."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("tbspark.simulate._fastsend", ["tbspark/simulate/_fastsend.c"],
                             extra_compile_args=["-O2"], libraries=["m"], optional=True)])
