"""`boxseg predict` (not built yet)."""

import click

from boxseg.cli import COMMANDS, not_built


@click.command("predict", help=COMMANDS["predict"], context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def cli(args: tuple[str, ...]) -> None:
    not_built("`boxseg predict`", "open issue")
