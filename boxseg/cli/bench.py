"""`boxseg bench ...`: each benchmark is the click command `cli` in `boxseg.bench.<name>`, imported lazily."""

from __future__ import annotations

import click

from boxseg.cli import COMMANDS, LazyGroup

BENCHES: dict[str, str] = {
    "latency": "Latency per backend x image size x batch, with a stage breakdown.",
    "ops": "Custom ops: fused kernels vs PyTorch references (time and peak memory).",
    "train": "Training-step throughput and peak memory, fused vs reference ops; --profile: per-stage step split.",
    "ablation": "Train presets over seeds on the synthetic bench split; AP table and chart.",
    "compare": "Ratios between two bench JSON files, regressions flagged.",
    "readme": "Render bench JSON reports as the README's results section.",
}


class BenchGroup(LazyGroup):
    """The lazy bench group; `bench train` also gets `--profile` (and its options) from `boxseg.bench.profile`,
    which keeps the step profiler out of the timing bench's module."""

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if name == "train" and cmd is not None:
            from boxseg.bench.profile import add_profile_options

            cmd = add_profile_options(cmd)
        return cmd


@click.group("bench", cls=BenchGroup, lazy=BENCHES, package="boxseg.bench", section="Benchmarks",
             help=COMMANDS["bench"])
def cli() -> None:
    pass
