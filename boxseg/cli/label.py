"""`boxseg label`: masks and quality scores for the boxes of a COCO dataset, a review page, `--apply-review`."""

from __future__ import annotations

import json

import click

from boxseg.cli import COMMANDS, Threshold

EPILOG = """\b
Label a box-only dataset with a BoxSeg checkpoint (its EMA teacher when it has one), review, train on it:
  boxseg label --checkpoint RUN/checkpoints/last.pt --data DIR --out LABELS --review
  boxseg label --out LABELS --apply-review rejected.json
  boxseg train --preset condinst --data LABELS --out RUN2
Measure labels where GT masks exist:  boxseg eval --data DIR --labels LABELS/annotations.json
--labeller ellipse|box needs no checkpoint (the ellipse in, or the fill of, each box).
An interrupted run keeps its finished images in LABELS/.boxseg-label/; --resume continues it."""


@click.command("label", help=COMMANDS["label"], epilog=EPILOG)
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="A training checkpoint (RUN/checkpoints/last.pt); needed by the qam and bpma labellers.")
@click.option("--data", type=click.Path(), default=None,
              help="Dataset folder (annotations.json + images/) or a COCO JSON; its masks, if any, are ignored.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: annotations.json, images/ (a link, or a copy with --copy-images), review/.")
@click.option("--labeller", type=click.Choice(["qam", "bpma", "ellipse", "box"]), default="qam",
              show_default=True, help="QAM (BoxSeg), BPMA (BoxTeacher), or a checkpoint-free shape in each box.")
@click.option("--min-quality", type=Threshold(0, 1), default=0.0, show_default=True,
              help="Labels with w below this are marked invalid (no mask, or the fallback shape).")
@click.option("--tta", type=click.Choice(["none", "flip", "flip+scales"]), default="none", show_default=True,
              help="Average each GT's fused mask and w over the flipped (and 0.75x/1.25x) teacher views.")
@click.option("--fallback", type=click.Choice(["none", "ellipse", "box"]), default="none", show_default=True,
              help="Mask given to an invalid label (it stays boxseg_valid: false, so training ignores it).")
@click.option("--overlap", type=click.Choice(["none", "smaller-wins"]), default=None,
              help="smaller-wins: a pixel claimed by two masks of an image stays with the smaller box "
                   "(default: the checkpoint's qam.overlap_resolution).")
@click.option("--box-agreement", default=None, metavar="off|gate:T|multiply",
              help="IoU of the mask's tight box with its GT box: gate:T drops masks below T, multiply scales w "
                   "(default: the checkpoint's qam.box_agreement).")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out (same inputs and options).")
@click.option("--overwrite", is_flag=True, help="Replace the labels (or an unfinished run) in --out.")
@click.option("--copy-images", is_flag=True, help="Copy the images into OUT/images instead of linking the folder.")
@click.option("--save-every", type=click.IntRange(min=1), default=50, show_default=True,
              help="Save partial results every N images (what an interruption can lose).")
@click.option("--review", is_flag=True, help="Write OUT/review/index.html (a static page, no server).")
@click.option("--review-limit", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Images on the review page, lowest w first (0: all).")
@click.option("--apply-review", "apply_review_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Mark the annotation ids of a review download (rejected.json) invalid in OUT/annotations.json.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object on stdout.")
def cli(checkpoint: str | None, data: str | None, out_dir: str, labeller: str, min_quality: float, tta: str,
        fallback: str, overlap: str | None, box_agreement: str | None, device: str, resume: bool, overwrite: bool,
        copy_images: bool, save_every: int, review: bool, review_limit: int, apply_review_file: str | None,
        no_progress: bool, as_json: bool) -> None:
    from boxseg.data.errors import DataError

    summary: dict = {}
    labelling = data is not None or checkpoint is not None
    if not labelling and not review and apply_review_file is None:
        raise click.UsageError("give --data (and --checkpoint for qam/bpma) to label, or --review / "
                               "--apply-review FILE to work on the labels already in --out")
    if labelling and data is None:
        raise click.UsageError("--data is required to label (the COCO dataset whose boxes get masks)")
    if labelling and labeller in ("qam", "bpma") and checkpoint is None:
        raise click.UsageError(f"--labeller {labeller} needs --checkpoint (ellipse and box do not)")
    if labelling and apply_review_file is not None:
        raise click.UsageError("--apply-review works on finished labels: run it after labelling, without --data")
    try:
        if labelling:
            from boxseg.train.config import ConfigError
            from boxseg.train.label import LabelOptions, label_dataset

            options = LabelOptions(labeller=labeller, tta=tta, fallback=fallback, min_quality=min_quality,
                                   overlap=overlap, box_agreement=box_agreement, device=device)
            try:
                options.validate()
            except ValueError as e:
                raise click.UsageError(str(e)) from e
            try:
                summary = label_dataset(data, out_dir, checkpoint if labeller in ("qam", "bpma") else None, options,
                                        resume=resume, overwrite=overwrite, copy_images=copy_images,
                                        save_every=save_every, progress=not no_progress)
            except ConfigError as e:
                raise click.ClickException(str(e)) from e
        if apply_review_file is not None:
            from boxseg.label.review import apply_review

            summary["review_applied"] = apply_review(out_dir, apply_review_file)
        if review:
            from boxseg.label.review import write_review

            summary["review"] = str(write_review(out_dir, limit=review_limit))
    except (DataError, ValueError, OSError) as e:  # LabelError, CheckpointError: inputs of the wrong kind
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(summary))
        return
    _print(summary)


def _print(s: dict) -> None:
    if "annotations" in s:
        src = ", ".join(f"{k} {v}" for k, v in sorted(s["sources"].items()))
        q = s.get("quality_mean")
        who = f" with the checkpoint's {s['model']}" if s.get("model") else ""
        click.echo(f"labelled {s['annotations']} boxes in {s['images']} images{who} ({s['labeller']}, "
                   f"tta {s['tta']}): {s['valid']} valid ({s['valid_fraction']:.1%}); sources: {src}; "
                   f"mean w {'-' if q is None else format(q, '.3f')}")
        if s.get("already_complete"):
            click.echo("  (already complete: nothing to do)")
        elif s.get("resumed_images"):
            click.echo(f"  resumed: {s['resumed_images']} images were done before")
        click.echo(f"  labels: {s['annotations_file']}")
    if "review_applied" in s:
        r = s["review_applied"]
        click.echo(f"review applied: {r['rejected']} annotations rejected ({r['newly_rejected']} newly); "
                   f"{r['valid']} valid labels remain in {r['annotations_file']}")
    if "review" in s:
        click.echo(f"  review page: {s['review']}")
