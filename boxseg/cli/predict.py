"""`boxseg predict`: run a checkpoint (PyTorch) or an exported model (boxseg.runtime) on images; write COCO results JSON and overlay PNGs."""

from __future__ import annotations

import json

import click

from boxseg.cli import COMMANDS, Threshold


@click.command("predict", help=COMMANDS["predict"])
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="A training checkpoint (.pt).")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
              help="An exported model (.onnx) run by boxseg.runtime.")
@click.option("--images", required=True, type=click.Path(), help="An image file or a folder of images.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder; neither the --images folder nor a folder containing it.")
@click.option("--score-thr", type=Threshold(0, 1), default=0.3, show_default=True,
              help="Keep detections at or above this.")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N")
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True,
              help="Images read per step; those of equal padded size run as one forward pass, so results do "
                   "not depend on the batch.")
@click.option("--no-overlays", is_flag=True, help="Write results.json only.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object on stdout.")
def cli(checkpoint: str | None, model_path: str | None, images: str, out_dir: str, score_thr: float, device: str,
        batch: int, no_overlays: bool, as_json: bool) -> None:
    if (checkpoint is None) == (model_path is None):
        raise click.UsageError("give exactly one of --checkpoint CKPT or --model MODEL.onnx")
    from boxseg.eval.predict_folder import predict_folder, predict_folder_exported

    try:
        if model_path is not None:  # the exported graph through boxseg.runtime: torch is never imported
            summary = predict_folder_exported(model_path, images, out_dir, score_thr=score_thr, device=device,
                                              batch_size=batch, overlays=not no_overlays)
        else:
            summary = predict_folder(checkpoint, images, out_dir, score_thr=score_thr, device=device,
                                     batch_size=batch, overlays=not no_overlays)
    except (ValueError, OSError) as exc:
        # Bad input: CheckpointError / ConfigError / the runtime's image checks are ValueErrors.
        raise click.ClickException(str(exc)) from exc
    except RuntimeError as exc:
        if model_path is None:
            raise  # a failure inside PyTorch: keep the traceback
        raise click.ClickException(str(exc)) from exc  # the runtime's "cannot load this model" errors
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"predicted {summary['instances']} instances on {summary['images']} images "
               f"(score >= {summary['score_thr']})")
    click.echo(f"  results:  {summary['results']}")
    if summary["overlays"]:
        click.echo(f"  overlays: {summary['overlays']}/<image>.png")
