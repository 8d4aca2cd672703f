"""`boxseg bench ...`: each benchmark is the click command `cli` in `boxseg.bench.<name>`, imported lazily."""

from __future__ import annotations

import importlib

import click

from boxseg.cli import COMMANDS

BENCHES: dict[str, str] = {
    "latency": "Latency per backend x image size x batch, with a stage breakdown.",
    "ops": "Custom ops: fused kernels vs PyTorch references (time and peak memory).",
    "train": "Training-step throughput and peak memory, fused vs reference ops.",
    "ablation": "Train presets over seeds on the synthetic bench split; AP table and chart.",
    "compare": "Ratios between two bench JSON files, regressions flagged.",
    "readme": "Render bench JSON reports as the README's results section.",
}


class LazyBenchGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(BENCHES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in BENCHES:
            return None
        try:
            module = importlib.import_module(f"boxseg.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"boxseg.bench.{name}":
                raise
            return _missing(name)
        return module.cli

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Benchmarks"):
            formatter.write_dl(list(BENCHES.items()))


def _missing(name: str) -> click.Command:
    from boxseg.cli import not_built

    @click.command(name, help=BENCHES[name], context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def cmd(args: tuple[str, ...]) -> None:
        not_built(f"`boxseg bench {name}`", "open issue")

    return cmd


@click.group("bench", cls=LazyBenchGroup, help=COMMANDS["bench"])
def cli() -> None:
    pass
