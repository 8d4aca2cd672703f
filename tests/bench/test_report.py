"""The shared report writer: JSON/CSV/Markdown/PNG contents read back."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from boxseg.bench.report import columns_of, format_value, markdown_table, plot_rows, write_report
from PIL import Image

ROWS = [
    {"backend": "ort", "size": 640, "batch": 1, "p50_ms": 12.3456, "img_s": 81.0, "status": "ok"},
    {"backend": "runtime", "size": 640, "batch": 1, "p50_ms": 0.01234, "img_s": 8104.7, "status": "ok"},
    # a new column appears late and a value is missing: column order must stay first-seen
    {"backend": "torch", "size": 640, "batch": 1, "p50_ms": None, "status": "skipped: no | model", "extra": 1},
]


def test_write_report_files_round_trip(tmp_path: Path) -> None:
    meta = {"iters": 5, "keys": ["backend", "size", "batch"], "when": np.float32(1.5)}
    table = write_report("demo", ROWS, tmp_path, meta=meta, summary={"ratio": np.float64(1.25), "bad": math.nan},
                         machine={"cpu": "test-cpu"})
    doc = json.loads((tmp_path / "demo.json").read_text())
    assert set(doc) == {"name", "meta", "machine", "rows", "summary"}
    assert doc["name"] == "demo"
    assert doc["meta"] == {"iters": 5, "keys": ["backend", "size", "batch"], "when": 1.5}
    assert doc["machine"] == {"cpu": "test-cpu"}
    assert doc["summary"] == {"ratio": 1.25, "bad": None}  # NaN is not JSON: written as null
    assert doc["rows"][0] == ROWS[0]
    assert doc["rows"][2]["p50_ms"] is None and doc["rows"][2]["extra"] == 1

    with open(tmp_path / "demo.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["backend", "size", "batch", "p50_ms", "img_s", "status", "extra"]
        parsed = list(reader)
    assert len(parsed) == 3
    assert float(parsed[0]["p50_ms"]) == pytest.approx(12.3456)  # full precision in CSV
    assert parsed[2]["p50_ms"] == "" and parsed[2]["img_s"] == "" and parsed[2]["extra"] == "1"

    md = (tmp_path / "demo.md").read_text()
    assert table in md
    lines = table.strip().splitlines()
    assert lines[0] == "| backend | size | batch | p50_ms | img_s | status | extra |"
    assert lines[1] == "|---|---:|---:|---:|---:|---|---:|"
    assert len(lines) == 2 + len(ROWS)
    assert lines[2] == "| ort | 640 | 1 | 12.35 | 81.00 | ok | - |"
    assert "| 0.0123 |" in lines[3] and "| 8104.7 |" in lines[3]
    assert "skipped: no \\| model" in lines[4]  # a pipe inside a cell is escaped

    with Image.open(tmp_path / "demo.png") as img:
        assert img.format == "PNG" and img.size[0] > 0 and img.size[1] > 0
        assert np.asarray(img.convert("L")).std() > 0  # something was drawn


def test_default_and_explicit_plots(tmp_path: Path) -> None:
    rows = [{"b": b, "size": s, "ms": float(s) / (i + 1)} for i, b in enumerate(["x", "y"]) for s in (320, 640)]
    for spec in (None, {"kind": "line", "x": "size", "y": "ms", "group": "b"},
                 {"kind": "stacked", "x": ["b", "size"], "y": ["ms"]},
                 [{"kind": "bar", "x": "size", "y": "ms", "group": "b"}, {"kind": "bar", "x": "b", "y": "ms"}]):
        path = plot_rows(rows, tmp_path / "p.png", spec)
        with Image.open(path) as img:
            assert img.size[0] > 100
    with pytest.raises(ValueError, match="kind must be one of"):
        plot_rows(rows, tmp_path / "bad.png", {"kind": "pie", "x": "b", "y": "ms"})
    # no numeric data at all still gives a (placeholder) PNG
    with Image.open(plot_rows([{"a": "x"}], tmp_path / "empty.png")) as img:
        assert img.size[0] > 0


def test_markdown_columns_headers_and_floatfmt() -> None:
    table = markdown_table(ROWS, columns=["backend", "p50_ms"], floatfmt=".1f", headers={"p50_ms": "p50 ms"})
    assert table.splitlines() == ["| backend | p50 ms |", "|---|---:|", "| ort | 12.3 |", "| runtime | 0.0 |",
                                  "| torch | - |"]
    assert columns_of(ROWS) == ["backend", "size", "batch", "p50_ms", "img_s", "status", "extra"]
    assert [format_value(v) for v in (0.0, 1234567.0, True, None, 3)] == ["0", "1234567", "yes", "-", "3"]


def test_rejects_nested_rows_and_bad_names(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"rows\[1\]\['stages'\].*flatten"):
        write_report("x", [{"a": 1}, {"stages": {"pre": 1.0}}], tmp_path, machine={})
    with pytest.raises(ValueError, match="plain file stem"):
        write_report("../x", [{"a": 1}], tmp_path, machine={})
