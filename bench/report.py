"""The one report writer every benchmark uses: JSON, CSV, Markdown and a PNG chart from a list of flat rows.

``write_report("latency", rows, "runs/bench/latency")`` writes ``latency.json``
(``{"name", "meta", "machine", "rows"}`` plus ``"summary"`` when given), ``latency.csv``, ``latency.md`` and
``latency.png``, and returns the Markdown table.

Columns keep the order in which they first appear in ``rows`` (or the ``columns`` given), so reruns diff cleanly.
Numbers in Markdown: integers as is; floats with 3 significant digits below 1, 2 decimals below 100, 1 decimal
below 10 000 and none above (override with ``floatfmt``, e.g. ``".2f"``). JSON and CSV keep full precision; NaN and
infinities become null / empty.

Plot spec (``plot``): a dict, or a list of dicts for side-by-side panels, with keys
``kind`` ("bar", "stacked" or "line"), ``x`` (a column or list of columns joined, one per line, into the category label),
``y`` (a column or list of columns), ``group`` (a column, or list, whose values become separate series),
``title``, ``xlabel``, ``ylabel``, ``logy`` (bool). ``None`` picks a bar chart of the first float column against
the text columns.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from boxseg.tempfiles import write_atomic

Row = Mapping[str, Any]
PlotSpec = Mapping[str, Any]

PLOT_KINDS = ("bar", "stacked", "line")
# Text fields that describe a row's outcome rather than identify it; never used as a default chart axis.
INFO_COLUMNS = frozenset({"status", "reason", "note", "notes", "error", "message", "detail"})


# ---------------------------------------------------------------- values


def to_jsonable(value: Any) -> Any:
    """Plain JSON value: numpy scalars/arrays to Python, NaN/inf to None, paths to str."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array, torch tensor
        return to_jsonable(value.tolist())
    return str(value)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_value(value: Any, floatfmt: str | None = None) -> str:
    """One Markdown cell: see the module docstring for the number format."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        if floatfmt is not None:
            return format(value, floatfmt)
        mag = abs(value)
        if mag == 0.0:
            return "0"
        if mag < 1.0:
            return f"{value:.3g}"
        if mag < 100.0:
            return f"{value:.2f}"
        if mag < 10_000.0:
            return f"{value:.1f}"
        return f"{value:.0f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------- tables


def columns_of(rows: Iterable[Row]) -> list[str]:
    """Union of the rows' keys, in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(str(key), None)
    return list(seen)


def check_rows(rows: Sequence[Row], where: str = "rows") -> None:
    """Rows must be flat dicts of scalars; the error names the row and field."""
    if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
        raise TypeError(f"{where}: expected a list of dicts, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"{where}[{i}]: expected a dict, got {type(row).__name__}")
        for key, value in row.items():
            if isinstance(value, (Mapping, list, tuple, set)):
                raise TypeError(
                    f"{where}[{i}][{key!r}]: expected a scalar (str, number, bool or None), "
                    f"got {type(value).__name__}; flatten it into separate columns"
                )


def markdown_table(
    rows: Sequence[Row],
    columns: Sequence[str] | None = None,
    floatfmt: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """A GitHub Markdown table; numeric columns are right-aligned. ``headers`` renames columns for display."""
    cols = list(columns) if columns is not None else columns_of(rows)
    if not cols:
        return ""
    names = [format_value((headers or {}).get(c, c)) for c in cols]
    numeric = [any(is_number(r.get(c)) for r in rows) for c in cols]
    lines = [
        "| " + " | ".join(names) + " |",
        "|" + "|".join("---:" if num else "---" for num in numeric) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(c), floatfmt) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    cols = list(columns) if columns is not None else columns_of(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        clean = {c: to_jsonable(row.get(c)) for c in cols}
        writer.writerow({c: "" if v is None else v for c, v in clean.items()})
    return buf.getvalue()


# ---------------------------------------------------------------- plots


def _label(row: Row, x: str | Sequence[str], sep: str = "\n") -> str:
    """Category label; numbers are named ("size=640") when several columns are joined."""
    cols = [x] if isinstance(x, str) else list(x)
    if len(cols) == 1:
        return format_value(row.get(cols[0]))
    return sep.join(f"{c}={row.get(c)}" if is_number(row.get(c)) else format_value(row.get(c)) for c in cols)


def default_plot(rows: Sequence[Row]) -> dict[str, Any]:
    cols = columns_of(rows)
    floats = [c for c in cols if any(isinstance(r.get(c), float) for r in rows)]
    text = [
        c
        for c in cols
        if c not in INFO_COLUMNS and all(not is_number(r.get(c)) for r in rows if r.get(c) is not None)
    ]
    ints = [c for c in cols if c not in floats and any(is_number(r.get(c)) for r in rows)]
    y = floats[0] if floats else (ints[0] if ints else None)
    x = text or [c for c in ints if c != y][:2]
    return {"kind": "bar", "x": x, "y": y}


def _series(rows: Sequence[Row], spec: PlotSpec) -> tuple[list[str], dict[str, list[float | None]]]:
    """Category labels and, per series name, one value (or None) per category; empty ones dropped."""
    x = spec.get("x") or []
    ys = [spec["y"]] if isinstance(spec.get("y"), str) else list(spec.get("y") or [])
    group = spec.get("group")
    labels = list(dict.fromkeys(_label(row, x) for row in rows))
    series: dict[str, list[float | None]] = {}
    for row in rows:
        for y in ys:
            glabel = _label(row, group, " ") if group else ""
            name = y if not group else (glabel if len(ys) == 1 else f"{glabel} {y}")
            values = series.setdefault(name, [None] * len(labels))
            v = row.get(y)
            if is_number(v) and math.isfinite(v):
                values[labels.index(_label(row, x))] = float(v)
    keep = [i for i in range(len(labels)) if any(vals[i] is not None for vals in series.values())]
    series = {name: vals for name, vals in series.items() if any(v is not None for v in vals)}
    return [labels[i] for i in keep], {name: [vals[i] for i in keep] for name, vals in series.items()}


def _draw(ax: Any, rows: Sequence[Row], spec: PlotSpec) -> None:
    kind = spec.get("kind", "bar")
    if kind not in PLOT_KINDS:
        raise ValueError(f"plot spec: kind must be one of {PLOT_KINDS}, got {kind!r}")
    labels, series = _series(rows, spec)
    has_data = any(v is not None for vals in series.values() for v in vals)
    if not has_data:
        ax.text(0.5, 0.5, "no data to plot", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    pos = list(range(len(labels)))
    if kind == "line":
        for name, vals in series.items():
            pts = [(p, v) for p, v in zip(pos, vals) if v is not None]
            ax.plot([p for p, _ in pts], [v for _, v in pts], marker="o", label=name)
    elif kind == "stacked":
        bottom = [0.0] * len(labels)
        for name, vals in series.items():
            heights = [v or 0.0 for v in vals]
            ax.bar(pos, heights, 0.7, bottom=bottom, label=name)
            bottom = [b + h for b, h in zip(bottom, heights)]
    else:
        width = 0.8 / max(1, len(series))
        for k, (name, vals) in enumerate(series.items()):
            offs = [p - 0.4 + width * (k + 0.5) for p in pos]
            pts = [(o, v) for o, v in zip(offs, vals) if v is not None]
            ax.bar([o for o, _ in pts], [v for _, v in pts], width, label=name)
    ax.set_xticks(pos)
    crowded = len(labels) > 6
    ax.set_xticklabels(labels, rotation=45 if crowded else 0, ha="right" if crowded else "center",
                       fontsize="small" if len(labels) > 3 else None)
    ys = spec.get("y")
    ax.set_ylabel(spec.get("ylabel") or (ys if isinstance(ys, str) else ""))
    if spec.get("xlabel"):
        ax.set_xlabel(spec["xlabel"])
    if spec.get("title"):
        ax.set_title(spec["title"])
    if spec.get("logy"):
        ax.set_yscale("log")
    if len(series) > 1 or spec.get("group"):
        ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)


def plot_rows(rows: Sequence[Row], path: str | Path, plot: PlotSpec | Sequence[PlotSpec] | None = None) -> Path:
    """Draw ``rows`` per the spec (see module docstring) into a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    specs: list[PlotSpec]
    if plot is None:
        specs = [default_plot(rows)]
    elif isinstance(plot, Mapping):
        specs = [plot]
    else:
        specs = list(plot)
    if not specs:
        raise ValueError("plot spec: empty list of panels")
    fig, axes = plt.subplots(1, len(specs), figsize=(max(6.0, 5.5 * len(specs)), 4.5), squeeze=False)
    try:
        for ax, spec in zip(axes[0], specs):
            _draw(ax, rows, spec)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


# ---------------------------------------------------------------- the writer


def write_report(
    name: str,
    rows: Sequence[Row],
    out_dir: str | Path,
    meta: Mapping[str, Any] | None = None,
    plot: PlotSpec | Sequence[PlotSpec] | None = None,
    *,
    summary: Mapping[str, Any] | None = None,
    machine: Mapping[str, Any] | None = None,
    columns: Sequence[str] | None = None,
    headers: Mapping[str, str] | None = None,
    floatfmt: str | None = None,
) -> str:
    """Write ``name.json``, ``name.csv``, ``name.md`` and ``name.png`` into ``out_dir``; return the Markdown table.

    ``meta`` holds the run's settings (put ``"keys"``: the columns that identify a row, for ``bench compare``);
    ``machine`` defaults to :func:`boxseg.bench.machine.machine_info`; ``summary`` (derived figures) is added to
    the JSON only. ``columns``/``headers`` choose and rename the Markdown columns; JSON and CSV keep every column.
    """
    if not name or any(sep in name for sep in ("/", "\\")) or name in (".", ".."):
        raise ValueError(f"write_report: name must be a plain file stem, got {name!r}")
    check_rows(rows, f"write_report({name!r}) rows")
    if machine is None:
        from boxseg.bench.machine import machine_info

        machine = machine_info()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_cols = columns_of(rows)
    doc: dict[str, Any] = {
        "name": name,
        "meta": to_jsonable(dict(meta or {})),
        "machine": to_jsonable(dict(machine)),
        "rows": [{c: to_jsonable(r.get(c)) for c in all_cols if c in r} for r in rows],
    }
    if summary is not None:
        doc["summary"] = to_jsonable(dict(summary))
    write_atomic(out / f"{name}.json", json.dumps(doc, indent=2, allow_nan=False) + "\n")
    write_atomic(out / f"{name}.csv", csv_text(rows, all_cols))
    table = markdown_table(rows, columns, floatfmt, headers)
    write_atomic(out / f"{name}.md", f"# {name}\n\n{table}")
    plot_rows(rows, out / f"{name}.png", plot)
    return table
