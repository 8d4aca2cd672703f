"""The `boxseg` command line.

Sub-commands live in their own modules (``boxseg/cli/<name>.py``, each defining a click object named ``cli``)
and are imported only when invoked, so ``boxseg --help`` stays fast and never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from boxseg import __version__

# name -> one-line help. The module boxseg.cli.<name> provides the command itself.
COMMANDS: dict[str, str] = {
    "data": "Make synthetic COCO-format data (boxseg data synth).",
    "train": "Train a box-supervised instance segmentation model.",
    "eval": "Evaluate a checkpoint or a trivial baseline with COCO mask and box AP, or labels' masks.",
    "export": "Export a trained student to ONNX or TensorRT.",
    "predict": "Run a checkpoint or an exported model on images; write COCO JSON and overlays.",
    "label": "Masks and quality scores for the boxes of a COCO dataset; a review page.",
    "bench": "Benchmark latency, ops, training throughput and ablations.",
    "demo": "The whole pipeline on built-in synthetic data: train, eval, export, predict, bench.",
    "check": "Check this machine end to end (kernels, bench, training, export, runtime, TensorRT).",
}


class LazyGroup(click.Group):
    """A group whose sub-command `name` is the click object `cli` of the module `<package>.<name>`, imported only
    when that command runs. `boxseg` and `boxseg bench` are both one of these.

    lazy: name -> one-line help; `section` titles the list of them in --help.
    """

    def __init__(self, *args: Any, lazy: dict[str, str], package: str, section: str = "Commands",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy, self.package, self.section = lazy, package, section

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.lazy)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.lazy:
            return None
        return importlib.import_module(f"{self.package}.{name}").cli

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Uses the static one-line help so listing commands imports nothing heavy.
        with formatter.section(self.section):
            formatter.write_dl(list(self.lazy.items()))


@click.group(cls=LazyGroup, lazy=COMMANDS, package="boxseg.cli",
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="boxseg")
def main() -> None:
    """BoxSeg: train box-supervised instance segmentation, export it, deploy it, measure it."""


class Threshold(click.FloatRange):
    """A float in [min, max] that is also a real number: click's FloatRange lets nan through (every comparison
    with nan is false), and a nan score threshold silently keeps or drops everything."""

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        import math

        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a number; expected a threshold in [{self.min:g}, {self.max:g}], "
                      f"e.g. 0.3", param, ctx)
        return number


def check_overrides(items: tuple[str, ...] | list[str]) -> None:
    """Extra command-line arguments are training-config overrides: fail early on one that is not key=value."""
    for item in items:
        if "=" not in item:
            raise click.UsageError(f"unexpected argument '{item}': overrides look like key=value (solver.lr=0.02)")
