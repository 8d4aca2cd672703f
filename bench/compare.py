"""`boxseg bench compare A.json B.json`: ratios B/A between two bench reports, regressions flagged.

Rows are matched by their key columns: the report's ``meta["keys"]`` when it has them, else ``--keys``, else the
text columns (except status-like ones: status, reason, note, error, message, detail) plus integer columns named
like a setting (size, imgsz, batch, threads, seed, workers, height, width, instances, max_dets).

Every other numeric column present in both rows is a metric; its ratio is B/A. Whether up is good is read from the
metric's name (tokens split on anything not a letter or digit, case-insensitive):
- higher is better: throughput names (``img_s``, ``img/s``, ``images_per_s``, ``it_s``, ``iters_per_s``, ``fps``,
  ``ips``, ``throughput``, ``speedup``) and quality names (``AP``, ``AP50``, ``APs``..., ``AR*``, ``accuracy``,
  ``acc``, ``iou``, ``miou``, ``recall``, ``precision``, ``f1``);
- lower is better: a time or memory unit as the last token (``ms``, ``us``, ``ns``, ``s``, ``sec``, ``mb``,
  ``mib``, ``gb``, ``gib``, ``kb``, ``bytes``) or a token among ``latency``, ``time``, ``loss``, ``error``,
  ``memory``, ``mem``, ``peak``, ``overhead``, ``share``;
- no direction (ratio shown, never flagged): spread and counts (``std``, ``mad``, ``var``, ``outliers``, ``n``,
  ``count``, ``dets``, ``iters``, ``warmup``) and any name not matched above.
A lower-is-better metric regresses when B/A > 1 + threshold; a higher-is-better one when B/A < 1 - threshold.
The mirror images are flagged "improved".
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import click
from boxseg.bench.report import INFO_COLUMNS, is_number, markdown_table

Direction = Literal["lower", "higher"]

SETTING_COLUMNS = frozenset(
    {"size", "imgsz", "batch", "threads", "seed", "workers", "height", "width", "instances", "max_dets"}
)
_NO_DIRECTION = frozenset({"std", "mad", "var", "outliers", "n", "count", "dets", "iters", "warmup"})
_RATE_PREFIX = frozenset({"img", "imgs", "images", "image", "it", "iter", "iters", "samples", "per", "tokens"})
_HIGHER = frozenset(
    {"fps", "ips", "throughput", "speedup", "accuracy", "acc", "iou", "miou", "recall", "precision", "f1"}
)
_LOWER_UNITS = frozenset({"ms", "us", "ns", "s", "sec", "mb", "mib", "gb", "gib", "kb", "bytes"})
_LOWER_WORDS = frozenset({"latency", "time", "loss", "error", "memory", "mem", "peak", "overhead", "share"})
_AP = re.compile(r"^(ap|ar)(s|m|l|\d+)?$")


def metric_direction(name: str) -> Direction | None:
    """'lower' or 'higher' is better, or None when the name says nothing (see module docstring)."""
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]
    if not tokens or any(t in _NO_DIRECTION for t in tokens):
        return None
    for prev, tok in itertools.pairwise(tokens):
        if tok in ("s", "sec") and prev in _RATE_PREFIX:
            return "higher"
    if any(t in _HIGHER or _AP.match(t) for t in tokens):
        return "higher"
    if tokens[-1] in _LOWER_UNITS or any(t in _LOWER_WORDS for t in tokens):
        return "lower"
    return None


def infer_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Columns that identify a row when the report does not say (see module docstring)."""
    keys: list[str] = []
    for col in dict.fromkeys(k for r in rows for k in r):
        values = [r[col] for r in rows if r.get(col) is not None]
        if col in INFO_COLUMNS:
            continue
        text = all(not is_number(v) for v in values)
        setting = col in SETTING_COLUMNS and all(isinstance(v, int) for v in values)
        if text or setting:
            keys.append(col)
    return keys


def _load(path: str | Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise click.ClickException(f"{path}: expected a bench report object with a list field 'rows'")
    for i, row in enumerate(doc["rows"]):
        if not isinstance(row, dict):
            raise click.ClickException(f"{path}: rows[{i}] is not an object")
    return doc


def _index(rows: list[dict[str, Any]], keys: list[str], where: str) -> dict[tuple, dict[str, Any]]:
    out: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = tuple(json.dumps(row.get(k)) for k in keys)
        if key in out:
            shown = ", ".join(f"{k}={row.get(k)!r}" for k in keys)
            raise click.ClickException(
                f"{where}: two rows share the key ({shown}); pass --keys with the columns that tell them apart"
            )
        out[key] = row
    return out


def compare_reports(
    a: Mapping[str, Any], b: Mapping[str, Any], threshold: float = 0.10, keys: Sequence[str] | None = None,
    names: tuple[str, str] = ("A", "B"),
) -> dict[str, Any]:
    """Match rows, compute B/A per metric, flag regressions. Returns the object `--json` prints."""
    if not 0.0 <= threshold < 1.0:
        raise click.BadParameter(f"threshold must be in [0, 1), got {threshold}", param_hint="--threshold")
    if keys is None:
        meta_keys = (a.get("meta") or {}).get("keys") or (b.get("meta") or {}).get("keys")
        keys = list(meta_keys) if meta_keys else infer_keys(list(a["rows"]) + list(b["rows"]))
    keys = list(keys)
    ia = _index(list(a["rows"]), keys, names[0])
    ib = _index(list(b["rows"]), keys, names[1])
    out_rows: list[dict[str, Any]] = []
    for key, ra in ia.items():
        rb = ib.get(key)
        if rb is None:
            continue
        for col, va in ra.items():
            vb = rb.get(col)
            if col in keys or not is_number(va) or not is_number(vb):
                continue
            ratio = vb / va if va != 0 and math.isfinite(va) and math.isfinite(vb) else None
            direction = metric_direction(col)
            flag = ""
            if ratio is not None and direction == "lower":
                flag = "regression" if ratio > 1 + threshold else ("improved" if ratio < 1 - threshold else "")
            elif ratio is not None and direction == "higher":
                flag = "regression" if ratio < 1 - threshold else ("improved" if ratio > 1 + threshold else "")
            out_rows.append(
                {**{k: ra.get(k) for k in keys}, "metric": col, "a": va, "b": vb, "ratio": ratio,
                 "better": direction or "", "flag": flag}
            )

    def only(x: dict[tuple, dict[str, Any]], y: dict[tuple, dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: x[key].get(k) for k in keys} for key in x if key not in y]

    return {
        "a": names[0],
        "b": names[1],
        "threshold": threshold,
        "keys": keys,
        "rows": out_rows,
        "regressions": sum(r["flag"] == "regression" for r in out_rows),
        "improvements": sum(r["flag"] == "improved" for r in out_rows),
        "only_in_a": only(ia, ib),
        "only_in_b": only(ib, ia),
    }


@click.command("compare", help="Ratios B/A between two bench JSON reports; regressions flagged.")
@click.argument("a_json", type=click.Path(dir_okay=False))
@click.argument("b_json", type=click.Path(dir_okay=False))
@click.option("--threshold", default=0.10, show_default=True, type=float,
              help="Relative change that counts as a regression or improvement.")
@click.option("--keys", default=None, help="Comma-separated columns that identify a row (default: from the report).")
@click.option("--all", "show_all", is_flag=True, help="Show unchanged metrics too, not only flagged ones.")
@click.option("--fail-on-regression", is_flag=True, help="Exit with status 1 when any regression is flagged.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
def cli(a_json: str, b_json: str, threshold: float, keys: str | None, show_all: bool,
        fail_on_regression: bool, as_json: bool) -> None:
    key_list = [k.strip() for k in keys.split(",") if k.strip()] if keys else None
    result = compare_reports(_load(a_json), _load(b_json), threshold, key_list, names=(a_json, b_json))
    if as_json:
        click.echo(json.dumps(result, allow_nan=False))
    else:
        shown = result["rows"] if show_all else [r for r in result["rows"] if r["flag"]]
        if shown:
            click.echo(markdown_table(shown))
        click.echo(
            f"{len(result['rows'])} metrics compared on keys {result['keys']}: {result['regressions']} regressions, "
            f"{result['improvements']} improvements (threshold {threshold:.0%}); "
            f"{len(result['only_in_a'])} rows only in A, {len(result['only_in_b'])} only in B."
        )
    if fail_on_regression and result["regressions"]:
        sys.exit(1)
