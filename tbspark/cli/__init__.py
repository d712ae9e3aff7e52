"""The `tbspark` command line. No logic lives here: each verb parses its options, calls one
library function, renders the result with rich, and maps errors to exit codes
(see ``tbspark.cli._common.run``). One module per verb group registers its commands."""

from __future__ import annotations

import typer

from tbspark.cli import _common

app = typer.Typer(
    name="tbspark",
    help="IoT analytics with ThingsBoard, Kafka and Spark: provision, simulate, aggregate, verify.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    _common.DEBUG["on"] = debug


def _register_all() -> None:
    # Imported for their side effect of adding commands to ``app``.
    from tbspark.cli import (  # noqa: F401
        aggregate_cmd,
        demo_cmd,
        platform_cmd,
        provision_cmd,
        scenario_cmd,
        simulate_cmd,
        stack_cmd,
        verify_cmd,
    )


_register_all()


def main() -> None:
    app()
