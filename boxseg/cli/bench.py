"""`boxseg bench ...`: each benchmark is the click command `cli` in `boxseg.bench.<name>`, imported lazily."""

from __future__ import annotations

import click

from boxseg.cli import COMMANDS, LazyGroup

BENCHES: dict[str, str] = {
    "latency": "Latency per backend x image size x batch, with a stage breakdown.",
    "ops": "Custom ops: fused kernels vs PyTorch references (time and peak memory).",
    "train": "Training-step throughput and peak memory, fused vs reference ops.",
    "ablation": "Train presets over seeds on the synthetic bench split; AP table and chart.",
    "compare": "Ratios between two bench JSON files, regressions flagged.",
    "readme": "Render bench JSON reports as the README's results section.",
}


@click.group("bench", cls=LazyGroup, lazy=BENCHES, package="boxseg.bench", section="Benchmarks",
             help=COMMANDS["bench"])
def cli() -> None:
    pass
