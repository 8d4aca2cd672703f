"""`boxseg data synth`: write the synthetic COCO dataset (or the fixed benchmark split)."""

from __future__ import annotations

import json

import click

from boxseg.cli import COMMANDS


@click.group("data", help=COMMANDS["data"])
def cli() -> None:
    pass


@cli.command("synth")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--split", type=click.Choice(["easy", "hard"]), default="easy", show_default=True,
              help="easy: objects stand out. hard: colours close to the background and to each other, "
                   "blur, noise and JPEG artefacts.")
@click.option("--num-images", type=click.IntRange(min=1), default=None,
              help="Images to write (default 64). With --preset bench: train images (default 600); val gets N/4 "
                   "(default 150).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--size", nargs=2, type=click.IntRange(min=32), default=(320, 320), show_default=True,
              metavar="H W", help="Image height and width.")
@click.option("--preset", type=click.Choice(["bench"]), default=None,
              help="bench: the fixed benchmark split, OUT/train (600 images) and OUT/val (150).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes (output is identical for any number).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object on stdout.")
def synth(out: str, split: str, num_images: int | None, seed: int, size: tuple[int, int], preset: str | None,
          workers: int, as_json: bool) -> None:
    """Deterministic synthetic COCO instance segmentation data (same seed, same bytes)."""
    from boxseg.data.synth import BENCH_SIZES, generate_bench, generate_dataset

    hw = (int(size[0]), int(size[1]))
    if preset == "bench":
        n_train = num_images if num_images is not None else BENCH_SIZES["train"]
        n_val = max(1, n_train // 4) if num_images is not None else BENCH_SIZES["val"]
        summary = generate_bench(out, split=split, seed=seed, size=hw, num_train=n_train, num_val=n_val,
                                 workers=workers)
        parts = list(summary["subsets"].values())
    else:
        summary = generate_dataset(out, num_images=num_images or 64, split=split, seed=seed, size=hw,
                                   workers=workers)
        parts = [summary]
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
        return
    for s in parts:
        cats = ", ".join(f"{k} {v}" for k, v in s["per_category"].items())
        click.echo(f"wrote {s['images']} {s['split']} images ({s['size'][0]}x{s['size'][1]}), {s['instances']} "
                   f"instances ({cats}) to {s['out']} in {s['seconds']:.1f} s ({s['images_per_s']:.0f} img/s)")
