"""`boxseg export`: the trained student to ONNX or TensorRT (choices, validation and dispatch from the format table)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from boxseg.cli import COMMANDS


def _format_choice(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from boxseg.export.errors import ExportError
    from boxseg.export.formats import get_format

    try:
        return get_format(value).name
    except ExportError as exc:
        raise click.BadParameter(str(exc)) from None


def _format_help() -> str:
    from boxseg.export.formats import FORMATS

    return "Output format: " + ", ".join(f"{f.name} ({f.title}, {f.suffix})" for f in FORMATS) + "."


@click.command("export", help=COMMANDS["export"])
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Training checkpoint (.pt); its student weights are exported, never the teacher's.")
@click.option("--format", "fmt", required=True, callback=_format_choice, help=_format_help())
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output file.")
@click.option("--opset", default=18, show_default=True, type=int, help="ONNX opset (18..23).")
@click.option("--dynamic/--static", default=True, show_default=True,
              help="Dynamic batch/height/width (the runtime contract), or fixed to --batch x --imgsz.")
@click.option("--batch", default=1, show_default=True, type=int,
              help="Largest batch (TensorRT profile); the batch of a --static graph.")
@click.option("--imgsz", nargs=2, type=int, default=(640, 640), show_default=True, metavar="H W",
              help="Largest input canvas (multiples of 32); the input size of a --static graph.")
@click.option("--max-dets", type=int, default=None, help="Detections per image D (default: the model config).")
@click.option("--half", is_flag=True,
              help="fp16. onnx: fp16 weights and compute with fp32 inputs/outputs, for GPU backends (ONNX Runtime "
                   "CUDA, TensorRT; runs, slowly, on CPU); tensorrt: fp16 kernels.")
@click.option("--int8", is_flag=True,
              help="int8, calibrated on --calib images. onnx: ONNX Runtime static QDQ quantization of the convs "
                   "(per-channel weights; the mask head and NMS stay float); tensorrt: entropy calibration.")
@click.option("--calib", "--calib-data", "calib_data", type=click.Path(path_type=Path), default=None,
              help="Calibration images for --int8: a COCO-format folder (annotations.json + images/) or an image "
                   "folder.")
@click.option("--calib-images", type=click.IntRange(min=1), default=None,
              help="At most this many calibration images [default: onnx 64, tensorrt 512].")
@click.option("--slim/--no-slim", default=True, show_default=True,
              help="onnx: clean up the graph with onnxslim (folding, dead nodes) before any quantization.")
@click.option("--verify", is_flag=True, help="Compare with PyTorch before writing (nothing is written on failure).")
@click.option("--verify-data", type=click.Path(path_type=Path), default=None,
              help="Images for --verify (default: held-out synthetic scenes).")
@click.option("--workspace", default=4.0, show_default=True, type=float, help="TensorRT workspace in GiB.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def cli(checkpoint: Path, fmt: str, out: Path, opset: int, dynamic: bool, batch: int, imgsz: tuple[int, int],
        max_dets: int | None, half: bool, int8: bool, calib_data: Path | None, calib_images: int | None, slim: bool,
        verify: bool, verify_data: Path | None, workspace: float, as_json: bool) -> None:
    from boxseg.export.api import export
    from boxseg.export.errors import ExportError
    from boxseg.export.options import ExportOptions

    opts = ExportOptions(opset=opset, dynamic=dynamic, batch=batch, imgsz=tuple(imgsz), max_dets=max_dets,
                         half=half, int8=int8, calib_data=calib_data, calib_images=calib_images, slim=slim,
                         verify=verify, verify_data=verify_data, workspace_gb=workspace)
    try:
        result = export(checkpoint, fmt, out, opts)
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_dict(), default=str))
        return
    size_mb = result.size_bytes / 2**20
    precision = result.details.get("precision") or ("int8" if int8 else "fp16" if half else "fp32")
    click.echo(f"Exported the student to {result.path} ({fmt} {precision}, {size_mb:.1f} MiB) in "
               f"{result.seconds:.1f} s.")
    nodes, slim_info = result.details.get("graph_nodes"), result.details.get("slim")
    if nodes:
        cleanup = (f"onnxslim {nodes['exported']} -> {nodes['slimmed']}" if nodes.get("slimmed") is not None
                   else f"no clean-up ({slim_info['skipped']})" if slim_info else "no clean-up (--no-slim)")
        click.echo(f"Graph nodes: {cleanup}; {nodes['final']} in the file.")
    quant = result.details.get("quantization")
    if quant:
        click.echo(f"{quant['precision']}: {quant['nodes_quantized']} {'/'.join(quant['op_types'][:4])}"
                   f"{'...' if len(quant['op_types']) > 4 else ''} node(s) converted, {quant['nodes_float']} kept "
                   f"float ({'; '.join(quant['kept_float_scopes'])})"
                   + (f"; calibrated on {quant['calib_images']} image(s), {quant['calib_method']}"
                      if quant["calib_images"] else "")
                   + (f"; quantized between them: {', '.join(f'{n} {t}' for t, n in quant['glue_quantized'].items())}"
                      if quant.get("glue_quantized") else "") + ".")
    problems = result.details.get("tensorrt_problems")
    if problems:
        click.echo(f"Warning: {len(problems)} node(s) TensorRT's ONNX parser would reject:", err=True)
        for line in problems[:10]:
            click.echo(f"  {line}", err=True)
    if result.verification is not None:
        v = result.verification
        click.echo(f"Verified against the fp32 PyTorch model ({v.get('precision', 'fp32')} tolerances: "
                   f"{v.get('criteria', '')}): {'passed' if v['passed'] else 'FAILED'} "
                   f"(max box err {v['box_abs_err']:.2e} px, min box IoU {v.get('min_box_iou', 1.0):.4f}, "
                   f"score err {v['score_abs_err']:.2e}, min mask IoU {v['min_mask_iou']:.4f}, "
                   f"{len(v['cases'])} cases).")
        for d in v.get("borderline", []):  # allowed, but the user should know a detection sits at the threshold
            click.echo(f"  borderline: batch {d['batch']} size {d['size']} image {d['image']}: class {d['class']} "
                       f"score {d['score']:.6f} at the {d['cut']} ({d['above_threshold']:+.2e} from the score "
                       f"threshold), only in the {'PyTorch model' if d['side'] == 'reference' else 'graph'}")
