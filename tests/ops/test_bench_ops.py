"""`boxseg bench ops --quick`: the report is written and the fused results agree with the references."""

from __future__ import annotations

import json

import pytest
import torch
from boxseg.bench import ops as bench_ops
from click.testing import CliRunner

pytestmark = pytest.mark.usefixtures("fused_cpu")


def test_quick_run_writes_report(tmp_path) -> None:
    result = CliRunner().invoke(bench_ops.cli, ["--quick", "--warmup", "0", "--threads", "1", "--json",
                                                "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    rows = {row["op"]: row for row in doc["rows"]}
    assert set(rows) == {"pairwise fwd+bwd", "color similarity", "fusion (QMF+MQS)", "batched_nms"}
    for row in rows.values():
        assert row["runs"] == 10 and row["reference_ms"] > 0 and row["fused_ms"] > 0
        assert row["fused_peak_mib"] >= 0 and row["reference_peak_mib"] > 0
    assert rows["pairwise fwd+bwd"]["max_abs_diff"] < 1e-4
    assert rows["fusion (QMF+MQS)"]["max_abs_diff"] < 1e-4
    assert rows["batched_nms"]["max_abs_diff"] == 0
    for ext in ("json", "csv", "md", "png"):
        assert (tmp_path / f"ops.{ext}").is_file()


def test_peak_memory_counts_live_tensors() -> None:
    def two_then_one() -> torch.Tensor:
        a = torch.ones(1024, 1024)  # 4 MiB
        b = a * 2  # 4 MiB more, both alive
        del a
        return b.sum()

    peak = bench_ops.peak_tensor_mib(two_then_one, torch.device("cpu"))
    assert 7.9 < peak < 8.5
