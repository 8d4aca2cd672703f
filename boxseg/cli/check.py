"""`boxseg check`: the GPU (or CPU) check of the whole pipeline, step by step (see boxseg.check)."""

from __future__ import annotations

import click

from boxseg.cli import COMMANDS


@click.command("check", help=COMMANDS["check"] + " Steps: kernels vs references, bench ops --quick, a short "
               "training run of the boxseg preset (CUDA: 100 AMP iterations; CPU: 20 small ones), ONNX export + "
               "ONNX Runtime / boxseg.runtime vs PyTorch, TensorRT engine. Each step: ok, failed or skipped (with the "
               "reason); exit status 1 when a step failed.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cuda", show_default=True,
              help="Device to check; without a GPU, cuda runs to the end with the CUDA steps skipped.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the report) instead of the table.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Keep the artefacts (data, run, model.onnx, bench report) and check.json here "
                   "[default: a temporary folder, removed].")
@click.option("--iters", default=None, type=click.IntRange(min=1),
              help="Training iterations [default: 100 on cuda, 20 on cpu].")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(min=0),
              help="torch CPU threads; 0 = torch's default.")
def cli(device: str, as_json: bool, out_dir: str | None, iters: int | None, threads: int) -> None:
    from boxseg.check import check_main

    raise SystemExit(check_main(device, as_json, out_dir, iters, threads))
