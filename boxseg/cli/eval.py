"""`boxseg eval`: COCO mask and box AP of a checkpoint or of a trivial baseline; with `--labels`, the quality of
a `boxseg label` file's masks against the dataset's GT masks (boxseg.eval.labels)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from boxseg.cli import COMMANDS, Threshold


def resolve_data(data: str) -> Path:
    """A dataset folder, a benchmark root (its val/ is used) or an annotation JSON file."""
    p = Path(data)
    if p.is_dir() and not (p / "annotations.json").is_file() and (p / "val" / "annotations.json").is_file():
        return p / "val"
    return p


@click.command("eval", help=COMMANDS["eval"])
@click.option("--data", "data", required=True, type=click.Path(exists=True),
              help="Dataset folder (annotations.json + images/), a bench root (uses val/) or a COCO JSON.")
@click.option("--baseline", type=click.Choice(["box-fill", "ellipse"]), default=None,
              help="Score a trivial predictor built from the GT boxes.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Score a trained checkpoint.")
@click.option("--model", "model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Score an exported model (.onnx: fp32, fp16 or int8) run by boxseg.runtime (no torch).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Measure a `boxseg label` file (OUT/annotations.json) against --data's GT masks: mean IoU "
                   "(overall, per size), mask AP scored by w, Spearman(w, IoU), mean IoU against a w cut.")
@click.option("--cuts", default=None, metavar="T1,T2,...",
              help="w cuts of the --labels curve (default 0, 0.05, ..., 0.95).")
@click.option("--report-dir", type=click.Path(file_okay=False), default=None,
              help="Where --labels writes label_eval.json and label_eval.png (default: the labels' folder).")
@click.option("--device", default="cpu", show_default=True, help="Device for --checkpoint.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--score-thr", type=Threshold(0, 1), default=0.05, show_default=True)
@click.option("--per-category", is_flag=True, help="Also report AP per category.")
@click.option("--allow-outside-images", is_flag=True,
              help="Let image file_names be absolute or climb out of the image folder with '..'.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def cli(data: str, baseline: str | None, checkpoint: str | None, model: str | None, labels: str | None,
        cuts: str | None, report_dir: str | None, device: str, batch_size: int, score_thr: float, per_category: bool,
        allow_outside_images: bool, as_json: bool) -> None:
    if sum(x is not None for x in (baseline, checkpoint, model, labels)) != 1:
        raise click.UsageError("give exactly one of --baseline, --checkpoint, --model or --labels")
    if labels is not None:
        _eval_labels(data, labels, cuts, report_dir, as_json)
        return
    from boxseg.data.coco import CocoDataset, format_report
    from boxseg.data.errors import DataError
    from boxseg.eval.coco_eval import IOU_TYPES, evaluate, format_table, load_gt, scored_instances

    path = resolve_data(data)
    try:
        # The one reader validates the JSON (segmentations included) with clear errors before pycocotools.
        ds = CocoDataset(path, with_masks=True, allow_outside_images=allow_outside_images)
        gt = load_gt(ds.ann_file)
        if baseline is not None:
            # Baseline masks are drawn on the JSON's width x height canvas: a wrong size must not pass silently.
            ds.check_image_sizes()
    except DataError as e:
        raise click.ClickException(str(e)) from e
    if baseline is not None:
        from boxseg.eval.baselines import baseline_results

        predictor = f"baseline:{baseline}"
        metrics = evaluate(gt, baseline_results(gt, baseline), IOU_TYPES, per_category=per_category)
    elif model is not None:
        from boxseg.eval.exported_model import evaluate_exported

        try:
            metrics, meta = evaluate_exported(model, ds, batch_size=batch_size, score_thr=score_thr,
                                              device=device, per_category=per_category)
        except (ValueError, OSError, RuntimeError) as e:  # not an exported model, or one for other classes
            raise click.ClickException(str(e)) from e
        predictor = f"model:{model} ({meta.get('boxseg.precision', 'fp32')})"
    else:
        from boxseg.eval.predict import evaluate_checkpoint

        predictor = f"checkpoint:{checkpoint}"
        try:
            metrics = evaluate_checkpoint(checkpoint, str(path), device=device, batch_size=batch_size,
                                          score_thr=score_thr, allow_outside_images=allow_outside_images)
        except (ValueError, OSError) as e:  # CheckpointError / ConfigError / DataError: a file of the wrong kind
            raise click.ClickException(str(e)) from e
    instances = scored_instances(gt)
    result = {"data": str(path), "predictor": predictor, "segm": metrics["segm"], "bbox": metrics["bbox"],
              "instances": instances, "report": dict(ds.report)}
    if per_category:
        result["per_category"] = {t: metrics[t].pop("per_category", None) for t in IOU_TYPES}
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    # The count is what COCOeval scores (every non-crowd annotation), not the boxes training would use.
    click.echo(f"data: {path} ({len(ds)} images, {instances} instances scored)   predictor: {predictor}")
    click.echo(f"dataset: {format_report(ds.report)}")
    click.echo(format_table({"segm": result["segm"], "bbox": result["bbox"]}))
    if per_category:
        for t in IOU_TYPES:
            cells = "  ".join(f"{k} {'-' if v is None else format(v, '.1f')}"
                              for k, v in (result["per_category"][t] or {}).items())
            click.echo(f"{t} AP per category: {cells}")


def _eval_labels(data: str, labels: str, cuts: str | None, report_dir: str | None, as_json: bool) -> None:
    from boxseg.data.errors import DataError
    from boxseg.eval.labels import DEFAULT_CUTS, evaluate_labels, format_label_report, write_label_report

    values = DEFAULT_CUTS
    if cuts is not None:
        try:
            values = tuple(float(v) for v in cuts.split(",") if v.strip())
        except ValueError:
            values = ()
        if not values or not all(0.0 <= v <= 1.0 for v in values):
            raise click.UsageError(f"--cuts {cuts!r}: expected comma-separated numbers in [0, 1], e.g. 0.5,0.7,0.9")
    try:
        result = evaluate_labels(resolve_data(data), labels, values)
    except DataError as e:
        raise click.ClickException(str(e)) from e
    result["report"] = write_label_report(result, report_dir or Path(labels).parent)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    click.echo(format_label_report(result))
    click.echo(f"report: {result['report']['json']} and {result['report']['png']}")
