"""`boxseg demo` (not built yet)."""

import click

from boxseg.cli import COMMANDS, not_built


@click.command("demo", help=COMMANDS["demo"], context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def cli(args: tuple[str, ...]) -> None:
    not_built("`boxseg demo`", "open issue")
